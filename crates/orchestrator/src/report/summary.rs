//! The summary of a run: counts, the best and the gain over the baseline, the kept changes
//! ranked, the holdout beside validation, where the time went, and the warnings.

use serde::Serialize;

use crate::confirm::records::Confirmation;
use crate::cost::Tokens;
use crate::decide::noise_floor;
use crate::ledger::{Printed, Record, Status, best, tally};

#[derive(Debug, Serialize)]
pub struct Summary {
    pub tag: String,
    /// All experiments, the baseline included.
    pub experiments: usize,
    /// The outcomes of the changes, the experiments after the baseline.
    pub keeps: usize,
    pub discards: usize,
    pub crashes: usize,
    /// keeps / changes; None before the first change.
    pub keep_rate: Option<f64>,
    pub baseline_bpb: Option<f64>,
    pub best_bpb: Option<f64>,
    pub best_seq: Option<u64>,
    /// baseline_bpb - best_bpb: positive is better.
    pub improvement: Option<f64>,
    /// The improvement in percent of the baseline.
    pub improvement_pct: Option<f64>,
    /// The kept changes, largest gain first.
    pub kept: Vec<KeptChange>,
    /// The noise floor in force at the end: std dev of val_bpb between runs of one program.
    pub sigma: Option<f64>,
    /// The trainer's counted training time, every run of every experiment.
    pub training_seconds: f64,
    /// Building, starting, evaluating and re-checking: everything but training and thinking.
    pub overhead_seconds: f64,
    /// The protected evaluation's share of the overhead.
    pub eval_seconds: f64,
    /// The agent's time to propose changes.
    pub think_seconds: f64,
    pub agent_tokens: u64,
    /// The agent's tokens read and written.
    pub agent_usage: Tokens,
    /// What they cost in USD, the records whose price was known; None when none was.
    pub cost_usd: Option<f64>,
    /// The latest confirmation of the best (`orchestrator confirm`), when there is one.
    pub confirm: Option<Confirmation>,
    /// Every keep with its validation and holdout (test split) scores side by side.
    pub holdout: Vec<HoldoutRow>,
    /// The records' warnings for people, as "#seq: warning".
    pub warnings: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct KeptChange {
    pub seq: u64,
    pub description: String,
    pub val_bpb: Option<f64>,
    pub test_bpb: Option<f64>,
    /// The gain as judged: -delta (side by side when it was run beside the best).
    pub gain: f64,
    /// Each run's score and steps, the best's re-runs beside them (see [`Record::runs`]): on a
    /// wall-clock budget, how many steps fit moves the score as much as a change can.
    pub runs: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct HoldoutRow {
    pub seq: u64,
    pub description: String,
    pub val_bpb: Option<f64>,
    pub test_bpb: Option<f64>,
    /// Better on validation but worse on the test split than the keep before it: a hint of
    /// overfitting the validation split.
    pub test_worse: bool,
}

/// The best's val_bpb after each record, the latest keep's (None until the first scored keep).
pub(crate) fn running_best(records: &[Record]) -> Vec<Option<f64>> {
    let mut best: Option<f64> = None;
    records
        .iter()
        .map(|r| {
            if r.status == Status::Keep && r.val_bpb.is_some() {
                best = r.val_bpb;
            }
            best
        })
        .collect()
}

/// The noise floor in force at each record: the latest one recorded so far.
pub(crate) fn running_sigma(records: &[Record]) -> Vec<Option<f64>> {
    let mut sigma = None;
    records
        .iter()
        .map(|r| {
            sigma = r.sigma.or(sigma);
            sigma
        })
        .collect()
}

/// A record's training seconds, what the trainer counted: its run_seconds spans its whole run
/// phase (every trial's start-up, training and evaluation, the best's re-runs beside it
/// included, and the holdout).
fn training_seconds(r: &Record) -> f64 {
    if r.trials.is_empty() {
        r.result
            .as_ref()
            .and_then(Printed::training_seconds)
            .unwrap_or(0.0)
    } else {
        let trials = r.trials.iter().chain(&r.best_trials);
        trials.map(|t| t.training_seconds).sum()
    }
}

pub fn summarize(tag: &str, records: &[Record]) -> Summary {
    let (agent_usage, cost_usd) = cost(records);
    let tally = tally(records);
    let changes = records.iter().filter(|r| r.seq > 0).count();
    let baseline_bpb = records.iter().find(|r| r.seq == 0).and_then(|r| r.val_bpb);
    // The latest keep, which the branch ends at: a change kept side by side on a slower machine
    // may score above an earlier keep and still be better.
    let best = best(records).filter(|r| r.val_bpb.is_some());
    let best_bpb = best.and_then(|r| r.val_bpb);
    let improvement = baseline_bpb.zip(best_bpb).map(|(base, best)| base - best);

    let kept = kept_changes(records);
    let holdout = holdout_rows(records);

    let training_seconds: f64 = records.iter().map(training_seconds).sum();
    let spent: f64 = records
        .iter()
        .map(|r| r.build_seconds + r.run_seconds)
        .sum();

    Summary {
        tag: tag.to_string(),
        experiments: records.len(),
        keeps: tally.keeps,
        discards: tally.discards,
        crashes: tally.crashes,
        keep_rate: (changes > 0).then(|| tally.keeps as f64 / changes as f64),
        baseline_bpb,
        best_bpb,
        best_seq: best.map(|r| r.seq),
        improvement,
        improvement_pct: improvement
            .zip(baseline_bpb)
            .map(|(gain, base)| 100.0 * gain / base),
        kept,
        sigma: noise_floor(records).map(|n| n.sigma),
        training_seconds,
        overhead_seconds: (spent - training_seconds).max(0.0),
        eval_seconds: records.iter().map(|r| r.eval_seconds).sum(),
        think_seconds: records.iter().map(|r| r.think_seconds).sum(),
        agent_tokens: records.iter().map(|r| r.agent_tokens).sum(),
        agent_usage,
        cost_usd,
        confirm: None,
        holdout,
        warnings: records
            .iter()
            .flat_map(|r| r.flags.iter().map(move |f| format!("#{}: {f}", r.seq)))
            .collect(),
    }
}

impl Summary {
    /// The summary for people.
    pub fn text(&self) -> String {
        let mut out = format!(
            "run {}: {} experiments (the baseline and {} changes)\n",
            self.tag,
            self.experiments,
            self.keeps + self.discards + self.crashes
        );
        out += &format!(
            "  {} kept, {} discarded, {} crashed; keep rate {}\n",
            self.keeps,
            self.discards,
            self.crashes,
            self.keep_rate
                .map_or("-".into(), |r| format!("{:.1}%", 100.0 * r))
        );
        out += &format!(
            "  val_bpb {} (baseline) -> {} (#{})",
            bpb(self.baseline_bpb),
            bpb(self.best_bpb),
            self.best_seq.map_or("-".into(), |s| s.to_string())
        );
        if let (Some(gain), Some(pct)) = (self.improvement, self.improvement_pct) {
            out += &format!(": {:+.6} ({:+.2}%)", -gain, -pct);
        }
        out += "\n";
        if let Some(sigma) = self.sigma {
            out += &format!("  noise floor: sigma {sigma:.6} between runs\n");
        }
        out += &format!(
            "  time: training {}, overhead {} (evaluation {}), thinking {}; {} agent tokens\n",
            duration(self.training_seconds),
            duration(self.overhead_seconds),
            duration(self.eval_seconds),
            duration(self.think_seconds),
            self.agent_tokens
        );
        out += &self.cost_line();
        out += &self.kept_text();
        out += &self.holdout_text();
        out += &self.confirm_text();
        if !self.warnings.is_empty() {
            out += "\nwarnings:\n";
            for w in &self.warnings {
                out += &format!("  {w}\n");
            }
        }
        out
    }

    /// The kept changes, largest gain first.
    fn kept_text(&self) -> String {
        let mut out = String::new();
        if !self.kept.is_empty() {
            out += "\nkept changes, largest gain first:\n";
            for k in &self.kept {
                let in_sigma = self
                    .sigma
                    .filter(|s| *s > 0.0)
                    .map_or(String::new(), |s| format!(" ({:.1} sigma)", k.gain / s));
                out += &format!(
                    "  #{:<4} gain {:.6}{in_sigma}  val {}  {}\n",
                    k.seq,
                    k.gain,
                    bpb(k.val_bpb),
                    k.description
                );
                if let Some(runs) = &k.runs {
                    out += &format!("         {runs}\n");
                }
            }
        }

        out
    }

    /// Each keep's scores on the validation and the test split.
    fn holdout_text(&self) -> String {
        let mut out = String::from("\nholdout: each keep on the validation and the test split\n");
        out += "  seq    val_bpb   test_bpb\n";
        for h in &self.holdout {
            out += &format!(
                "  #{:<4} {:>9} {:>10}  {}{}\n",
                h.seq,
                bpb(h.val_bpb),
                bpb(h.test_bpb),
                if h.test_worse {
                    "WORSE ON TEST than the keep before; "
                } else {
                    ""
                },
                h.description
            );
        }
        out
    }
}

impl Summary {
    fn cost_line(&self) -> String {
        self.cost_usd.map_or(String::new(), |cost| {
            format!(
                "  LLM cost: ${cost:.4} ({} tokens in, {} out)\n",
                self.agent_usage.input, self.agent_usage.output
            )
        })
    }

    fn confirm_text(&self) -> String {
        match &self.confirm {
            Some(confirm) => format!("\n{}", confirm.text()),
            None if self.kept.is_empty() => String::new(),
            None => "\nnot confirmed: `confirm --ablate` re-checks the kept changes with fresh \
                     seeds\n"
                .into(),
        }
    }
}

/// The agent's tokens in all, and their cost where the price was known (None where it never was).
fn cost(records: &[Record]) -> (Tokens, Option<f64>) {
    let mut tokens = Tokens::default();
    for r in records {
        tokens += r.agent_usage;
    }
    let usd = records
        .iter()
        .filter_map(|r| r.cost_usd)
        .reduce(|a, b| a + b);
    (tokens, usd)
}

/// A score as the summary shows it, `-` for none.
fn bpb(v: Option<f64>) -> String {
    v.map_or("-".into(), |v| format!("{v:.6}"))
}

fn duration(seconds: f64) -> String {
    let s = seconds.round() as u64;
    match s {
        0..60 => format!("{seconds:.1} s"),
        60..3600 => format!("{}m {:02}s", s / 60, s % 60),
        _ => format!("{}h {:02}m", s / 3600, s % 3600 / 60),
    }
}

/// The kept changes, largest gain first.
fn kept_changes(records: &[Record]) -> Vec<KeptChange> {
    // Older records have no delta; the running best gives the same number.
    let best_after = running_best(records);
    let mut kept: Vec<KeptChange> = records
        .iter()
        .enumerate()
        .filter(|(_, r)| r.seq > 0 && r.status == Status::Keep)
        .map(|(i, r)| {
            let before = i.checked_sub(1).and_then(|j| best_after[j]);
            let delta = r.delta.or(r.val_bpb.zip(before).map(|(v, b)| v - b));
            KeptChange {
                seq: r.seq,
                description: r.description.clone(),
                val_bpb: r.val_bpb,
                test_bpb: r.test_bpb,
                gain: delta.map_or(0.0, |d| -d),
                runs: r.runs(),
            }
        })
        .collect();
    kept.sort_by(|a, b| b.gain.total_cmp(&a.gain));
    kept
}

/// Every keep with its validation and test scores, and whether the test got worse.
fn holdout_rows(records: &[Record]) -> Vec<HoldoutRow> {
    let mut holdout = Vec::new();
    let mut previous_test: Option<f64> = None;
    for r in records.iter().filter(|r| r.status == Status::Keep) {
        holdout.push(HoldoutRow {
            seq: r.seq,
            description: r.description.clone(),
            val_bpb: r.val_bpb,
            test_bpb: r.test_bpb,
            test_worse: r.test_bpb.zip(previous_test).is_some_and(|(t, p)| t > p),
        });
        previous_test = r.test_bpb.or(previous_test);
    }
    holdout
}
