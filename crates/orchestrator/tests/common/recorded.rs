//! A recorded run written by hand, for the dashboard's tests and benchmark: `experiments`
//! records in `runs/<tag>/experiments.jsonl` on a real git history (each change a commit that
//! edits one constant of `crates/train/src/main.rs` on the best before it, kept under the refs
//! the loop uses), and a log per experiment. Scores follow a fixed pattern: a keep every ninth
//! experiment, a crash every eleventh, discards in between.
//!
//! Used from test files as `mod common; #[path = "common/recorded.rs"] mod recorded;`.

#![allow(dead_code)]

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use serde_json::{Value, json};

use crate::common::git;

pub const TAG: &str = "recorded";
/// The training budget every record's result line states.
pub const BUDGET: f64 = 30.0;
pub const BASELINE: f64 = 1.5;
pub const SIGMA: f64 = 0.002;

pub struct Recorded {
    _dir: tempfile::TempDir,
    pub repo: PathBuf,
    pub records: Vec<Value>,
}

/// The status of experiment `seq` in the pattern.
pub fn status(seq: u64) -> &'static str {
    match seq {
        0 => "keep",
        s if s % 11 == 5 => "crash",
        s if s % 9 == 2 => "keep",
        _ => "discard",
    }
}

/// The learning rate experiment `seq` tries: its change to the trainer.
pub fn lr(seq: u64) -> String {
    format!("{:.4}", 0.01 * (1.0 + seq as f64 / 50.0))
}

impl Recorded {
    pub fn new(experiments: u64) -> Recorded {
        let dir = tempfile::tempdir().unwrap();
        let repo = dir.path().join("repo");
        let run = repo.join("runs").join(TAG);
        std::fs::create_dir_all(run.join("logs")).unwrap();
        git(&repo, &["init", "--quiet", "-b", "main"]);
        let commits = history(&repo, experiments);
        let mut records = Vec::new();
        let (mut best, mut best_seq) = (BASELINE, 0);
        for seq in 0..experiments {
            let status = status(seq);
            // Every ninth a keep, 0.006 below the best; discards up to 0.012 above it.
            let val_bpb = match status {
                "crash" => None,
                "keep" if seq > 0 => Some(best - 0.006),
                "keep" => Some(BASELINE),
                _ => Some(best + 0.001 + 0.011 * ((seq * 37 % 23) as f64 / 23.0)),
            };
            let parent = if seq == 0 {
                ""
            } else {
                &commits[best_seq as usize]
            };
            records.push(record(
                seq,
                status,
                val_bpb,
                best,
                &commits[seq as usize],
                parent,
            ));
            if status == "keep" {
                (best, best_seq) = (val_bpb.unwrap(), seq);
            }
            std::fs::write(
                run.join("logs").join(format!("{seq}.log")),
                format!(
                    "device Cpu | experiment {seq}\nlr {}\nstatus {status}\n",
                    lr(seq)
                ),
            )
            .unwrap();
        }
        let lines: String = records.iter().map(|r| format!("{r}\n")).collect();
        std::fs::write(run.join("experiments.jsonl"), lines).unwrap();
        Recorded {
            _dir: dir,
            repo,
            records,
        }
    }

    pub fn run_dir(&self) -> PathBuf {
        self.repo.join("runs").join(TAG)
    }
}

