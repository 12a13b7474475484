//! Changes that can never be kept: comments, layout, the seed.

/// Why a change can never be kept, if it cannot: `changes` holds the old and new text of every
/// changed file. Comments and layout change nothing; a change of the seed only picks another
/// draw from the noise (the orchestrator sets the seed itself, so this is mostly a guard against
/// an agent that rewires how it is read).
pub fn cosmetic(changes: &[(String, String)]) -> Option<&'static str> {
    let code = |text: &str| -> Vec<String> {
        strip_comments(text)
            .lines()
            .map(|l| l.split_whitespace().collect::<String>())
            .filter(|l| !l.is_empty())
            .collect()
    };
    let mut changed_lines = Vec::new();
    for (old, new) in changes {
        let (old, new) = (code(old), code(new));
        if old.concat() == new.concat() {
            continue;
        }
        changed_lines.extend(old.iter().filter(|l| !new.contains(l)).cloned());
        changed_lines.extend(new.iter().filter(|l| !old.contains(l)).cloned());
    }
    if changed_lines.is_empty() {
        Some("only comments or layout changed")
    } else if changed_lines
        .iter()
        .all(|l| l.to_ascii_lowercase().contains("seed"))
    {
        Some("only the seed changed")
    } else {
        None
    }
}

/// Rust source without `//` and `/* */` comments; string and char literals are kept intact.
fn strip_comments(src: &str) -> String {
    let chars: Vec<char> = src.chars().collect();
    let mut out = String::with_capacity(src.len());
    let mut i = 0;
    while i < chars.len() {
        let next = chars.get(i + 1).copied();
        match chars[i] {
            '/' if next == Some('/') => {
                while i < chars.len() && chars[i] != '\n' {
                    i += 1;
                }
            }
            '/' if next == Some('*') => {
                i = after_block_comment(&chars, i);
                out.push(' ');
            }
            '"' => i = copy_string(&chars, i, &mut out),
            // A char literal such as '"' or '/' (a lifetime has no closing quote two on).
            '\'' if chars.get(i + 2) == Some(&'\'') => {
                out.extend(&chars[i..i + 3]);
                i += 3;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    out
}

/// Where the (nested) block comment that starts at `chars[i]` ends.
fn after_block_comment(chars: &[char], mut i: usize) -> usize {
    let mut depth = 0;
    while i < chars.len() {
        if chars[i] == '/' && chars.get(i + 1) == Some(&'*') {
            depth += 1;
            i += 2;
        } else if chars[i] == '*' && chars.get(i + 1) == Some(&'/') {
            depth -= 1;
            i += 2;
            if depth == 0 {
                break;
            }
        } else {
            i += 1;
        }
    }
    i
}

/// Copies the string literal that starts at `chars[i]` to `out`, escapes included; where it ends.
fn copy_string(chars: &[char], mut i: usize, out: &mut String) -> usize {
    out.push('"');
    i += 1;
    while i < chars.len() && chars[i] != '"' {
        if chars[i] == '\\' {
            out.push(chars[i]);
            i += 1;
        }
        if i < chars.len() {
            out.push(chars[i]);
            i += 1;
        }
    }
    if i < chars.len() {
        out.push('"');
        i += 1;
    }
    i
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_or_comment_edits_are_cosmetic_and_real_edits_are_not() {
        let src = "const LR: f64 = 0.04; // the lr\nlet url = \"http://x\"; // c\nlet seed: u64 = env_or(prepare::SEED_ENV, 42)?;\nlet q = '\"';\n";
        let pair = |new: &str| vec![(src.to_string(), new.to_string())];
        let commented = src.replace("// the lr", "/* a\nlonger */ // note");
        assert_eq!(
            cosmetic(&pair(&commented)),
            Some("only comments or layout changed")
        );
        let reformatted = src.replace("const LR: f64 = 0.04;", "const LR : f64 =\n    0.04;");
        assert_eq!(
            cosmetic(&pair(&reformatted)),
            Some("only comments or layout changed")
        );
        let reseeded = src.replace("42", "1337");
        assert_eq!(cosmetic(&pair(&reseeded)), Some("only the seed changed"));
        let tuned = src.replace("0.04", "0.05");
        assert_eq!(cosmetic(&pair(&tuned)), None);
        // A string that looks like a comment is code.
        let url = src.replace("http://x", "http://y");
        assert_eq!(cosmetic(&pair(&url)), None);
    }
}
