//! Short forms of long text: the tail of a log or of compiler output, for the agent and the
//! console; one-line descriptions for lists and plot labels.

/// The last `lines` lines of `text`.
pub fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// `text` on one line (every run of whitespace one space), at most `max_chars` characters.
pub fn one_line(text: &str, max_chars: usize) -> String {
    let flat = text.split_whitespace().collect::<Vec<_>>().join(" ");
    truncate_chars(&flat, max_chars)
}

/// At most `max_chars` characters; an ellipsis marks a cut.
pub fn truncate_chars(text: &str, max_chars: usize) -> String {
    if text.chars().count() <= max_chars {
        return text.to_string();
    }
    let cut: String = text.chars().take(max_chars - 1).collect();
    format!("{}…", cut.trim_end())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tails_and_one_liners() {
        assert_eq!(tail("a\nb\nc\n", 2), "b\nc");
        assert_eq!(tail("a", 5), "a");
        assert_eq!(
            one_line("timed out\nafter  600 s", 200),
            "timed out after 600 s"
        );
        assert_eq!(truncate_chars("abcdef", 4), "abc…");
    }
}
