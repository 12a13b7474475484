//! The trainer's rule tests as the loop demands them. They live in `crates/train/rules.rs`, outside
//! the agent's directory, so the guard keeps them as the run's base commit has them; `main.rs`
//! (the agent's) must still include them with [`DECLARATION`] as written, and no code of the
//! agent's may switch on `cfg(test)`, which would let a trainer behave one way under its rules and
//! another when it trains. A run of the compiled tests holds only when it succeeded and every
//! test `rules.rs` names passed: deleting the rules, or the declaration, fails `check` and a keep.

use std::path::Path;

use anyhow::{Context, Result};

use crate::git::EDITABLE;
use crate::text::tail;

/// The fixed file of rule tests, relative to the repository.
pub const RULES_FILE: &str = "crates/train/rules.rs";
/// The trainer's source that declares them.
pub const MAIN_FILE: &str = "crates/train/src/main.rs";
/// How `main.rs` must declare them, at the start of its lines.
pub const DECLARATION: &str = "#[cfg(test)]\n#[path = \"../rules.rs\"]\nmod rules;";

/// What the trainer's rule tests say.
pub enum Rules {
    Hold,
    /// The failing or missing tests and their messages, for the agent and the log.
    Broken(String),
}

/// The tests `rules.rs` names, as the test binary reports them (`rules::<name>`).
pub fn required(worktree: &Path) -> Result<Vec<String>> {
    let path = worktree.join(RULES_FILE);
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let mut lines = text.lines().map(str::trim);
    let mut names = Vec::new();
    while let Some(line) = lines.next() {
        if line == "#[test]"
            && let Some(name) = lines
                .next()
                .and_then(|l| l.strip_prefix("fn "))
                .and_then(|l| l.split('(').next())
        {
            names.push(format!("rules::{name}"));
        }
    }
    Ok(names)
}

/// Why the agent's sources in `worktree` could not run the rules as written, if they could not.
pub fn tampered(worktree: &Path) -> Result<Option<String>> {
    let main = std::fs::read_to_string(worktree.join(MAIN_FILE))
        .with_context(|| format!("reading {MAIN_FILE}"))?;
    let lines: Vec<&str> = main.lines().collect();
    let declaration: Vec<&str> = DECLARATION.lines().collect();
    let declared = lines
        .windows(declaration.len())
        .enumerate()
        .filter(|(_, w)| *w == declaration.as_slice())
        .map(|(at, _)| at)
        .collect::<Vec<_>>();
    let attribute_before = |at: usize| at > 0 && lines[at - 1].trim_start().starts_with("#[");
    match declared.as_slice() {
        [at] if !attribute_before(*at) => {}
        _ => {
            return Ok(Some(format!(
                "{MAIN_FILE} must include the rule tests exactly as the run's base did, once and \
                 with no attribute of its own before it:\n{DECLARATION}"
            )));
        }
    }
    let mut switches = Vec::new();
    for file in rust_files(&worktree.join(EDITABLE))? {
        let text = std::fs::read_to_string(&file)?;
        let allowed = usize::from(file == worktree.join(MAIN_FILE));
        let found = test_switches(&text);
        if found > allowed {
            let name = file.strip_prefix(worktree).unwrap_or(&file);
            switches.push(name.display().to_string());
        }
    }
    Ok((!switches.is_empty()).then(|| {
        format!(
            "cfg(test) is reserved for the rule tests' declaration, and is used in {}: a trainer \
             must run its rules as it trains",
            switches.join(", ")
        )
    }))
}

/// The verdict on one run of the compiled tests: it `succeeded` (every test passed) and printed
/// `output`, in which every `required` rule must be reported as passed.
pub fn verdict(required: &[String], succeeded: bool, output: &str) -> Rules {
    if !succeeded {
        return Rules::Broken(tail(output, 40));
    }
    let passed: Vec<&str> = output
        .lines()
        .filter_map(|l| l.strip_prefix("test ")?.strip_suffix(" ... ok"))
        .collect();
    let missing: Vec<&str> = required
        .iter()
        .map(String::as_str)
        .filter(|name| !passed.contains(name))
        .collect();
    if missing.is_empty() {
        Rules::Hold
    } else {
        Rules::Broken(format!(
            "the rule tests did not run: {}; {MAIN_FILE} must keep including {RULES_FILE}",
            missing.join(", ")
        ))
    }
}

