//! The loop: each worker runs one experiment after another through the same phases, each in its
//! own module and each handing the next a named result. The workers are futures of one task that
//! share the session; only the trainers' runs, the agents' thinking and the builds (one at a time)
//! overlap. Every step is ordered so that a kill at any moment loses nothing and `--resume`
//! records nothing twice.

mod build;
mod guard;
mod holdout;
mod propose;
mod record;
mod session;
mod trials;
mod watch;

use anyhow::Result;

use crate::config::Config;
use crate::decide;
use crate::executor::{Scored, StoppedRun, TrialFailure};
use crate::git::EDITABLE;
use crate::ledger::{Pending, Printed, Status, Trial};
use crate::notify::{Alerts, End, Event, Notifier};
use crate::progress::Progress;
use build::Built;
use session::{Session, Worker};

/// The night of `cfg`, and the alert of its end however it ends.
pub async fn run(cfg: Config) -> Result<()> {
    // An address other machines reach without --public, or a port in use, stops the run
    // before anything starts.
    let dashboard = match cfg.settings.dashboard.as_deref() {
        Some(addr) => {
            let addr = crate::dashboard::address(addr, cfg.settings.public)?;
            let run = crate::dashboard::Run::new(&cfg.repo, &cfg.tag);
            Some(crate::dashboard::start(addr, run).await?)
        }
        None => None,
    };
    let progress = Progress::new();
    let run_dir = cfg.run_dir.clone();
    let alerts = Alerts::of(&cfg.settings);
    let (notifier, sending) =
        Notifier::start(&alerts, &cfg.tag, &cfg.repo, &run_dir, progress.clone())?;
    let night = night(cfg, progress, notifier.clone()).await;
    notifier.send(&Event::night_end(&run_dir, &night));
    drop(notifier);
    sending.wait().await;
    if let Some(dashboard) = dashboard {
        dashboard.close().await;
    }
    night.map(drop)
}

async fn night(cfg: Config, progress: Progress, notifier: Notifier) -> Result<End> {
    let alerts = cfg.settings.notify.is_some();
    let Some((session, workers)) = Session::start(cfg, progress, notifier).await? else {
        eprintln!("stopped before the first experiment; nothing was recorded");
        return Ok(End::Stopped);
    };
    let workers = futures::future::try_join_all(workers.into_iter().map(|w| work(&session, w)));
    tokio::select! {
        // The first error ends the run: the other workers' experiments stay pending for --resume.
        done = workers => done.map(drop)?,
        never = session.watch_idle(), if alerts => match never {},
    }
    Ok(session.stopped())
}

/// One worker's experiments, until the run stops.
async fn work(s: &Session, mut w: Worker) -> Result<()> {
    let mut again = None;
    while !w.stop.requested() {
        let next = match again.take() {
            Some(next) => next,
            None => match s.next(&w).await {
                Some(next) => next,
                None => return Ok(()),
            },
        };
        let Some(mut experiment) = propose::next(s, &mut w, &next).await? else {
            again = Some(next); // the proposal changed nothing: the same number, another try
            continue;
        };
        let trials = match guard::before_build(s, &w, &experiment)? {
            Some(decision) => Trials::not_run(decision),
            None => match build::with_repairs(s, &mut w, &mut experiment).await? {
                Built::Failed(failure) => Trials::not_run(Decision::Crash(failure)),
                Built::Binary(binary) => {
                    match trials::run(s, &mut w, &experiment.pending, &binary).await? {
                        Some(trials) => trials,
                        None => return Ok(()), // Ctrl-C: the pending experiment is re-run on --resume
                    }
                }
            },
        };
        let trials = guard::after_run(s, &w, experiment.pending.seq, trials).await?;
        if w.stop.requested() {
            return Ok(());
        }
        let holdout = holdout::score(s, &w, experiment.pending.seq, &trials).await?;
        record::append(s, &mut w, experiment, trials, holdout).await?;
    }
    Ok(())
}

