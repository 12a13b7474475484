//! The loop's throughput with 1, 2 and 16 workers, on the stand-in trainer of
//! `tests/common/standin.rs` (a build of well under a second, a trainer that sleeps its budget): the
//! real loop, git, sandboxed builds, executor, evaluator and decisions, with the offline agent.
//! Figures, not pass/fail:
//!
//! ```sh
//! cargo bench -p orchestrator --bench workers                      # 1, 2, 16 workers, 5 s budget
//! cargo bench -p orchestrator --bench workers -- --budget 10 --workers 1,16 --rounds 3
//! ```
//!
//! Each run: the baseline (2 noise seeds), then `rounds` x workers experiments (at least 6). The
//! figures are taken after the baseline is recorded (the start-up, the evaluator's build and
//! the baseline's runs are shown apart), up to the last record:
//!
//! - experiments per hour;
//! - the training share: the trials' training seconds (the best's re-runs beside them
//!   included) / (wall time x workers), what a GPU per worker would spend training;
//! - the loop's own time per experiment: wall x workers / experiments, minus its training; and
//!   again without the tail (each worker's time after its last record, while the others finish:
//!   the ramp-down of a short bench, which a night's run does not have);
//! - at a 300 s budget, with the same runs per experiment and the same own time per experiment
//!   (without the tail): experiments per hour on that many GPUs, and the training share. The own
//!   time measured at a short budget includes waiting for what the workers share (one build at
//!   a time), which a longer budget spreads out: the projection is conservative.

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "../tests/common/standin.rs"]
mod standin;

use std::time::Instant;

use serde_json::Value;
use standin::Standin;

const TAG: &str = "bench";
/// The contract's budget, which the figures are projected to.
const REAL_BUDGET: f64 = 300.0;
/// The goal: GPU (training) time at 16 workers at least this share of wall time.
const GOAL_SHARE: f64 = 0.9;

struct Options {
    budget: f64,
    workers: Vec<usize>,
    rounds: u64,
}

fn options() -> Options {
    let mut options = Options {
        budget: 5.0,
        workers: vec![1, 2, 16],
        rounds: 2,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().unwrap_or_else(|| panic!("{arg} needs a value"));
        match arg.as_str() {
            "--budget" => options.budget = value().parse().expect("--budget SECONDS"),
            "--workers" => {
                options.workers = value()
                    .split(',')
                    .map(|w| w.trim().parse().expect("--workers 1,2,16"))
                    .collect()
            }
            "--rounds" => options.rounds = value().parse().expect("--rounds N"),
            _ => {} // cargo bench passes --bench
        }
    }
    options
}

/// What one run measured.
struct Run {
    workers: usize,
    budget: f64,
    experiments: usize,
    wall: f64,
    /// From the start to the baseline's record.
    startup: f64,
    /// From the baseline's record to the last record.
    steady: f64,
    training: f64,
    trials: usize,
    build: f64,
    /// The baseline's build, the trainer's first into an empty target directory.
    first_build: f64,
    /// Worker-seconds from the baseline's record to each worker's last record: the workers'
    /// time less the tail, where some have no experiment left to run while others finish.
    busy: f64,
    failed: Option<String>,
}

fn seconds_since(start: chrono::DateTime<chrono::Local>, record: &Value) -> f64 {
    let at = chrono::DateTime::parse_from_rfc3339(record["finished_at"].as_str().unwrap()).unwrap();
    (at.with_timezone(&chrono::Local) - start).as_seconds_f64()
}

fn run(workers: usize, budget: f64, rounds: u64) -> Run {
    let standin = Standin::new();
    let experiments = 1 + (rounds * workers as u64).max(6);
    let flags = [
        "--agent".to_string(),
        "offline".into(),
        "--tag".into(),
        TAG.into(),
        "--time-budget".into(),
        budget.to_string(),
        "--max-experiments".into(),
        experiments.to_string(),
        "--workers".into(),
        workers.to_string(),
        "--noise-seeds".into(),
        "2".into(),
    ];
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    eprintln!("{workers} workers: {experiments} experiments at {budget} s...");
    let start = chrono::Local::now();
    let started = Instant::now();
    let out = standin.run(&flags);
    let wall = started.elapsed().as_secs_f64();
    let records = standin.records(TAG);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let failed = (!out.status.success()).then(|| {
        let tail: Vec<&str> = stderr.lines().rev().take(5).collect();
        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
    });
    let after: Vec<&Value> = records.iter().filter(|r| r["seq"] != 0).collect();
    let startup = records
        .iter()
        .find(|r| r["seq"] == 0)
        .map_or(wall, |r| seconds_since(start, r));
    let last = records
        .iter()
        .map(|r| seconds_since(start, r))
        .fold(startup, f64::max);
    // Which worker recorded which experiment: its line `[w3] #14 discard ...` (no prefix with
    // one worker).
    let mut worker_of = std::collections::HashMap::new();
    for line in stderr.lines() {
        let (worker, rest) = match line.strip_prefix("[w").and_then(|l| l.split_once("] ")) {
            Some((k, rest)) => (k.parse::<usize>().ok(), rest),
            None => (Some(0), line),
        };
        let mut words = rest.split(' ');
        let (Some(worker), Some(seq), Some(status)) = (worker, words.next(), words.next()) else {
            continue;
        };
        if let (Some(seq), true) = (
            seq.strip_prefix('#').and_then(|n| n.parse::<u64>().ok()),
            ["keep", "discard", "stale", "crash"].contains(&status),
        ) {
            worker_of.insert(seq, worker);
        }
    }
    let mut last_of = vec![startup; workers];
    for r in &after {
        let worker = worker_of
            .get(&r["seq"].as_u64().unwrap())
            .copied()
            .unwrap_or(0);
        if let Some(at) = last_of.get_mut(worker) {
            *at = at.max(seconds_since(start, r));
        }
    }
    let busy = last_of.iter().map(|at| at - startup).sum();
    let trials = |r: &Value| {
        ["trials", "best_trials"]
            .into_iter()
            .flat_map(|k| r[k].as_array().cloned().unwrap_or_default())
            .collect::<Vec<_>>()
    };
    Run {
        workers,
        budget,
        experiments: after.len(),
        wall,
        startup,
        steady: last - startup,
        training: after
            .iter()
            .flat_map(|r| trials(r))
            .map(|t| t["training_seconds"].as_f64().unwrap_or(0.0))
            .sum(),
        trials: after.iter().map(|r| trials(r).len()).sum(),
        build: after
            .iter()
            .map(|r| r["build_seconds"].as_f64().unwrap_or(0.0))
            .sum(),
        first_build: records
            .iter()
            .find(|r| r["seq"] == 0)
            .and_then(|r| r["build_seconds"].as_f64())
            .unwrap_or(0.0),
        busy,
        failed,
    }
}

