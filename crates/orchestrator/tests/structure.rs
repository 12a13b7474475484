//! The shape of the code, checked so that it stays readable (issue 23): read from the sources, no
//! build of anything else.
//!
//! - `no_file_is_over_500_lines`: each file of `crates/orchestrator/src`.
//! - `no_function_is_over_60_lines`: each function outside the test modules, from its first line
//!   (doc comments not counted) to its closing brace.
//! - `no_modules_import_each_other`: no circle of `crate::` paths between the top-level modules
//!   of `orchestrator` and of `prepare` (comments and a module's own test module not counted).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

const MAX_FILE_LINES: usize = 500;
const MAX_FUNCTION_LINES: usize = 60;

/// Every `.rs` file under `dir`, with its text.
fn sources(dir: &Path) -> Vec<(PathBuf, String)> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(sources(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            let text = std::fs::read_to_string(&path).unwrap();
            files.push((path, text));
        }
    }
    files.sort();
    files
}

fn crate_src(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(name)
        .join("src")
}

/// `text` without its test module (`#[cfg(test)] mod tests`, at the end of a file).
fn without_tests(text: &str) -> &str {
    text.find("#[cfg(test)]\nmod tests")
        .map_or(text, |i| &text[..i])
}

/// The functions of `text` longer than `max` lines: (first line, length, signature). A function
/// starts at a line `fn` begins (after its visibility and qualifiers) and ends at the first line
/// holding only a `}` at the same indentation.
fn long_functions(text: &str, max: usize) -> Vec<(usize, usize, String)> {
    let lines: Vec<&str> = without_tests(text).lines().collect();
    let mut long = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        let code = line.trim_start();
        let indent = &line[..line.len() - code.len()];
        let words: Vec<&str> = code.split_whitespace().collect();
        let qualifiers = ["pub", "async", "const", "unsafe", "extern"];
        let at_fn = words.iter().position(|w| *w == "fn").is_some_and(|k| {
            words[..k]
                .iter()
                .all(|w| qualifiers.contains(w) || w.starts_with("pub("))
        });
        // Where its signature ends: a body opens (`{`), a declaration ends (`;`), or a body of
        // one line closes (`}`).
        let declaration = (i..lines.len()).find(|&k| {
            let l = lines[k].trim_end();
            l.ends_with('{') || l.ends_with(';') || l.ends_with('}')
        });
        match declaration {
            Some(k) if at_fn && lines[k].trim_end().ends_with('{') => {
                let end = (k + 1..lines.len())
                    .find(|&e| lines[e] == format!("{indent}}}"))
                    .unwrap_or(lines.len() - 1);
                let length = end - i + 1;
                if length > max {
                    long.push((i + 1, length, code.to_string()));
                }
                i = end + 1;
            }
            _ => i += 1,
        }
    }
    long
}

#[test]
fn no_file_is_over_500_lines() {
    let long: Vec<String> = sources(&crate_src("orchestrator"))
        .into_iter()
        .filter(|(_, text)| text.lines().count() > MAX_FILE_LINES)
        .map(|(path, text)| format!("{} ({} lines)", path.display(), text.lines().count()))
        .collect();
    assert!(
        long.is_empty(),
        "files over {MAX_FILE_LINES} lines; split them by concern:\n{}",
        long.join("\n")
    );
}

#[test]
fn no_function_is_over_60_lines() {
    let mut long = Vec::new();
    for (path, text) in sources(&crate_src("orchestrator")) {
        for (line, length, signature) in long_functions(&text, MAX_FUNCTION_LINES) {
            long.push(format!(
                "{}:{line}: {length} lines: {signature}",
                path.display()
            ));
        }
    }
    assert!(
        long.is_empty(),
        "functions over {MAX_FUNCTION_LINES} lines outside tests; give their parts names:\n{}",
        long.join("\n")
    );
}

#[test]
fn the_function_finder_sees_long_functions_and_only_them() {
    let body = "    let x = 1;\n".repeat(MAX_FUNCTION_LINES);
    let text = format!(
        "/// Doc.\npub(crate) async fn long(\n    a: u8,\n) -> u8 {{\n{body}}}\n\nfn short() {{}}\n\
         impl A {{\n    fn method(&self) {{\n{body}    }}\n}}\n#[cfg(test)]\nmod tests {{\n\
         fn in_tests() {{\n{body}}}\n}}\n"
    );
    let long = long_functions(&text, MAX_FUNCTION_LINES);
    let found: Vec<(usize, usize)> = long.iter().map(|(l, n, _)| (*l, *n)).collect();
    let n = MAX_FUNCTION_LINES;
    assert_eq!(found, [(2, n + 4), (n + 9, n + 2)], "{long:?}");
}

/// The top-level modules each top-level module of the crate at `src` names through `crate::`.
fn module_imports(src: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let mut imports: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (path, text) in sources(src) {
        let relative = path.strip_prefix(src).unwrap();
        let first = relative.components().next().unwrap().as_os_str();
        let module = first.to_string_lossy().trim_end_matches(".rs").to_string();
        // Comments (doc links among them) import nothing.
        let code: String = without_tests(&text)
            .lines()
            .filter(|line| !line.trim_start().starts_with("//"))
            .collect::<Vec<_>>()
            .join("\n");
        let mut named = BTreeSet::new();
        for (i, _) in code.match_indices("crate::") {
            let rest = &code[i + "crate::".len()..];
            // `crate::{a, b::c}` names several.
            let list = match rest.strip_prefix('{') {
                Some(group) => &group[..group.find('}').unwrap_or(group.len())],
                None => &rest[..rest.find(',').unwrap_or(rest.len())],
            };
            for item in list.split(',') {
                let name: String = item
                    .trim()
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                named.insert(name);
            }
        }
        named.retain(|name| !name.is_empty() && *name != module);
        imports.entry(module).or_default().extend(named);
    }
    imports
}

/// A circle of modules that import each other, if there is one.
fn circle(imports: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        module: &str,
        imports: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(start) = path.iter().position(|m| m == module) {
            let mut circle = path[start..].to_vec();
            circle.push(module.to_string());
            return Some(circle);
        }
        if !done.insert(module.to_string()) {
            return None;
        }
        path.push(module.to_string());
        for next in imports.get(module).into_iter().flatten() {
            if let Some(circle) = visit(next, imports, path, done) {
                return Some(circle);
            }
        }
        path.pop();
        None
    }
    let mut done = BTreeSet::new();
    imports
        .keys()
        .find_map(|module| visit(module, imports, &mut Vec::new(), &mut done))
}

#[test]
fn no_modules_import_each_other() {
    for krate in ["orchestrator", "prepare"] {
        let imports = module_imports(&crate_src(krate));
        assert!(
            imports.len() > 5,
            "{krate}: the modules were not found: {imports:?}"
        );
        if let Some(circle) = circle(&imports) {
            panic!(
                "{krate}: these modules import each other: {}; move what they share into a \
                 module of its own",
                circle.join(" -> ")
            );
        }
    }
    let sample: BTreeMap<String, BTreeSet<String>> = [
        ("a", vec!["b"]),
        ("b", vec!["c"]),
        ("c", vec!["a"]),
        ("d", vec![]),
    ]
    .into_iter()
    .map(|(m, to)| (m.into(), to.into_iter().map(String::from).collect()))
    .collect();
    assert_eq!(circle(&sample).unwrap(), ["a", "b", "c", "a"]);
}
