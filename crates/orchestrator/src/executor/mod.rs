//! Where a trial runs: the seam between the loop and the machines. The loop hands an executor a
//! [`Job`] (a built trainer, its seed, budget and limits) and gets back an [`Outcome`]: a
//! [`Scored`] run with the protected score, or why there is none. How and where the process is
//! started is the executor's business alone, chosen at start-up without touching the loop:
//! [`Local`] runs it on this machine, [`Slurm`] as a job on a cluster (`--executor slurm`). Both
//! run the same jails, built by the same code. Executors are `Send + Sync` and their futures
//! `Send`, so that several jobs can run at once on tasks of their own (workers).

mod failure;
mod limits;
mod local;
mod slurm;
mod trial;

pub use failure::{Crash, JobGone, StoppedRun, TrialFailure};
pub use limits::{Limits, Measured, Spread};
pub use local::Local;
pub use slurm::Slurm;
pub use trial::{Outcome, Scored};

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;

use crate::Stop;
use crate::early_stop::Reference;
use crate::progress::Progress;
use crate::scoring::{Score, ScoreError};

/// A boxed future, so that executors can be chosen at run time (`Box<dyn Executor>`).
pub type Running<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

pub trait Executor: Send + Sync {
    /// Trains `job` and scores the exported model on the validation split. Errors are faults of
    /// the machinery (a binary that cannot be copied, a tampered evaluator), never of the trainer.
    fn run<'a>(
        &'a self,
        job: &'a Job,
        stop: &'a mut Stop,
        progress: &'a Progress,
    ) -> Running<'a, Result<Outcome>>;

    /// Lets go of a run that will not be asked for again (its experiment was decided without
    /// it): whatever still runs for `handle` is stopped and the file removed.
    fn abandon<'a>(&'a self, handle: &'a Path) -> Running<'a, Result<()>>;

    /// Scores a model of an earlier [`Scored`] run on the test split, the holdout.
    fn holdout<'a>(
        &'a self,
        model: &'a Path,
        limit: Duration,
    ) -> Running<'a, Result<Score, ScoreError>>;
}

/// One training run of an experiment's built trainer.
pub struct Job {
    /// The trainer as cargo built it; executors run a copy, as cargo may rebuild it meanwhile.
    pub binary: PathBuf,
    /// Experiment `seq`, run `index` of it (0 first; re-runs and noise runs count up).
    pub seq: u64,
    pub index: usize,
    pub seed: u64,
    /// Training seconds, resolved once for the whole run and always passed on.
    pub budget: f64,
    pub limits: Limits,
    /// Where the trainer's stdout and stderr go.
    pub log: PathBuf,
    /// The worker's GPU (a `CUDA_VISIBLE_DEVICES` value) where the executor does not assign one.
    pub gpu: Option<String>,
    /// A file the executor may keep for this run, beside the experiment's pending record, to find
    /// the run again after a restart (a Slurm job id); removed with the pending record.
    pub handle: PathBuf,
    /// What the run is judged against while it trains, when it may be stopped early (a change's
    /// first run with `early_stop` on).
    pub early_stop: Option<Arc<Reference>>,
}
