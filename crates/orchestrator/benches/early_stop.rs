//! Early stopping replayed over recorded nights: every change's first run that trained its whole
//! budget is judged point by point, as the loop judges it live, against the records before it
//! (the best and the spreads as they were then). Figures, not pass/fail:
//!
//! ```sh
//! cargo bench -p orchestrator --bench early_stop                 # the corpus shipped beside it
//! cargo bench -p orchestrator --bench early_stop -- $PWD/runs/mytag   # and nights of your own
//! ```
//!
//! For the default rule and a grid around it:
//!
//! - stopped: the runs the rule stops, of the changes' first runs that it could judge;
//! - saved: the training seconds those stops save, as a share of all the training of the nights
//!   (the baseline's seeds and every re-run included) and of the changes' first runs;
//! - false stops: stopped runs whose change was kept, or whose full run came within the noise of
//!   the best (it went to runs side by side, or its score was within the loop's threshold of the
//!   best's): the stops that could have cost a keep, as a share of the stopped runs and of all
//!   judged runs;
//! - at a 300 s budget, the training of one experiment shrinks by the share saved of all
//!   training: experiments per hour against the 12 of full runs (training time alone).
//!
//! The corpus (`benches/early_stop_corpus/`, see its README) is recorded by the orchestrator
//! itself, on this project's CPU profile and on the tests' fixture data; each night is a
//! directory holding its `experiments.jsonl`.

use std::path::{Path, PathBuf};

use orchestrator::decide;
use orchestrator::early_stop::{Reference, Rule};
use orchestrator::ledger::{self, Record, Status, Stopped};
use orchestrator::run_dir::RunDir;

/// The budget the figures are projected to, and the experiments per hour of full runs there.
const REAL_BUDGET: f64 = 300.0;
const GOAL_SAVED: f64 = 0.30;
const GOAL_FALSE: f64 = 0.02;

/// One change's first run as the replay judged it.
struct Judged {
    night: String,
    seq: u64,
    budget: f64,
    stopped: Option<Stopped>,
    /// It was kept, or its full run came within the noise of the best.
    close: bool,
    /// Its full run's score minus the best's, and the loop's threshold for it.
    gap: Option<(f64, f64)>,
}

struct Night {
    name: String,
    records: Vec<Record>,
}

fn main() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/early_stop_corpus");
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.join("experiments.jsonl").is_file())
        .collect();
    dirs.sort();
    dirs.extend(
        std::env::args()
            .skip(1)
            .filter(|a| !a.starts_with("--"))
            .map(PathBuf::from),
    );
    let nights: Vec<Night> = dirs
        .iter()
        .map(|d| Night {
            name: d.file_name().unwrap_or_default().to_string_lossy().into(),
            records: ledger::read_records(&RunDir::at(d)).unwrap_or_else(|e| panic!("{e:#}")),
        })
        .collect();
    describe(&nights);
    let default = Rule::default();
    // The probe and the training loss are different signals: a rule is measured on each alone.
    let (probed, unprobed): (Vec<&Night>, Vec<&Night>) = nights.iter().partition(|n| n.probed());
    for (nights, signal) in [(probed, "the probe"), (unprobed, "the training loss")] {
        if nights.is_empty() {
            continue;
        }
        println!(
            "\nnights compared on {signal}:\n{:>5} {:>5} {:>6} {:>7} {:>6} | {:>7} {:>9} {:>11} {:>13} {:>8}",
            "from",
            "until",
            "window",
            "spreads",
            "margin",
            "stopped",
            "saved/all",
            "saved/first",
            "false stops",
            "exp/h@300"
        );
        for rule in grid(default) {
            let judged: Vec<Judged> = nights.iter().flat_map(|n| replay(n, rule)).collect();
            row(&nights, &judged, rule, rule == default);
        }
    }
    let judged: Vec<Judged> = nights.iter().flat_map(|n| replay(n, default)).collect();
    details(&judged);
    per_night(&nights, &judged);
}

impl Night {
    /// Whether its curves carry the probe (recorded since the trainer's clock measures it).
    fn probed(&self) -> bool {
        self.records
            .iter()
            .flat_map(|r| &r.trials)
            .any(|t| t.curve.iter().any(|p| p.probe.is_some()))
    }
}

/// The default rule, then each of its figures varied alone.
fn grid(default: Rule) -> Vec<Rule> {
    let mut rules = vec![default];
    for from in [0.1, 0.3, 0.4] {
        rules.push(Rule { from, ..default });
    }
    for until in [0.3, 0.7, 0.9] {
        rules.push(Rule { until, ..default });
    }
    for window in [0.05, 0.2] {
        rules.push(Rule { window, ..default });
    }
    for spreads in [2.0, 3.0, 6.0, 8.0] {
        rules.push(Rule { spreads, ..default });
    }
    for margin in [0.0, 0.02, 0.1, 0.2] {
        rules.push(Rule { margin, ..default });
    }
    rules
}

fn describe(nights: &[Night]) {
    println!("early stopping replayed over recorded nights");
    for night in nights {
        let Some(budget) = night.records.first().and_then(budget) else {
            println!("  {}: no records with a budget", night.name);
            continue;
        };
        let firsts = night
            .records
            .iter()
            .filter(|r| r.seq > 0 && full_first_run(r, budget))
            .count();
        println!(
            "  {}: {} experiments, budget {budget} s, {firsts} changes' first runs with a \
             full curve, {:.0} training seconds in all; compared on {}",
            night.name,
            night.records.len(),
            training(&night.records),
            if night.probed() {
                "the probe"
            } else {
                "the training loss (recorded before the probe)"
            }
        );
    }
}

fn budget(record: &Record) -> Option<f64> {
    record.result.as_ref()?.line()?.time_budget_s
}