/// How many `cfg(...)`, `cfg!(...)` or `cfg_attr(...)` conditions in `text` mention `test`.
fn test_switches(text: &str) -> usize {
    let mut count = 0;
    let mut rest = text;
    while let Some(at) = rest.find("cfg") {
        let part_of_a_name = rest[..at]
            .chars()
            .next_back()
            .is_some_and(|c| c.is_alphanumeric() || c == '_');
        let after = &rest[at + 3..];
        rest = after;
        if part_of_a_name {
            continue;
        }
        let after = after
            .strip_prefix("_attr")
            .or_else(|| after.strip_prefix('!'))
            .unwrap_or(after)
            .trim_start();
        let Some(inner) = after.strip_prefix('(') else {
            continue;
        };
        let mut depth = 1;
        let end = inner
            .char_indices()
            .find(|&(_, c)| {
                depth += match c {
                    '(' => 1,
                    ')' => -1,
                    _ => 0,
                };
                depth == 0
            })
            .map_or(inner.len(), |(i, _)| i);
        let condition = &inner[..end];
        if condition
            .split(|c: char| !c.is_alphanumeric() && c != '_')
            .any(|word| word == "test")
        {
            count += 1;
        }
    }
    count
}

fn rust_files(dir: &Path) -> Result<Vec<std::path::PathBuf>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let entry = entry?;
        let path = entry.path();
        if entry.file_type()?.is_dir() {
            files.extend(rust_files(&path)?);
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_condition_on_test_is_counted_and_no_other() {
        assert_eq!(test_switches("#[cfg(test)]\nmod a;"), 1);
        assert_eq!(test_switches("if cfg!(test) { x }"), 1);
        assert_eq!(test_switches("#[cfg_attr(test, allow(dead_code))]"), 1);
        assert_eq!(test_switches("#[cfg(all(unix, not(test)))]"), 1);
        assert_eq!(test_switches("#[cfg(feature = \"testing\")] // cfg"), 0);
        assert_eq!(test_switches("let cfg = 1; fn test() {}"), 0);
        assert_eq!(test_switches("my_cfg(test)"), 0);
    }

    #[test]
    fn the_declaration_must_stand_as_written_and_alone() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join(EDITABLE);
        std::fs::create_dir_all(&src).unwrap();
        let write = |main: &str| std::fs::write(dir.path().join(MAIN_FILE), main).unwrap();
        write(&format!("fn main() {{}}\n{DECLARATION}\n"));
        assert!(tampered(dir.path()).unwrap().is_none());
        write("fn main() {}\n");
        assert!(tampered(dir.path()).unwrap().is_some());
        write(&format!("fn main() {{}}\n#[cfg(any())]\n{DECLARATION}\n"));
        assert!(tampered(dir.path()).unwrap().is_some());
        write(&format!("fn main() {{}}\n{DECLARATION}\n"));
        std::fs::write(
            src.join("model.rs"),
            "pub const FAST: bool = !cfg!(test);\n",
        )
        .unwrap();
        let why = tampered(dir.path()).unwrap().unwrap();
        assert!(why.contains("model.rs"), "{why}");
    }

    #[test]
    fn every_rule_must_pass_by_name() {
        let required = vec!["rules::a".to_string(), "rules::b".to_string()];
        let both = "test rules::a ... ok\ntest rules::b ... ok\n";
        assert!(matches!(verdict(&required, true, both), Rules::Hold));
        let Rules::Broken(why) = verdict(&required, true, "test rules::a ... ok\n") else {
            panic!("a missing rule holds");
        };
        assert!(why.contains("rules::b"), "{why}");
        assert!(matches!(verdict(&required, false, both), Rules::Broken(_)));
    }
}
