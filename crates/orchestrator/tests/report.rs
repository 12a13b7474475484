//! `orchestrator report` on a sample run written by hand (no training).
//!
//! - `report_prints_the_summary_and_draws_the_plot`: the text summary's key lines, and
//!   `runs/<tag>/progress.png`, a real 1400x700 PNG.
//! - `json_summary_matches_the_records`: counts, keep rate, best, improvement, the ranking of
//!   the kept changes, the time split, and the keep that got worse on the test split.
//! - `a_ledger_in_finishing_order_reports_the_same`: the sample as several workers write it
//!   (records appended as experiments end, not in the order of their numbers) gives the same
//!   summary.
//! - `a_missing_run_names_its_path_and_how_to_start_one`: the error for a tag with no records.

use std::path::Path;
use std::process::{Command, Output};

use serde_json::{Value, json};

const TAG: &str = "sample";

/// Seconds in every record of the sample.
const BUILD: f64 = 10.0;
const THINK: f64 = 20.0;
const TRAIN: f64 = 60.0;
const RUN: f64 = 75.0;
const EVAL: f64 = 5.0;
/// A crash's training, from its result line (it has no scored trials).
const CRASH_TRAIN: f64 = 30.0;

/// One experiments.jsonl line. `trials` runs of TRAIN seconds each, 100 steps; a crash has
/// none. #7 was kept side by side: the best (#5) ran once beside it, 90 steps, 0.002 * sqrt(2)
/// above its own run, so that its two runs also spread by a sample sigma of 0.002.
fn record(
    seq: u64,
    status: &str,
    val_bpb: Option<f64>,
    delta: Option<f64>,
    test_bpb: Option<f64>,
    description: &str,
) -> Value {
    let trials = match (seq, status) {
        (_, "crash") => 0,
        (0, _) => 2,
        _ => 1,
    };
    // The baseline's two seeds lie 0.002 apart over sqrt(2), a sample sigma of 0.002.
    let spread = if seq == 0 { 0.002 / 2f64.sqrt() } else { 0.0 };
    let trial = |seed: u64| {
        let val_bpb = val_bpb.map(|v| v + spread * (2.0 * seed as f64 - 1.0));
        json!({"seed": seed, "val_bpb": val_bpb, "trainer_val_bpb": null, "num_steps": 100,
               "training_seconds": TRAIN, "run_seconds": RUN, "eval_seconds": EVAL})
    };
    let best_trials = match seq {
        7 => vec![
            json!({"seed": 0, "val_bpb": 1.47 + 0.002 * 2f64.sqrt(), "num_steps": 90,
                         "training_seconds": TRAIN, "run_seconds": RUN, "eval_seconds": EVAL}),
        ],
        _ => vec![],
    };
    let runs = trials + best_trials.len() as u64;
    let training = if trials == 0 { CRASH_TRAIN } else { TRAIN };
    json!({
        "seq": seq,
        "commit": format!("{seq:040x}"),
        "parent": format!("{:040x}", seq.saturating_sub(1)),
        "status": status,
        "reason": (status == "crash").then_some("timed out after 600 s"),
        "description": description,
        "val_bpb": val_bpb,
        "peak_memory_mb": 2048.0,
        "result": {"val_bpb": val_bpb, "training_seconds": training},
        "think_seconds": THINK,
        "build_seconds": BUILD,
        "run_seconds": RUN * runs.max(1) as f64,
        "agent_tokens": if seq == 0 { 0 } else { 1000 },
        "program_changed": false,
        "finished_at": "2026-11-23T03:00:00+00:00",
        "trials": (0..trials).map(trial).collect::<Vec<_>>(),
        "best_trials": best_trials,
        "sigma": 0.002,
        "sigma_measured": seq == 0,
        "delta": delta,
        "rule": null,
        "test_bpb": test_bpb,
        "flags": if seq == 5 { vec!["test split got worse: 1.495000 > 1.490000 of the previous best"] } else { vec![] },
        "eval_seconds": EVAL * runs as f64,
    })
}

