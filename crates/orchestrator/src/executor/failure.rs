//! Why a trial has no score, in words for its record and in fields for the loop to branch on.

use std::path::PathBuf;
use std::process::ExitStatus;
use std::time::Duration;

use prepare::RunStatus;

use super::limits::{Limits, Measured};
use crate::ledger::{Stopped, Trial};
use crate::scoring::Unscored;

/// Why a job has no score.
#[derive(Debug, thiserror::Error)]
pub enum TrialFailure {
    /// Exited with an error, timed out, or printed no usable result line.
    #[error(transparent)]
    Crashed(#[from] Crash),
    /// The causality probe saw logits change with later tokens, by `max_diff`.
    #[error("non-causal")]
    NonCausal { max_diff: f64 },
    /// The exported model's graphs use operation `op`, which is not a pure tensor operation
    /// (reading files, printing, random numbers, state, custom code): it was not run.
    #[error(
        "refused: the exported model uses {op}, and the evaluator runs pure tensor operations only"
    )]
    Refused { op: String },
    /// The protected evaluator could not score the exported model.
    #[error(transparent)]
    Unscored(#[from] Unscored),
    /// Stopped early, clearly worse than the best's runs at the same point: never scored.
    #[error("{}", .0.stopped)]
    Stopped(Box<StoppedRun>),
}

/// A run stopped early: the run as far as it went (its curve, no score), and where and why.
#[derive(Debug, Clone)]
pub struct StoppedRun {
    pub trial: Trial,
    pub stopped: Stopped,
}

/// How a trainer's run ended without a model worth scoring.
#[derive(Debug, thiserror::Error)]
pub enum Crash {
    /// Killed at its limit before the baseline measured what a run takes.
    #[error("timed out after {:.0} s and was killed", limit.as_secs_f64())]
    TimedOut { limit: Duration },
    /// Killed at its limit, which the baseline's runs measured: it trained past its budget.
    #[error(
        "over budget: still running after {:.0} s, budget {:.0} s + measured start-up and export \
         {:.1} s (sd {:.1} s) with room for a loaded machine; killed",
        limit.as_secs_f64(), measured.budget, measured.overhead.mean, measured.overhead.std_dev
    )]
    OverBudget { limit: Duration, measured: Measured },
    /// It hit one of its jail's limits (memory, processes, the export's size), in the
    /// sandbox's words.
    #[error("{why}")]
    Limited { why: String },
    #[error("no result line ({status})")]
    NoResultLine { status: ExitStatus },
    #[error("{status}, result line not as docs/contract.md has it: {error}")]
    Malformed { status: ExitStatus, error: String },
    /// A non-zero exit after a result line (a diverged run exits 1).
    #[error("{status}, status {reported}")]
    Failed {
        status: ExitStatus,
        reported: RunStatus,
    },
    #[error("status {reported}")]
    NotOk { reported: RunStatus },
    /// Its cluster job ended without leaving results.
    #[error(transparent)]
    JobGone(#[from] JobGone),
}

impl Crash {
    /// Why a trainer killed at `limits.train` was killed, for its record.
    pub fn killed(limits: &Limits) -> Crash {
        let limit = limits.train;
        match limits.measured {
            Some(measured) => Crash::OverBudget { limit, measured },
            None => Crash::TimedOut { limit },
        }
    }
}

/// Why a Slurm job that left no results ended, from Slurm's records of it.
#[derive(Debug, thiserror::Error)]
pub enum JobGone {
    #[error(
        "Slurm: job {id} left no results, and Slurm no longer knows it (its records are kept \
         MinJobAge seconds, and sacct needs accounting)"
    )]
    Forgotten { id: u64 },
    /// `minutes`: the job's time limit as `N min`.
    #[error("Slurm: TIMEOUT at the job's time limit of {minutes} (job {id})")]
    Timeout { id: u64, minutes: String },
    /// `reason`: Slurm's, as `, reason R`, or nothing.
    #[error(
        "Slurm: job {id} CANCELLED outside the orchestrator (scancel or an administrator){reason}"
    )]
    Cancelled { id: u64, reason: String },
    #[error("Slurm: NODE_FAIL: node {node} failed under job {id}")]
    NodeFailed { id: u64, node: String },
    #[error(
        "Slurm: OUT_OF_MEMORY: job {id} ran out of its memory (ask for more with --mem in \
         [slurm] extra)"
    )]
    OutOfMemory { id: u64 },
    #[error(
        "Slurm: job {id} COMPLETED without leaving its results in {} (is the run directory on a \
         filesystem shared with the nodes? docs/slurm.md)",
        dir.display()
    )]
    NotShared { id: u64, dir: PathBuf },
    #[error("Slurm: job {id} {state} without a result (exit code {exit}{reason})")]
    Other {
        id: u64,
        state: String,
        exit: String,
        reason: String,
    },
}
