//! The prepare binary end to end on a small corpus of the user's own.
//!
//! - `prepares_a_user_corpus_and_is_idempotent`: first run writes everything; the second skips
//!   the work and gives the same contract; a new profile only changes the contract.
//! - `bad_input_fails_with_a_clear_message`: missing input and a vocabulary clash.

use std::path::Path;
use std::process::{Command, Output};

use prepare::{Dataset, Split};

fn prepare(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_prepare"))
        .args(args)
        .output()
        .unwrap()
}

fn write_corpus(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    for i in 0..30 {
        let text =
            format!("Article {i}. The river flows past the old mill, number {i}.\n").repeat(40);
        std::fs::write(dir.join(format!("{i:02}.txt")), text).unwrap();
    }
}

#[test]
fn prepares_a_user_corpus_and_is_idempotent() {
    let tmp = tempfile::tempdir().unwrap();
    let corpus = tmp.path().join("corpus");
    write_corpus(&corpus);
    let data = tmp.path().join("data");
    let args = |profile: &'static str| {
        vec![
            "--input",
            corpus.to_str().unwrap(),
            "--data-dir",
            data.to_str().unwrap(),
            "--vocab-size",
            "400",
            "--profile",
            profile,
        ]
    };
    let out = prepare(&args("cpu"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let first = Dataset::open(&data).unwrap();
    assert_eq!(first.contract().vocab_size, 400);
    assert_eq!(first.contract().seq_len, 512);
    let val = first.eval_set(Split::Val).unwrap();
    assert_eq!(val.scored_bytes(), first.contract().scored_bytes);
    let batch = val.batch(0..val.rows());
    assert_eq!(
        batch.target_bytes.iter().map(|&b| b as u64).sum::<u64>(),
        val.scored_bytes()
    );
    let tokens_before = std::fs::metadata(data.join("train.tokens"))
        .unwrap()
        .modified()
        .unwrap();

    let again = prepare(&args("cpu"));
    assert!(again.status.success());
    let second = Dataset::open(&data).unwrap();
    assert_eq!(second.contract_hash(), first.contract_hash());
    let tokens_after = std::fs::metadata(data.join("train.tokens"))
        .unwrap()
        .modified()
        .unwrap();
    assert_eq!(tokens_before, tokens_after, "finished steps are skipped");

    let gpu = prepare(&args("gpu"));
    assert!(gpu.status.success());
    let third = Dataset::open(&data).unwrap();
    assert_eq!(third.contract().seq_len, 2048);
    assert_ne!(third.contract_hash(), first.contract_hash());
    let summary = String::from_utf8_lossy(&gpu.stderr);
    assert!(
        summary.contains("bytes/token") && summary.contains("contract"),
        "{summary}"
    );
}

#[test]
fn bad_input_fails_with_a_clear_message() {
    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("nowhere");
    let out = prepare(&[
        "--input",
        missing.to_str().unwrap(),
        "--data-dir",
        tmp.path().to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read"));

    let corpus = tmp.path().join("corpus");
    write_corpus(&corpus);
    let data = tmp.path().join("data");
    let run = |vocab: &str| {
        prepare(&[
            "--input",
            corpus.to_str().unwrap(),
            "--data-dir",
            data.to_str().unwrap(),
            "--vocab-size",
            vocab,
        ])
    };
    assert!(run("400").status.success());
    let clash = run("500");
    assert!(!clash.status.success());
    assert!(String::from_utf8_lossy(&clash.stderr).contains("another --name"));

    let err = Dataset::open(&tmp.path().join("empty"))
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("cargo run --release -p prepare"), "{err}");
}
