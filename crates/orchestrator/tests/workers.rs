//! The real loop (git, sandboxed cargo builds, the executor, the evaluator's `--result-fd`
//! protocol, the ledger and the decisions) driven by many workers at once, on the stand-in
//! trainer of `common/standin.rs` (a second-long build, a trainer that sleeps its budget and
//! exports a scripted score) with the offline agent:
//!
//! - `one_worker_drives_the_standin_through_the_loop`: `--workers 1`; every experiment recorded
//!   once, none left pending, every parent a kept commit, the branch at the best, only this
//!   machine's knobs (CPU_) tuned, each run trained its budget exactly, each new best scored on
//!   the test split, nothing left in `bin/`. The fixture's own check; passes without workers.
//! - `sixteen_workers_lose_and_double_nothing`: the same checks after `--workers 16` and 48
//!   experiments, and that the workers did run at once (trainers seen in flight together, far
//!   more training than wall time); prints the training share of wall time and the loop's own
//!   time per experiment.
//! - `kill_dash_nine_with_one_worker_then_resume`: killed while an experiment trains, resumed;
//!   nothing lost or doubled, the interrupted experiment re-run with its commit.
//! - `kill_dash_nine_with_trials_in_flight_then_resume`: 16 workers killed with several trials
//!   in flight; no process of the run outlives it; `--resume` re-runs every interrupted
//!   experiment with its own commit, rewrites no record, loses and doubles nothing.
//! - `ctrl_c_during_the_evaluators_build_stops_the_run`: SIGINT (ignored as a script's background
//!   job inherits it) during the evaluator's first build ends the run at once, build included.

mod common;
#[path = "common/standin.rs"]
mod standin;

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use serde_json::Value;
use standin::Standin;

/// The runs here time what they do; one at a time on a shared machine.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

const TAG: &str = "w";

/// The loop's flags: the offline agent, `budget` seconds, `experiments` in all, `workers`.
fn flags(budget: u32, experiments: u64, workers: usize, noise_seeds: usize) -> Vec<String> {
    [
        "--agent",
        "offline",
        "--tag",
        TAG,
        "--time-budget",
        &budget.to_string(),
        "--max-experiments",
        &experiments.to_string(),
        "--workers",
        &workers.to_string(),
        "--noise-seeds",
        &noise_seeds.to_string(),
    ]
    .map(String::from)
    .to_vec()
}

fn strs(flags: &[String]) -> Vec<&str> {
    flags.iter().map(String::as_str).collect()
}

fn seq(r: &Value) -> u64 {
    r["seq"].as_u64().unwrap()
}

fn commit(r: &Value) -> &str {
    r["commit"].as_str().unwrap()
}

/// Every trial of a record, the best's re-runs beside it included.
fn all_trials(r: &Value) -> impl Iterator<Item = &Value> {
    let list = |k: &str| r[k].as_array().into_iter().flatten();
    list("trials").chain(list("best_trials"))
}