fn record(
    seq: u64,
    status: &str,
    val_bpb: Option<f64>,
    best: f64,
    commit: &str,
    parent: &str,
) -> Value {
    // A point a second, the loss falling to the score, as the trainer's progress lines go.
    let curve = |v: f64| -> Vec<Value> {
        (0..=BUDGET as u64)
            .map(|s| {
                let left = 1.0 - s as f64 / BUDGET;
                json!({"seconds": s as f64, "step": s * 4, "loss": v + 3.0 * left * left})
            })
            .collect()
    };
    let trials: Vec<Value> = val_bpb
        .map(|v| {
            json!({"seed": 42, "val_bpb": v, "trainer_val_bpb": null, "num_steps": 100 + seq,
                   "training_seconds": BUDGET + 0.1, "run_seconds": BUDGET + 5.0,
                   "eval_seconds": 2.0, "curve": curve(v)})
        })
        .into_iter()
        .collect();
    json!({
        "seq": seq,
        "commit": commit,
        "parent": parent,
        "status": status,
        "reason": (status == "crash").then_some("build failed after 3 repair rounds"),
        "description": if seq == 0 { "baseline".to_string() } else { format!("lr {}", lr(seq)) },
        "val_bpb": val_bpb,
        "peak_memory_mb": 1024.0,
        "result": val_bpb.map(|_| result_line(seq)),
        "think_seconds": 20.0,
        "build_seconds": 4.0,
        "run_seconds": BUDGET + 7.0,
        "agent_tokens": if seq == 0 { 0 } else { 1500 },
        "program_changed": false,
        "finished_at": "2026-12-06T03:00:00+00:00",
        "trials": trials,
        "sigma": SIGMA,
        "sigma_measured": seq == 0,
        "delta": val_bpb.filter(|_| seq > 0).map(|v| v - best),
        "rule": match status {
            "keep" if seq > 0 => Some("gain beyond 2σ"),
            "discard" => Some("within the noise"),
            _ => None,
        },
        "eval_seconds": 2.0,
    })
}

/// The trainer's result line (docs/contract.md) of experiment `seq`'s run.
fn result_line(seq: u64) -> Value {
    let steps = 100 + seq;
    json!({"schema": 1, "status": "ok", "training_seconds": BUDGET + 0.1,
           "total_seconds": BUDGET + 4.0, "peak_memory_mb": 1024.0, "num_steps": steps,
           "num_params": 1_000_000, "train_tokens": steps * 4096,
           "tokens_per_second": (steps * 4096) as f64 / BUDGET, "mfu_percent": null,
           "device": "cpu", "contract": "recorded", "time_budget_s": BUDGET, "seed": 42})
}

/// The run's commits by experiment, written in one `git fast-import`: the baseline on `main`,
/// each change on the latest keep before it; keeps advance `autoresearch/<tag>`, the others sit
/// under `refs/autoresearch/<tag>/discarded/<seq>`.
fn history(repo: &std::path::Path, experiments: u64) -> Vec<String> {
    let marks = repo.join(".git").join("marks");
    let mut import = Command::new("git")
        .arg("-C")
        .arg(repo)
        .args(["fast-import", "--quiet"])
        .arg(format!("--export-marks={}", marks.display()))
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stream = String::new();
    let mut best = 0;
    for seq in 0..experiments {
        let branch = match (seq, status(seq)) {
            (0, _) => "refs/heads/main".to_string(),
            (_, "keep") => format!("refs/heads/autoresearch/{TAG}"),
            _ => format!("refs/autoresearch/{TAG}/discarded/{seq}"),
        };
        let source = format!("//! The trainer.\n\nconst LR: f64 = {};\n", lr(seq));
        let message = format!("experiment {seq}");
        stream += &format!(
            "commit {branch}\nmark :{}\ncommitter t <t@example.com> {} +0000\ndata {}\n{message}\n",
            seq + 1,
            1_765_000_000 + seq,
            message.len() + 1,
        );
        if seq > 0 {
            stream += &format!("from :{}\n", best + 1);
        }
        stream += &format!(
            "M 100644 inline crates/train/src/main.rs\ndata {}\n{source}\n",
            source.len()
        );
        if status(seq) == "keep" {
            best = seq;
        }
    }
    import
        .stdin
        .take()
        .unwrap()
        .write_all(stream.as_bytes())
        .unwrap();
    assert!(import.wait().unwrap().success(), "git fast-import failed");
    let text = std::fs::read_to_string(marks).unwrap();
    let mut commits = vec![String::new(); experiments as usize];
    for line in text.lines() {
        let (mark, sha) = line.split_once(' ').unwrap();
        let seq: usize = mark.trim_start_matches(':').parse::<usize>().unwrap() - 1;
        commits[seq] = sha.to_string();
    }
    commits
}
