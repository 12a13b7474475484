//! What the ledger records: one [`Record`] per experiment, its [`Trial`]s, the trainer's result
//! line as it printed it, and the [`Pins`] of the run's first record; the [`Pending`] experiment
//! before it is recorded. Readers of earlier records (`report`, a live page, a later night's
//! memory) read these types.

use std::fmt;

use prepare::ResultLine;
use serde::{Deserialize, Serialize};

use crate::cost::Tokens;
use crate::curve::Point;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Keep,
    Discard,
    /// It beat the best it started from, but a newer best came first and its change no longer
    /// applies there.
    Stale,
    Crash,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Keep => "keep",
            Status::Discard => "discard",
            Status::Stale => "stale",
            Status::Crash => "crash",
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Record {
    /// 0 is the unmodified baseline.
    pub seq: u64,
    pub commit: String,
    pub parent: String,
    pub status: Status,
    /// Why a crash was a crash (build failed, timed out, exit code, no result line...).
    pub reason: Option<String>,
    pub description: String,
    pub val_bpb: Option<f64>,
    pub peak_memory_mb: Option<f64>,
    /// The trainer's whole result line.
    pub result: Option<Printed>,
    pub think_seconds: f64,
    pub build_seconds: f64,
    pub run_seconds: f64,
    pub agent_tokens: u64,
    /// The agent's tokens read and written, as its LLM priced them (`cost_usd`).
    #[serde(default)]
    pub agent_usage: Tokens,
    /// What the agent's tokens cost in USD at the model's price (see `cost`); None where the
    /// price was not known.
    #[serde(default)]
    pub cost_usd: Option<f64>,
    /// The training seconds each run had (`--time-budget`, else the contract's).
    #[serde(default)]
    pub budget: Option<f64>,
    /// program.md changed since the previous experiment.
    pub program_changed: bool,
    pub finished_at: String,
    /// Every training run of this commit: the first, and more when the first was within the
    /// noise (the baseline's runs measure the noise). `val_bpb` is their mean.
    #[serde(default)]
    pub trials: Vec<Trial>,
    /// Re-runs of the best kept commit beside this one, for a comparison side by side:
    /// `best_trials[i]` ran next to `trials[i]`, with the same seed.
    #[serde(default)]
    pub best_trials: Vec<Trial>,
    /// The noise floor (standard deviation of val_bpb between runs) the decision used, or the
    /// one measured from this experiment's runs when `sigma_measured`.
    #[serde(default)]
    pub sigma: Option<f64>,
    #[serde(default)]
    pub sigma_measured: bool,
    /// The gain as judged (negative is better): the mean of the paired differences when the
    /// change ran side by side with the best, else val_bpb minus the best's.
    #[serde(default)]
    pub delta: Option<f64>,
    /// The decision rule that applied, in words.
    #[serde(default)]
    pub rule: Option<String>,
    /// Holdout: the protected score on the test split, for each new best only. Never shown to
    /// the agent.
    #[serde(default)]
    pub test_bpb: Option<f64>,
    /// Warnings for people: the trainer's own val_bpb disagrees with the protected score, a new
    /// best got worse on the test split, ...
    #[serde(default)]
    pub flags: Vec<String>,
    /// Seconds of protected evaluation, every run's and the holdout's.
    #[serde(default)]
    pub eval_seconds: f64,
    /// On the first record only: what every score of the run rests on, checked on `--resume`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pins: Option<Pins>,
    /// The kept experiment whose keep this one revoked: its trainer, re-run beside this change,
    /// was judged non-causal, so it is no longer the best and the branch went back to the keep
    /// before it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked: Option<u64>,
    /// On the first record only: where the run started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start: Option<Start>,
    /// Where its first run was stopped early, clearly worse than the best's runs there (the run,
    /// unscored, is in `trials` with its curve): a discard, never scored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stopped: Option<Stopped>,
}

/// Where a run started: the commit its branch was made at, what `--from` named (none: the
/// checkout's HEAD), and the earlier runs its memory held.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Start {
    pub commit: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    #[serde(default)]
    pub memory: Vec<String>,
}

/// Where a run was stopped early and why (see `early_stop`): the record's `stopped`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Stopped {
    /// The run's latest point when it was judged: counted seconds and steps.
    pub seconds: f64,
    pub step: u64,
    /// The share of the budget spent by then.
    pub progress: f64,
    /// The run's and the best's runs' loss, averaged over the window ending there.
    pub loss: f64,
    pub best_loss: f64,
    /// The gap the run had to exceed.
    pub threshold: f64,
    /// Whether the loss is the probe's, on fixed rows, rather than the training batches'
    /// (records from before the probe).
    #[serde(default)]
    pub probe: bool,
}

impl fmt::Display for Stopped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "stopped early at {:.0}% of the budget (step {}): {} loss {:.4} against the best's \
             {:.4}, more than {:.4} worse",
            100.0 * self.progress,
            self.step,
            if self.probe { "probe" } else { "training" },
            self.loss,
            self.best_loss,
            self.threshold
        )
    }
}

/// What a trainer printed as its result line: the line of docs/contract.md, or, from a trainer
/// that broke the contract, whatever JSON object it printed instead (its crash's evidence).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Printed {
    Line(ResultLine),
    Other(serde_json::Value),
}

impl Printed {
    pub fn line(&self) -> Option<&ResultLine> {
        match self {
            Printed::Line(line) => Some(line),
            Printed::Other(_) => None,
        }
    }

    /// The seconds the trainer counted, also from a crash's partial line: its training was spent.
    pub fn training_seconds(&self) -> Option<f64> {
        match self {
            Printed::Line(line) => Some(line.training_seconds),
            Printed::Other(json) => json.get("training_seconds")?.as_f64(),
        }
    }
}