/// What must hold of a finished run of `experiments` at `budget` seconds, however many workers
/// ran it: every experiment recorded exactly once and none left pending; every parent a commit
/// the ledger kept before; the branch at the best; only this machine's knobs tuned; each run
/// trained its budget; each new best scored on the test split; no trainer, model or export left.
/// Returns the records.
fn check_finished_run(standin: &Standin, budget: f64, experiments: u64) -> Vec<Value> {
    let records = standin.records(TAG);
    let mut seqs: Vec<u64> = records.iter().map(seq).collect();
    seqs.sort();
    assert_eq!(
        seqs,
        (0..experiments).collect::<Vec<_>>(),
        "every experiment recorded exactly once"
    );
    assert_eq!(
        standin.pending(TAG),
        BTreeSet::new(),
        "nothing left pending"
    );
    let tsv = std::fs::read_to_string(standin.run_dir(TAG).join("results.tsv")).unwrap();
    assert_eq!(tsv.lines().count() as u64, experiments + 1);

    let baseline = records.iter().find(|r| seq(r) == 0).unwrap();
    assert_eq!(baseline["status"], "keep");
    assert_eq!(baseline["description"], "baseline");
    assert_eq!(baseline["parent"], baseline["commit"]);
    assert!(baseline["pins"].is_object(), "the first record pins");

    // Parents: a commit kept (and so recorded) before the experiment was proposed.
    let kept: HashMap<&str, u64> = records
        .iter()
        .filter(|r| r["status"] == "keep")
        .map(|r| (commit(r), seq(r)))
        .collect();
    let mut commits = BTreeSet::new();
    for r in &records {
        assert!(commits.insert(commit(r)), "#{} has its own commit", seq(r));
        let log = standin.run_dir(TAG).join(format!("logs/{}.log", seq(r)));
        assert!(log.exists(), "#{}'s log", seq(r));
        if seq(r) == 0 {
            continue;
        }
        let parent = r["parent"].as_str().unwrap();
        let parent_seq = kept.get(parent).unwrap_or_else(|| {
            panic!(
                "#{}'s parent {parent} is not a commit the ledger kept",
                seq(r)
            )
        });
        assert!(*parent_seq < seq(r), "#{} built on a later keep", seq(r));
        assert_eq!(
            standin.git(&["rev-parse", &format!("{}^", commit(r))]),
            parent,
            "#{} is one commit on its parent",
            seq(r)
        );
        if r["status"] != "keep" {
            let reference = format!("refs/autoresearch/{TAG}/discarded/{}", seq(r));
            assert_eq!(standin.git(&["rev-parse", &reference]), commit(r));
        }
        // Only knobs of this machine's configuration (CPU_) and shared ones are tuned: every
        // line the change made is such a `const`, and the other configuration's never changes.
        let (before, after) = (standin.trainer_at(parent), standin.trainer_at(commit(r)));
        assert_eq!(before.lines().count(), after.lines().count());
        let changed: Vec<&str> = before
            .lines()
            .zip(after.lines())
            .filter(|(b, a)| b != a)
            .map(|(_, a)| a)
            .collect();
        assert!(!changed.is_empty(), "#{} changed nothing", seq(r));
        for line in changed {
            assert!(
                line.starts_with("const ") && !line.starts_with("const GPU_"),
                "#{} changed {line:?}",
                seq(r)
            );
        }
        for line in standin::gpu_knobs() {
            assert!(after.contains(&line), "#{} changed {line}", seq(r));
        }
    }

    // The best is the last keep; the run's branch ends there.
    let best = records
        .iter()
        .rev()
        .find(|r| r["status"] == "keep")
        .unwrap();
    assert_eq!(
        standin.git(&["rev-parse", &format!("autoresearch/{TAG}")]),
        commit(best),
        "the branch is at the best"
    );
    assert_eq!(standin.git(&["rev-parse", "--abbrev-ref", "HEAD"]), "main");
    assert_eq!(
        standin.git(&["status", "--porcelain", "--untracked-files=no"]),
        ""
    );

    for r in &records {
        // A run stopped early, clearly worse than the best's runs at the same point, trained
        // part of its budget and was never scored (docs/early-stop.md).
        let stopped = r["stopped"].is_object();
        for t in all_trials(r) {
            let trained = t["training_seconds"].as_f64().unwrap();
            if stopped {
                assert!(
                    trained < budget && t["val_bpb"].is_null(),
                    "#{} was stopped early: {t}",
                    seq(r)
                );
                continue;
            }
            assert!(
                trained >= budget && trained < budget + 1.0,
                "#{} trained {trained} s of a {budget} s budget",
                seq(r)
            );
            assert!(t["val_bpb"].as_f64().is_some_and(|v| v > 0.9 && v < 3.0));
        }
        match r["status"].as_str().unwrap() {
            "keep" => {
                // The holdout: the stand-in's test split scores 0.01 above its validation split.
                let first = r["trials"][0]["val_bpb"].as_f64().unwrap();
                let test = r["test_bpb"]
                    .as_f64()
                    .expect("a new best is scored on the test split");
                assert!(
                    (test - first - 0.01).abs() < 1e-6,
                    "#{}: test {test}",
                    seq(r)
                );
            }
            // A stale one beat the best it started from, but a newer best came first and its
            // change no longer applies there.
            "discard" | "stale" => assert!(r["rule"].is_string()),
            status => {
                assert_eq!(status, "crash");
                assert!(r["reason"].is_string());
            }
        }
    }

    // Nothing of a run left beside the evaluator and the best's trainer.
    let bin = standin.run_dir(TAG).join("bin");
    let left: Vec<String> = std::fs::read_dir(&bin)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n != "evaluate" && *n != format!("best-{}", commit(best)))
        .collect();
    assert!(left.is_empty(), "left in {}: {left:?}", bin.display());
    records
}

/// Training seconds of every run, and the best's re-runs beside them.
fn training_seconds(records: &[Value]) -> f64 {
    records
        .iter()
        .flat_map(all_trials)
        .map(|t| t["training_seconds"].as_f64().unwrap())
        .sum()
}