/// Baseline 1.5; keeps #2 (-0.02), #5 (-0.01, worse on test), #7 (-0.03); a crash #3; #6 far
/// off the chart.
fn sample() -> Vec<Value> {
    vec![
        record(0, "keep", Some(1.5), None, Some(1.51), "baseline"),
        record(1, "discard", Some(1.502), Some(0.002), None, "seed 43"),
        record(
            2,
            "keep",
            Some(1.48),
            Some(-0.02),
            Some(1.49),
            "lower the learning rate",
        ),
        record(3, "crash", None, None, None, "batch size 4x"),
        record(
            4,
            "discard",
            Some(1.485),
            Some(0.005),
            None,
            "warmup 500 steps",
        ),
        record(5, "keep", Some(1.47), Some(-0.01), Some(1.495), "wider MLP"),
        record(6, "discard", Some(1.6), Some(0.13), None, "no weight decay"),
        record(
            7,
            "keep",
            Some(1.44),
            Some(-0.03),
            Some(1.45),
            "rotary position embeddings instead of learned ones",
        ),
        record(
            8,
            "discard",
            Some(1.4405),
            Some(0.0005),
            None,
            "dropout 0.1",
        ),
    ]
}

/// The sample as several workers append it, as experiments end: the baseline first (it runs
/// alone), the keeps in the order they moved the branch, the others in between out of order.
fn finishing_order() -> Vec<Value> {
    let sample = sample();
    [0, 2, 1, 3, 5, 4, 7, 6, 8]
        .map(|seq| sample[seq].clone())
        .to_vec()
}

/// A git repository (the binary finds the project with `git rev-parse --show-toplevel`)
/// holding the sample as run TAG.
fn repo_with_sample() -> tempfile::TempDir {
    repo_with(&sample())
}

/// A git repository holding `records` as run TAG.
fn repo_with(records: &[Value]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let status = Command::new("git")
        .args(["init", "--quiet"])
        .current_dir(dir.path())
        .status()
        .unwrap();
    assert!(status.success());
    let run = dir.path().join("runs").join(TAG);
    std::fs::create_dir_all(&run).unwrap();
    let lines: String = records.iter().map(|r| format!("{r}\n")).collect();
    std::fs::write(run.join("experiments.jsonl"), lines).unwrap();
    dir
}

fn report(repo: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_orchestrator"))
        .arg("report")
        .args(args)
        .current_dir(repo)
        .output()
        .unwrap()
}

