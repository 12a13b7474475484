//! End-to-end runs of the loop with the built-in offline agent (no LLM, no network), with one
//! worker or as many as `AUTORESEARCH_WORKERS` says. Records are appended as experiments end,
//! which with several workers is not the order of their numbers: the checks find them by number.
//!
//! - `offline_agent_runs_three_experiments`: baseline (trained with 2 seeds to measure the
//!   noise) plus two proposals, each built, trained for 2 s, scored by the protected evaluator
//!   and recorded; discarded commits stay reachable; the branch ends at the best.
//! - `kill_dash_nine_then_resume_loses_and_duplicates_nothing`: the orchestrator is killed
//!   mid-experiment and resumed; every experiment is recorded exactly once.
//! - `a_dirty_tree_or_an_existing_branch_is_refused`: start-up checks (program.md, the person's
//!   file, may be edited at any time).

mod common;

use std::time::{Duration, Instant};

use common::llm::worktrees;
use common::{SERIAL, Sandbox};

const ARGS: [&str; 6] = ["--agent", "offline", "--time-budget", "2", "--tag", "t"];

#[test]
fn offline_agent_runs_three_experiments() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let sandbox = Sandbox::new();
    let out = sandbox.run(&[&ARGS[..], &["--max-experiments", "3", "--noise-seeds", "2"]].concat());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("connect an LLM"),
        "says once how to connect an LLM"
    );

    let records = sandbox.records("t");
    assert_eq!(seqs(&records), [0, 1, 2]);
    // The baseline runs alone, first.
    let baseline = &records[0];
    assert_eq!(baseline["seq"], 0);
    assert_eq!(baseline["status"], "keep");
    assert_eq!(baseline["description"], "baseline");
    let seeds: Vec<u64> = baseline["trials"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["seed"].as_u64().unwrap())
        .collect();
    assert_eq!(seeds, [42, 43], "the noise is measured with two seeds");
    assert!(baseline["sigma"].as_f64().is_some_and(|s| s > 0.0));
    assert!(baseline["sigma_measured"].as_bool().unwrap());
    let tsv = std::fs::read_to_string(sandbox.repo.join("runs/t/results.tsv")).unwrap();
    assert_eq!(
        tsv.lines().next().unwrap(),
        "commit\tval_bpb\tmemory_gb\tstatus\tdescription"
    );
    assert_eq!(tsv.lines().count(), 4);

    // The branch ends at the best, the last change kept (a keep is recorded as it moves the
    // branch, so with several workers too).
    let best = sandbox.git(&["rev-parse", "autoresearch/t"]);
    let kept: Vec<&str> = records
        .iter()
        .filter(|r| r["status"] == "keep")
        .map(|r| r["commit"].as_str().unwrap())
        .collect();
    assert_eq!(kept.last(), Some(&best.as_str()), "{records:#?}");
    for r in &records {
        assert!(
            sandbox
                .repo
                .join(format!("runs/t/logs/{}.log", r["seq"]))
                .exists()
        );
        if r["status"] != "keep" {
            // Discarded and crashed commits stay reachable.
            let reference = format!("refs/autoresearch/t/discarded/{}", r["seq"]);
            assert_eq!(
                sandbox.git(&["rev-parse", &reference]),
                r["commit"].as_str().unwrap()
            );
        }
        if r["seq"] != 0 {
            assert_ne!(
                r["commit"], baseline["commit"],
                "each proposal is its own commit"
            );
            assert!(r["description"].as_str().unwrap().contains("->"));
        }
    }
    // The experiments ran in the run's worktrees (one per worker, each detached at the commit its
    // worker is on), which end clean, each at a kept commit, the last experiment's at the best;
    // the person's checkout stayed on its own branch, untouched.
    let worktrees = worktrees(&sandbox.repo.join("runs/t"));
    assert!(!worktrees.is_empty());
    let heads: Vec<String> = worktrees
        .iter()
        .map(|w| common::git(w, &["rev-parse", "HEAD"]))
        .collect();
    assert!(heads.contains(&best), "{best} in {heads:?}");
    for (worktree, head) in worktrees.iter().zip(&heads) {
        assert!(kept.contains(&head.as_str()), "{}", worktree.display());
        assert_eq!(
            common::git(worktree, &["status", "--porcelain", "--untracked-files=no"]),
            "",
            "{}",
            worktree.display()
        );
    }
    assert_eq!(sandbox.git(&["rev-parse", "--abbrev-ref", "HEAD"]), "main");
    assert_eq!(
        sandbox.git(&["status", "--porcelain", "--untracked-files=no"]),
        ""
    );
}

/// The records' numbers, in order: every experiment is recorded exactly once.
fn seqs(records: &[serde_json::Value]) -> Vec<u64> {
    let mut seqs: Vec<u64> = records.iter().map(|r| r["seq"].as_u64().unwrap()).collect();
    seqs.sort();
    seqs
}

#[test]
fn kill_dash_nine_then_resume_loses_and_duplicates_nothing() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let sandbox = Sandbox::new();
    let mut child =
        sandbox.spawn(&[&ARGS[..], &["--max-experiments", "3", "--noise-seeds", "1"]].concat());
    // Kill it while experiment 1 trains (its log exists), or fail after a generous wait. With
    // several workers others may be in flight too, or even recorded.
    let started = Instant::now();
    while !sandbox.repo.join("runs/t/logs/1.log").exists() {
        assert!(
            started.elapsed() < Duration::from_secs(900),
            "experiment 1 never started"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let recorded = seqs(&sandbox.records("t"));
    assert!(
        recorded.contains(&0) && !recorded.contains(&1),
        "the baseline was recorded, and not #1: {recorded:?}"
    );

    let out = sandbox.run(
        &[
            &ARGS[..],
            &["--max-experiments", "3", "--noise-seeds", "1", "--resume"],
        ]
        .concat(),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(seqs(&sandbox.records("t")), [0, 1, 2]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("re-running interrupted experiment 1"));
}

#[test]
fn a_dirty_tree_or_an_existing_branch_is_refused() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let sandbox = Sandbox::new();
    // program.md is the person's and read as it is; another uncommitted change would not be in
    // the run, which starts from HEAD.
    std::fs::write(sandbox.repo.join("program.md"), "edited but not committed").unwrap();
    let trainer = sandbox.repo.join("crates/train/src/main.rs");
    let source = std::fs::read_to_string(&trainer).unwrap();
    std::fs::write(&trainer, format!("{source}\n// not committed\n")).unwrap();
    let out = sandbox.run(&ARGS);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("uncommitted changes"), "{stderr}");
    assert!(!stderr.contains("program.md"), "{stderr}");

    sandbox.git(&["checkout", "--quiet", "crates/train/src/main.rs"]);
    sandbox.git(&["branch", "autoresearch/t"]);
    let out = sandbox.run(&ARGS);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--resume"));
}