#[test]
fn one_worker_drives_the_standin_through_the_loop() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let standin = Standin::new();
    let started = Instant::now();
    let out = standin.run(&strs(&flags(2, 8, 1, 2)));
    let wall = started.elapsed().as_secs_f64();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let records = check_finished_run(&standin, 2.0, 8);
    let seeds: Vec<u64> = records[0]["trials"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["seed"].as_u64().unwrap())
        .collect();
    assert_eq!(seeds, [42, 43], "the noise is measured with two seeds");
    assert!(records[0]["sigma"].as_f64().is_some_and(|s| s > 0.0));
    // One worker: the experiments' checkout is the run's worktree, at the best.
    let best = records
        .iter()
        .rev()
        .find(|r| r["status"] == "keep")
        .unwrap();
    assert_eq!(
        common::git(&standin.worktree(TAG), &["rev-parse", "HEAD"]),
        commit(best)
    );
    // A 2 s budget, with second-long builds: a handful of seconds per experiment.
    let training = training_seconds(&records);
    eprintln!(
        "1 worker: {} experiments in {wall:.1} s, {training:.1} s training ({:.0}% of wall)",
        records.len(),
        100.0 * training / wall
    );
}

/// The run's worker worktrees, `runs/<tag>/workers/<k>`.
fn worker_worktrees(standin: &Standin) -> Vec<std::path::PathBuf> {
    std::fs::read_dir(standin.run_dir(TAG).join("workers"))
        .into_iter()
        .flatten()
        .map(|e| e.unwrap().path())
        .filter(|p| p.join(".git").exists())
        .collect()
}

// Needs `--workers` (in progress): with one worker the trainers never overlap.
#[test]
fn sixteen_workers_lose_and_double_nothing() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let standin = Standin::new();
    let (budget, experiments, workers) = (4, 48, 16);
    let stderr = standin.run_dir(TAG).with_extension("stderr");
    std::fs::create_dir_all(stderr.parent().unwrap()).unwrap();
    let started = Instant::now();
    let mut child = standin.spawn(&strs(&flags(budget, experiments, workers, 2)), &stderr);
    // Watch the trainers in flight until the run ends.
    let mut peak = 0;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        peak = peak.max(standin.in_flight(TAG).len());
        if started.elapsed() > Duration::from_secs(900) {
            child.kill().ok();
            child.wait().ok();
            panic!("48 experiments on 16 workers did not finish in 15 minutes");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let wall = started.elapsed().as_secs_f64();
    let log = std::fs::read_to_string(&stderr).unwrap();
    assert!(status.success(), "{log}");
    let records = check_finished_run(&standin, budget as f64, experiments);

    // The workers ran at once.
    let training = training_seconds(&records);
    let worktrees = worker_worktrees(&standin);
    eprintln!(
        "{workers} workers: {experiments} experiments in {wall:.1} s; {training:.1} s training = \
         {:.0}% of wall x workers; the loop's own time {:.2} s per experiment; at most {peak} \
         trainers at once; {} worker worktrees",
        100.0 * training / (wall * workers as f64),
        (wall * workers as f64 - training) / experiments as f64,
        worktrees.len()
    );
    assert!(
        peak >= 4,
        "at most {peak} trainers ran at once with {workers} workers"
    );
    assert!(
        training > 3.0 * wall,
        "{training:.1} s of training in {wall:.1} s of wall time with {workers} workers"
    );
    assert!(
        !worktrees.is_empty() && worktrees.len() <= workers,
        "{} worker worktrees under runs/{TAG}/workers",
        worktrees.len()
    );
    for worktree in &worktrees {
        assert_eq!(
            common::git(worktree, &["status", "--porcelain", "--untracked-files=no"]),
            "",
            "{} is clean",
            worktree.display()
        );
    }
}