/// The run's fixed ground, pinned in its first record: a `--resume` with another evaluator or
/// other scored data refuses to continue, as its scores would not compare.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Pins {
    /// sha256 of the protected evaluator built from the base commit.
    pub evaluator_sha256: String,
    /// sha256 of the scored data files (contract, token byte lengths, val and test splits).
    pub data_sha256: String,
    /// What the sandbox for the agent's code does on this machine, in words.
    pub sandbox: String,
}

/// One training run of an experiment's commit, scored by the protected evaluator.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Trial {
    pub seed: u64,
    /// The protected score; None when the run crashed.
    pub val_bpb: Option<f64>,
    /// What the trainer printed itself, logged beside the protected score.
    pub trainer_val_bpb: Option<f64>,
    /// The trainer's counted training time.
    pub training_seconds: f64,
    /// The trainer's wall time, start-up included.
    pub run_seconds: f64,
    /// The protected evaluation's wall time (causality probe included).
    pub eval_seconds: f64,
    /// Optimizer steps that fitted in the budget (the trainer's result line): on a wall-clock
    /// budget they move the score as much as a change can, so every comparison shows them.
    #[serde(default)]
    pub num_steps: Option<u64>,
    /// The run's progress as the trainer reported it while training (absent in older records).
    #[serde(default)]
    pub curve: Vec<Point>,
}

impl Record {
    /// A record with every optional part empty, for tests to fill in.
    #[cfg(test)]
    pub fn sample(seq: u64, status: Status, val_bpb: Option<f64>) -> Record {
        Record {
            commit: format!("{seq:040}"),
            description: format!("change {seq}"),
            val_bpb,
            ..Record::new(seq, status)
        }
    }

    /// Experiment `seq`'s record with nothing measured yet, for the rest to be filled in.
    pub fn new(seq: u64, status: Status) -> Record {
        Record {
            seq,
            commit: String::new(),
            parent: String::new(),
            status,
            reason: None,
            description: String::new(),
            val_bpb: None,
            peak_memory_mb: None,
            result: None,
            think_seconds: 0.0,
            build_seconds: 0.0,
            run_seconds: 0.0,
            agent_tokens: 0,
            agent_usage: Tokens::default(),
            cost_usd: None,
            budget: None,
            program_changed: false,
            finished_at: String::new(),
            trials: Vec::new(),
            best_trials: Vec::new(),
            sigma: None,
            sigma_measured: false,
            delta: None,
            rule: None,
            test_bpb: None,
            flags: Vec::new(),
            eval_seconds: 0.0,
            pins: None,
            revoked: None,
            start: None,
            stopped: None,
        }
    }

    /// One line for people and the agent: number, status, score, why it crashed, what changed.
    pub fn summary(&self) -> String {
        let bpb = self.val_bpb.map_or("-".into(), |v| format!("{v:.6}"));
        let reason = self
            .reason
            .as_deref()
            .map(|r| format!(" ({r})"))
            .unwrap_or_default();
        format!(
            "#{} {} val_bpb {bpb}{reason}: {}",
            self.seq,
            self.status.as_str(),
            self.description
        )
    }
}

impl Record {
    /// Each run's protected score and steps in the order of pairs, the best's re-runs beside
    /// the change's, e.g. `runs: 2.544400 (64 steps) | best 2.553600 (54 steps)`; None without
    /// a run.
    pub fn runs(&self) -> Option<String> {
        let run = |t: &Trial| {
            let bpb = t.val_bpb.map_or("-".into(), |v| format!("{v:.6}"));
            match t.num_steps {
                Some(steps) => format!("{bpb} ({steps} steps)"),
                None => bpb,
            }
        };
        let runs: Vec<String> = (0..self.trials.len().max(self.best_trials.len()))
            .map(|i| {
                let change = self.trials.get(i).map(run);
                let best = self.best_trials.get(i).map(|t| format!("best {}", run(t)));
                [change, best]
                    .into_iter()
                    .flatten()
                    .collect::<Vec<_>>()
                    .join(" | ")
            })
            .collect();
        (!runs.is_empty()).then(|| format!("runs: {}", runs.join("; ")))
    }
}

/// An experiment that was committed but not yet recorded; re-run on `--resume`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Pending {
    pub seq: u64,
    pub commit: String,
    pub parent: String,
    pub description: String,
    pub think_seconds: f64,
    pub agent_tokens: u64,
    /// The tokens of `agent_tokens`, read and written.
    #[serde(default)]
    pub agent_usage: Tokens,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A record keeps what the trainer printed: the contract's line typed, anything else as it was.
    #[test]
    fn a_printed_line_reads_back_typed_or_as_it_was() {
        let line = r#"{"schema": 1, "status": "ok", "training_seconds": 2.0, "total_seconds": 3.0,
            "peak_memory_mb": 512.0, "num_steps": 9, "num_params": 100, "train_tokens": 900,
            "tokens_per_second": 450.0, "mfu_percent": null, "device": "cpu", "contract": "c",
            "val_bpb": 1.5}"#;
        let printed: Printed = serde_json::from_str(line).unwrap();
        let typed = printed.line().unwrap();
        assert_eq!((typed.num_steps, typed.claimed_bpb()), (9, Some(1.5)));
        let other: Printed = serde_json::from_str(r#"{"status": "ok", "key": ""}"#).unwrap();
        assert!(other.line().is_none());
        for printed in [printed, other] {
            let again = serde_json::to_string(&printed).unwrap();
            assert_eq!(serde_json::from_str::<Printed>(&again).unwrap(), printed);
        }
    }
}
