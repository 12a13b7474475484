//! Helpers the train crate's test binaries share.

#![allow(dead_code)] // each test binary uses its own subset

use std::process::{Command, Output};

/// Runs `command` to completion and fails the test, with its stderr, unless it succeeded.
pub fn output_ok(command: &mut Command) -> Output {
    let out = command.output().unwrap();
    assert!(
        out.status.success(),
        "{command:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// The one JSON line a binary printed on stdout.
pub fn json_line(out: &Output) -> serde_json::Value {
    let stdout = String::from_utf8(out.stdout.clone()).unwrap();
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 1, "exactly one stdout line, got {stdout:?}");
    serde_json::from_str(lines[0]).unwrap()
}