/// The record's first run trained its whole budget and has its curve.
fn full_first_run(record: &Record, budget: f64) -> bool {
    record.trials.first().is_some_and(|t| {
        t.val_bpb.is_some() && !t.curve.is_empty() && t.training_seconds >= 0.99 * budget
    })
}

/// Training seconds of every run of the records.
fn training(records: &[Record]) -> f64 {
    records
        .iter()
        .flat_map(|r| r.trials.iter().chain(&r.best_trials))
        .map(|t| t.training_seconds)
        .sum()
}

/// Each change's first run of `night` judged by `rule` against the records before it.
fn replay(night: &Night, rule: Rule) -> Vec<Judged> {
    let mut judged = Vec::new();
    for (i, record) in night.records.iter().enumerate() {
        let before = &night.records[..i];
        let Some(budget) = budget(record) else {
            continue;
        };
        if record.seq == 0 || !full_first_run(record, budget) {
            continue;
        }
        let Some(reference) = Reference::of(before, budget, rule) else {
            continue;
        };
        let curve = &record.trials[0].curve;
        let stopped = (1..=curve.len()).find_map(|n| reference.judge(&curve[..n]));
        let gap = gap(before, record);
        let within = gap.is_some_and(|(gap, threshold)| gap < threshold);
        judged.push(Judged {
            night: night.name.clone(),
            seq: record.seq,
            budget,
            stopped,
            close: record.status == Status::Keep || !record.best_trials.is_empty() || within,
            gap,
        });
    }
    judged
}

/// The first run's score minus the best's, and the threshold the loop keeps a change by.
fn gap(before: &[Record], record: &Record) -> Option<(f64, f64)> {
    let best = ledger::best(before)?;
    let noise = decide::noise_floor(before)?;
    let first = record.trials[0].val_bpb?;
    let best_scores = ledger::scores(&best.trials);
    let threshold = decide::threshold(noise, 1, best_scores.len());
    Some((first - decide::mean(&best_scores), threshold))
}

/// Of some judged runs: the training seconds their stops save, how many were stopped, and how
/// many of those were false stops.
fn tally<'a>(judged: impl IntoIterator<Item = &'a Judged>) -> (f64, usize, usize) {
    judged
        .into_iter()
        .filter_map(|j| Some((j.budget - j.stopped?.seconds, j.close)))
        .fold((0.0, 0, 0), |(saved, stopped, false_stops), (s, close)| {
            (saved + s, stopped + 1, false_stops + usize::from(close))
        })
}

fn row(nights: &[&Night], judged: &[Judged], rule: Rule, default: bool) {
    let all: f64 = nights.iter().map(|n| training(&n.records)).sum();
    let firsts: f64 = judged.iter().map(|j| j.budget).sum();
    let (saved, stopped, false_stops) = tally(judged);
    let share = saved / all;
    println!(
        "{:>5.2} {:>5.2} {:>6.2} {:>7.1} {:>6.3} | {:>3}/{:<3} {:>8.1}% {:>10.1}% {:>4} ({:>4.1}%) {:>8.1}{}",
        rule.from,
        rule.until,
        rule.window,
        rule.spreads,
        rule.margin,
        stopped,
        judged.len(),
        100.0 * share,
        100.0 * saved / firsts,
        false_stops,
        100.0 * false_stops as f64 / judged.len().max(1) as f64,
        3600.0 / (REAL_BUDGET * (1.0 - share)),
        if default { "  <- default" } else { "" }
    );
}

fn details(judged: &[Judged]) {
    println!(
        "\nthe default rule, run by run (gap: the full run's val_bpb minus the best's | the \
         loop's threshold):"
    );
    for j in judged {
        let gap = j
            .gap
            .map_or("-".into(), |(g, t)| format!("{g:+.4} | {t:.4}"));
        let verdict = match &j.stopped {
            Some(s) => s.to_string(),
            None => "ran to the end".into(),
        };
        let close = if j.close {
            "  [kept or within the noise]"
        } else {
            ""
        };
        println!("  {} #{}: gap {gap}: {verdict}{close}", j.night, j.seq);
    }
    let judged_n = judged.len().max(1) as f64;
    let (_, _, false_stops) = tally(judged);
    println!(
        "\ngoal: at least {:.0}% of training time saved with at most {:.0}% false stops; \
         false stops here: {false_stops} of {} judged runs ({:.1}%)",
        100.0 * GOAL_SAVED,
        100.0 * GOAL_FALSE,
        judged.len(),
        100.0 * false_stops as f64 / judged_n
    );
}

/// The default rule on each night alone: nights of different agents differ most in how many of
/// their changes are hopeless, which bounds what stopping can save. The ceiling is shown: what a
/// rule that knew every full run's score would save, stopping each first run that was neither
/// kept nor within the noise at its first second.
fn per_night(nights: &[Night], judged: &[Judged]) {
    println!("\nthe default rule, night by night:");
    for night in nights {
        let ours: Vec<&Judged> = judged.iter().filter(|j| j.night == night.name).collect();
        let (saved, stopped, false_stops) = tally(ours.iter().copied());
        let all = training(&night.records).max(f64::MIN_POSITIVE);
        let share = saved / all;
        let doomed = ours.iter().filter(|j| !j.close);
        let ceiling = doomed.fold(0.0, |sum, j| sum + j.budget) / all;
        println!(
            "  {}: stopped {stopped} of {} judged, {false_stops} false; saved {:.1}% of its \
             training: {:.1} experiments an hour at {REAL_BUDGET} s (ceiling {:.1}%)",
            night.name,
            ours.len(),
            100.0 * share,
            3600.0 / (REAL_BUDGET * (1.0 - share)),
            100.0 * ceiling
        );
    }
}
