//! The loop: one experiment after another through the same phases, each in its own module and
//! each handing the next a named result. Every step is ordered so that a kill at any moment loses
//! nothing and `--resume` records nothing twice.

mod build;
mod guard;
mod holdout;
mod propose;
mod record;
mod session;
mod trials;

use anyhow::Result;

use crate::Stop;
use crate::config::Config;
use crate::executor::TrialFailure;
use crate::git::EDITABLE;
use crate::ledger::{Pending, Status};
use build::Built;
use session::Session;
use trials::Trials;

pub async fn run(cfg: Config) -> Result<()> {
    let mut session = Session::start(cfg).await?;
    let mut stop = Stop::on_ctrl_c();
    while let Some(seq) = session.next_seq(&stop) {
        let Some(mut experiment) = propose::next(&mut session, seq).await? else {
            continue; // the proposal changed nothing
        };
        let trials = match guard::before_build(&session, &experiment)? {
            Some(decision) => Trials::not_run(decision),
            None => match build::with_repairs(&mut session, &mut experiment).await? {
                Built::Failed(failure) => Trials::not_run(Decision::Crash(failure)),
                Built::Binary(binary) => {
                    match trials::run(&session, &experiment.pending, &binary, &mut stop).await? {
                        Some(trials) => trials,
                        None => break, // Ctrl-C: the pending experiment is re-run on --resume
                    }
                }
            },
        };
        let trials = guard::after_run(&session, seq, trials).await?;
        if stop.requested() {
            break;
        }
        let holdout = holdout::score(&session, &trials).await?;
        record::append(&mut session, experiment, trials, holdout)?;
    }
    session.stopped();
    Ok(())
}

/// One experiment as the phases hand it on: the committed change and what was measured of it.
struct Experiment {
    /// Also on disk until the experiment is recorded, so that `--resume` picks it up again.
    pending: Pending,
    /// program.md changed since the previous experiment.
    program_changed: bool,
    build_seconds: f64,
}

/// How an experiment ends, with the rule or the failure that decided it.
enum Decision {
    Keep(String),
    Discard(String),
    Crash(Failure),
}

impl Decision {
    /// The record's status, the reason of a crash, and the rule that decided a keep or discard.
    fn into_parts(self) -> (Status, Option<String>, Option<String>) {
        match self {
            Decision::Keep(rule) => (Status::Keep, None, Some(rule)),
            Decision::Discard(rule) => (Status::Discard, None, Some(rule)),
            Decision::Crash(failure) => (Status::Crash, Some(failure.to_string()), None),
        }
    }
}

/// Why an experiment ended without a result to compare.
#[derive(Debug, thiserror::Error)]
enum Failure {
    #[error("build failed after {0} repair rounds")]
    Build(u32),
    #[error("refused: changed outside {EDITABLE}: {0}")]
    Refused(String),
    #[error("breaks the trainer's rule tests (crates/train/src/tests.rs); see its log")]
    Rules,
    #[error(transparent)]
    Trial(#[from] TrialFailure),
}