fn main() {
    let options = options();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    eprintln!(
        "the loop on the stand-in trainer: budget {} s, workers {:?}, {cores} cores",
        options.budget, options.workers
    );
    let runs: Vec<Run> = options
        .workers
        .iter()
        .map(|&w| run(w, options.budget, options.rounds))
        .collect();

    println!(
        "\nthe loop on the stand-in trainer, {} s budget, {cores} cores (after the baseline; \
         start-up = the evaluator's build and the baseline's 2 runs)\n",
        options.budget
    );
    println!(
        "{:>7} {:>5} {:>6} {:>7} {:>7} {:>6} {:>8} {:>9} | {:>6} {:>9} | {:>8} {:>7} {:>7} | {:>10} {:>8}",
        "workers",
        "exps",
        "wall s",
        "start s",
        "after s",
        "exp/h",
        "training",
        "own s/exp",
        "tail",
        "own s/exp",
        "runs/exp",
        "build s",
        "1st b s",
        format!("@{REAL_BUDGET:.0}s exp/h"),
        "training"
    );
    for r in &runs {
        if r.experiments == 0 || r.steady <= 0.0 {
            println!("{:>7} no experiment after the baseline", r.workers);
            continue;
        }
        let n = r.experiments as f64;
        let workers = r.workers as f64;
        let share = r.training / (r.steady * workers);
        let own = (r.steady * workers - r.training) / n;
        let tail = 1.0 - r.busy / (r.steady * workers);
        let own_busy = ((r.busy - r.training) / n).max(0.0);
        let runs_per_exp = r.trials as f64 / n;
        let training_at_real = runs_per_exp * REAL_BUDGET;
        let per_hour_real = 3600.0 * workers / (training_at_real + own_busy);
        let share_real = training_at_real / (training_at_real + own_busy);
        println!(
            "{:>7} {:>5} {:>6.1} {:>7.1} {:>7.1} {:>6.0} {:>7.1}% {:>9.2} | {:>5.1}% {:>9.2} | {:>8.2} {:>7.2} {:>7.2} | {:>10.1} {:>7.1}%",
            r.workers,
            r.experiments,
            r.wall,
            r.startup,
            r.steady,
            3600.0 * n / r.steady,
            100.0 * share,
            own,
            100.0 * tail,
            own_busy,
            runs_per_exp,
            r.build / n,
            r.first_build,
            per_hour_real,
            100.0 * share_real
        );
    }
    for r in &runs {
        if let Some(why) = &r.failed {
            println!("\n{} workers: the run failed:\n{why}", r.workers);
        }
    }
    println!(
        "\nexps: experiments after the baseline. start s: from the start to the baseline's \
         record; after s: from there to the last record, the window of every other figure. \
         exp/h: experiments per hour. training: the runs' training seconds / (after s x \
         workers). own s/exp: after s x workers / exps, less the training per experiment. \
         tail: the share of after s x workers after each worker's last record (nothing left to \
         run while others finish; ramp-down of a short bench, gone in a night's run); the \
         second own s/exp leaves it out. runs/exp: training runs per experiment (re-runs, the \
         best beside it). build s: the build phase per experiment, waiting for the one build \
         at a time included. 1st b s: the baseline's build, the trainer's first into an empty \
         target directory. @{REAL_BUDGET:.0}s: the same runs per experiment and own time (without \
         the tail) at the contract's budget, on one GPU per worker."
    );
    if let Some(r) = runs.iter().find(|r| r.workers == 16 && r.experiments > 0) {
        let n = r.experiments as f64;
        let share = r.training / (r.steady * 16.0);
        let training_at_real = r.trials as f64 / n * REAL_BUDGET;
        let share_real =
            training_at_real / (training_at_real + ((r.busy - r.training) / n).max(0.0));
        let verdict = |s: f64| if s >= GOAL_SHARE { "met" } else { "not met" };
        println!(
            "goal, training >= {:.0}% of wall time at 16 workers: {:.1}% at {} s ({}), {:.1}% \
             projected at {REAL_BUDGET:.0} s ({})",
            100.0 * GOAL_SHARE,
            100.0 * share,
            r.budget,
            verdict(share),
            100.0 * share_real,
            verdict(share_real)
        );
    }
}