#[test]
fn report_prints_the_summary_and_draws_the_plot() {
    let repo = repo_with_sample();
    let out = report(repo.path(), &["--tag", TAG]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    for line in [
        "run sample: 9 experiments (the baseline and 8 changes)",
        "3 kept, 4 discarded, 1 crashed; keep rate 37.5%",
        "val_bpb 1.500000 (baseline) -> 1.440000 (#7): -0.060000 (-4.00%)",
        "noise floor: sigma 0.002000",
        "WORSE ON TEST than the keep before; wider MLP",
        "runs: 1.440000 (100 steps) | best 1.472828 (90 steps)",
    ] {
        assert!(stdout.contains(line), "missing {line:?} in:\n{stdout}");
    }

    let png = repo.path().join("runs").join(TAG).join("progress.png");
    assert!(stderr.contains("progress.png"), "{stderr}");
    let bytes = std::fs::read(&png).unwrap();
    assert!(bytes.len() > 10_000, "{} bytes", bytes.len());
    let mut reader = png::Decoder::new(std::io::Cursor::new(bytes))
        .read_info()
        .unwrap();
    let mut pixels = vec![0; reader.output_buffer_size()];
    let frame = reader.next_frame(&mut pixels).unwrap();
    assert_eq!((frame.width, frame.height), (1400, 700));
}

#[test]
fn json_summary_matches_the_records() {
    let repo = repo_with_sample();
    let out = report(repo.path(), &["--tag", TAG, "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let s: Value = serde_json::from_slice(&out.stdout).unwrap();
    let close = |key: &str, want: f64| {
        let got = s[key]
            .as_f64()
            .unwrap_or_else(|| panic!("{key}: {}", s[key]));
        assert!((got - want).abs() < 1e-9, "{key}: {got} != {want}");
    };

    assert_eq!(s["tag"], TAG);
    assert_eq!(s["experiments"], 9);
    assert_eq!(
        (&s["keeps"], &s["discards"], &s["crashes"]),
        (&json!(3), &json!(4), &json!(1))
    );
    close("keep_rate", 3.0 / 8.0);
    close("baseline_bpb", 1.5);
    close("best_bpb", 1.44);
    assert_eq!(s["best_seq"], 7);
    close("improvement", 0.06);
    close("improvement_pct", 4.0);
    close("sigma", 0.002);

    let kept = s["kept"].as_array().unwrap();
    let ranked: Vec<u64> = kept.iter().map(|k| k["seq"].as_u64().unwrap()).collect();
    assert_eq!(ranked, [7, 2, 5]);
    assert!((kept[0]["gain"].as_f64().unwrap() - 0.03).abs() < 1e-9);
    assert_eq!(kept[2]["description"], "wider MLP");
    assert_eq!(kept[2]["test_bpb"], 1.495);
    assert_eq!(
        kept[0]["runs"],
        "runs: 1.440000 (100 steps) | best 1.472828 (90 steps)"
    );

    // Training: 2 baseline trials, 7 single-trial changes, the best's re-run beside #7, and
    // the crash's result line.
    let training = 10.0 * TRAIN + CRASH_TRAIN;
    close("training_seconds", training);
    let spent = 9.0 * BUILD + 11.0 * RUN;
    close("overhead_seconds", spent - training);
    close("eval_seconds", 10.0 * EVAL);
    close("think_seconds", 9.0 * THINK);
    assert_eq!(s["agent_tokens"], 8000);

    let holdout = s["holdout"].as_array().unwrap();
    let rows: Vec<(u64, bool)> = holdout
        .iter()
        .map(|h| {
            (
                h["seq"].as_u64().unwrap(),
                h["test_worse"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(rows, [(0, false), (2, false), (5, true), (7, false)]);
    assert_eq!(holdout[2]["val_bpb"], 1.47);
    assert_eq!(holdout[2]["test_bpb"], 1.495);
    assert_eq!(
        s["warnings"][0],
        "#5: test split got worse: 1.495000 > 1.490000 of the previous best"
    );
}

#[test]
fn a_ledger_in_finishing_order_reports_the_same() {
    let summaries: Vec<(String, Value)> = [sample(), finishing_order()]
        .iter()
        .map(|records| {
            let repo = repo_with(records);
            let text = report(repo.path(), &["--tag", TAG]);
            let json = report(repo.path(), &["--tag", TAG, "--json"]);
            assert!(
                text.status.success() && json.status.success(),
                "{}",
                String::from_utf8_lossy(&text.stderr)
            );
            (
                String::from_utf8(text.stdout).unwrap(),
                serde_json::from_slice(&json.stdout).unwrap(),
            )
        })
        .collect();
    assert_eq!(summaries[0], summaries[1]);
    assert_eq!(summaries[1].1["best_seq"], 7);
}

#[test]
fn a_missing_run_names_its_path_and_how_to_start_one() {
    let repo = repo_with_sample();
    let out = report(repo.path(), &["--tag", "nope"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    for part in [
        "runs/nope/experiments.jsonl",
        "cargo run --release -p orchestrator -- --tag nope",
        "runs with experiments there: sample",
    ] {
        assert!(stderr.contains(part), "missing {part:?} in:\n{stderr}");
    }
    assert!(
        !repo.path().join("runs/nope").exists(),
        "a report creates nothing"
    );
}