/// Starts `workers` workers on `experiments`, kills the orchestrator with SIGKILL once the
/// baseline is recorded and `in_flight` trainers run at once, checks that nothing of the run
/// outlives it, resumes, and checks that nothing was lost, doubled or rewritten and that every
/// interrupted experiment was re-run with its own commit.
fn kill_then_resume(workers: usize, in_flight: usize, experiments: u64, budget: u32) {
    let standin = Standin::new();
    let flags = flags(budget, experiments, workers, 1);
    let stderr = standin.run_dir(TAG).with_extension("stderr");
    std::fs::create_dir_all(stderr.parent().unwrap()).unwrap();
    let mut child = standin.spawn(&strs(&flags), &stderr);
    let started = Instant::now();
    loop {
        let baseline_recorded = !standin.records(TAG).is_empty();
        if baseline_recorded && standin.in_flight(TAG).len() >= in_flight {
            break;
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!(
                "the run ended ({status}) before {in_flight} trainers ran at once:\n{}",
                std::fs::read_to_string(&stderr).unwrap()
            );
        }
        if started.elapsed() > Duration::from_secs(300) {
            child.kill().ok();
            child.wait().ok();
            panic!(
                "{in_flight} trainers never ran at once with {workers} workers (at most {:?} now)",
                standin.in_flight(TAG)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();

    // What the kill left: whole records, and the experiments under way with their commits.
    let ledger = standin.run_dir(TAG).join("experiments.jsonl");
    let text = std::fs::read_to_string(&ledger).unwrap();
    let whole = &text[..text.rfind('\n').map_or(0, |i| i + 1)];
    let recorded: BTreeSet<u64> = standin.records(TAG).iter().map(seq).collect();
    let pending = standin.pending(TAG);
    let pending_commits: HashMap<u64, String> = pending
        .iter()
        .map(|&s| {
            let dir = standin.run_dir(TAG);
            let file = dir.join(format!("pending/{s}.json"));
            let text = std::fs::read_to_string(&file)
                .or_else(|_| std::fs::read_to_string(dir.join("pending.json")))
                .unwrap();
            let p: Value = serde_json::from_str(&text).unwrap();
            (s, p["commit"].as_str().unwrap().to_string())
        })
        .collect();
    // A kill between a record and the removal of its pending file leaves both: that one is not
    // to run again.
    let interrupted: BTreeSet<u64> = pending.difference(&recorded).copied().collect();
    assert!(
        interrupted.len() >= in_flight.min(2),
        "{in_flight} trainers ran, and {interrupted:?} were interrupted"
    );

    // Its trainers, jails and builds die with it (they are killed with their parent).
    let killed = Instant::now();
    while !standin.processes().is_empty() {
        assert!(
            killed.elapsed() < Duration::from_secs(10),
            "still running after the kill: {:#?}",
            standin.processes()
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    eprintln!(
        "killed with {in_flight}+ trainers in flight: {} recorded, {interrupted:?} interrupted",
        recorded.len()
    );
    let mut resume = strs(&flags);
    resume.push("--resume");
    let out = standin.run(&resume);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let records = check_finished_run(&standin, budget as f64, experiments);
    let after = std::fs::read_to_string(&ledger).unwrap();
    assert!(
        after.starts_with(whole),
        "the records before the kill are kept as they were"
    );
    for s in &interrupted {
        let commit = &pending_commits[s];
        let record = records.iter().find(|r| seq(r) == *s).unwrap();
        assert_eq!(
            record["commit"].as_str().unwrap(),
            commit,
            "#{s} re-ran its own commit"
        );
    }
}

#[test]
fn kill_dash_nine_with_one_worker_then_resume() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    kill_then_resume(1, 1, 4, 2);
}

// Needs `--workers` (in progress): one worker never has 4 trainers in flight.
#[test]
fn kill_dash_nine_with_trials_in_flight_then_resume() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    kill_then_resume(16, 4, 40, 4);
}

/// Ctrl-C while the run is set up (the evaluator's first build, minutes on a fresh machine) stops
/// it at once, its build with it. Started as a script's background job is, with SIGINT ignored:
/// the orchestrator's own handler must be in place before the set-up starts. The build is held
/// where a slow one would be, by holding cargo's lock on the target directory.
#[test]
fn ctrl_c_during_the_evaluators_build_stops_the_run() {
    use std::os::fd::AsRawFd;
    use std::os::unix::process::CommandExt;

    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let standin = Standin::new();
    let release = standin.target.join("release");
    std::fs::create_dir_all(&release).unwrap();
    let lock = std::fs::File::create(release.join(".cargo-lock")).unwrap();
    // SAFETY: flock on a descriptor this test owns.
    assert_eq!(unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) }, 0);

    let stderr = standin.root().join("stderr");
    let mut command = standin.command(&strs(&flags(2, 2, 1, 1)));
    command
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&stderr).unwrap());
    // SAFETY: signal(2) is async-signal-safe; it sets the child's own disposition.
    unsafe {
        command.pre_exec(|| {
            libc::signal(libc::SIGINT, libc::SIG_IGN);
            Ok(())
        });
    }
    let mut child = command.spawn().unwrap();
    let building = |p: &String| p.contains("cargo") && p.contains("evaluate");
    let started = Instant::now();
    while !standin.processes().iter().any(building) {
        assert!(
            child.try_wait().unwrap().is_none(),
            "the run ended before its evaluator's build:\n{}",
            std::fs::read_to_string(&stderr).unwrap()
        );
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "no evaluator build started"
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    // SAFETY: kill(2) on the child this test started.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let interrupted = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if interrupted.elapsed() > Duration::from_secs(20) {
            child.kill().ok();
            child.wait().ok();
            panic!("Ctrl-C did not stop the run during the evaluator's build in 20 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let said = std::fs::read_to_string(&stderr).unwrap();
    assert!(status.success(), "{status}:\n{said}");
    assert!(
        said.contains("stopped before the first experiment"),
        "{said}"
    );
    // Its build dies with it (the jail's processes are killed with their parent).
    while let Some(process) = standin.processes().first() {
        assert!(
            interrupted.elapsed() < Duration::from_secs(30),
            "outlived the run: {process}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(standin.records(TAG).is_empty());
}