/// One experiment as the phases hand it on: the committed change and what was measured of it.
struct Experiment {
    /// Also on disk until the experiment is recorded, so that `--resume` picks it up again.
    pending: Pending,
    /// program.md changed since the previous experiment.
    program_changed: bool,
    build_seconds: f64,
    /// Why the agent's proposal ended without a change to run (see `agent::Proposal`).
    unfinished: Option<String>,
}

/// The runs of one experiment and what they decided.
struct Trials {
    pub decision: Decision,
    /// The change's scored runs, in order.
    pub runs: Vec<Scored>,
    /// The best's re-runs beside them, `best_runs[i]` paired with `runs[i]`.
    pub best_runs: Vec<Trial>,
    /// The first run's result line, also when that run then failed.
    pub result: Option<Printed>,
    /// Warnings for people.
    pub flags: Vec<String>,
    /// The noise floor these runs measured: the baseline's, or a new best's far from where the
    /// noise was last measured.
    pub measured: Option<f64>,
    /// The gain as judged (negative is better), see [`decide::Evidence::delta`].
    pub delta: Option<f64>,
    /// Wall time of the runs, scoring included.
    pub seconds: f64,
    /// The best's commit when the first run's score came back, which the runs were judged
    /// against; None for the baseline and changes that never ran.
    pub against: Option<String>,
    /// The rule by which the change beat its own parent, when the best had already moved on from
    /// that parent by the time its score came back and the change did not beat the new best.
    pub beat_parent: Option<String>,
    /// The best whose re-run beside the change was judged non-causal: its keep is revoked.
    pub revoked: Option<u64>,
    /// The change's first run, when it was stopped early.
    pub stopped: Option<StoppedRun>,
}

impl Trials {
    /// An experiment that ended before any run.
    pub fn not_run(decision: Decision) -> Trials {
        Trials {
            decision,
            runs: Vec::new(),
            best_runs: Vec::new(),
            result: None,
            flags: Vec::new(),
            measured: None,
            delta: None,
            seconds: 0.0,
            against: None,
            beat_parent: None,
            revoked: None,
            stopped: None,
        }
    }

    /// The mean protected score, unless the experiment crashed.
    pub fn val_bpb(&self) -> Option<f64> {
        let scores: Vec<f64> = self.runs.iter().filter_map(|r| r.trial.val_bpb).collect();
        let decided = !matches!(self.decision, Decision::Crash(_));
        (decided && !scores.is_empty()).then(|| decide::mean(&scores))
    }
}

/// How an experiment ends, with the rule or the failure that decided it.
enum Decision {
    Keep(String),
    Discard(String),
    /// It beat the best it started from, but the best moved on meanwhile and its change no
    /// longer applies there.
    Stale(String),
    Crash(Failure),
}

impl Decision {
    /// The record's status, the reason of a crash, and the rule that decided a keep or discard.
    fn into_parts(self) -> (Status, Option<String>, Option<String>) {
        match self {
            Decision::Keep(rule) => (Status::Keep, None, Some(rule)),
            Decision::Discard(rule) => (Status::Discard, None, Some(rule)),
            Decision::Stale(rule) => (Status::Stale, None, Some(rule)),
            Decision::Crash(failure) => (Status::Crash, Some(failure.to_string()), None),
        }
    }
}

/// Why an experiment ended without a result to compare.
#[derive(Debug, thiserror::Error)]
enum Failure {
    #[error("build failed after {repairs} repair rounds")]
    Build { repairs: u32 },
    #[error("refused: changed outside {EDITABLE}: {}", outside.join(", "))]
    Refused { outside: Vec<String> },
    #[error("breaks the trainer's rule tests (crates/train/rules.rs); see its log")]
    Rules,
    #[error("the agent's proposal did not finish: {0}")]
    Unfinished(String),
    #[error(transparent)]
    Trial(#[from] TrialFailure),
}
