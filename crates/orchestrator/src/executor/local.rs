//! The executor for this machine: the trainer runs in the sandbox under the hard limit, and the
//! protected evaluator, kept aside under `runs/<tag>/bin`, scores what it exported.
//!
//! The trainer's jail: its binary, of the data only the training split, the tokenizer and the
//! contract (the scored splits are not there to read), a private `/tmp` that vanishes with it
//! (nothing carries over to the next run), and one writable directory for its export, emptied
//! after the run; no network; its processes die with it.

use std::ops::ControlFlow;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Result;
use prepare::Split;

use super::trial::{MODEL_FILE, Trainers, finished, scored};
use super::{Executor, Job, Outcome, Running};
use crate::Stop;
use crate::config::Config;
use crate::early_stop::Follower;
use crate::ledger::Stopped;
use crate::process::{Exit, run_under_limit};
use crate::progress::Progress;
use crate::run_dir::RunDir;
use crate::sandbox::{Sandbox, gib};
use crate::scoring::{Evaluator, Score, ScoreError};

pub struct Local {
    evaluator: Evaluator,
    trainers: Trainers,
    /// Where the trainers' copies and the exported models go.
    run_dir: RunDir,
}

impl Local {
    /// Runs under `runs/<tag>/bin`, beside the evaluator.
    pub fn new(evaluator: Evaluator, cfg: &Config, sandbox: Sandbox) -> Result<Local> {
        std::fs::create_dir_all(cfg.run_dir.bin_dir())?;
        Ok(Local {
            evaluator,
            trainers: Trainers::new(cfg, sandbox, Some(cfg.settings.workers()))?,
            run_dir: cfg.run_dir.clone(),
        })
    }

    async fn train_and_score(
        &self,
        job: &Job,
        stop: &mut Stop,
        progress: &Progress,
    ) -> Result<Outcome> {
        let model = self.run_dir.model(job.seq, job.index);
        std::fs::remove_file(&model).ok();
        let started = Instant::now();
        let mut follower = Follower::new(job.early_stop.clone());
        let exit = self
            .train(job, &model, &mut follower, stop, progress)
            .await?;
        let run_seconds = started.elapsed().as_secs_f64();
        match finished(exit, job, follower.into_curve(), run_seconds) {
            ControlFlow::Continue(run) => {
                progress.phase("scoring");
                let score = self
                    .evaluator
                    .score(&model, Split::Val, job.limits.eval)
                    .await;
                scored(job, run, model, score)
            }
            ControlFlow::Break(outcome) => Ok(outcome),
        }
    }

    /// Runs a copy of the job's trainer in its jail, followed by `follower`; its exported model is
    /// moved to `model`.
    async fn train(
        &self,
        job: &Job,
        model: &Path,
        follower: &mut Follower,
        stop: &mut Stop,
        progress: &Progress,
    ) -> Result<Exit<Stopped>> {
        // A copy under the experiment's name: cargo may rebuild the original while it runs, and
        // a trainer that outlived a killed orchestrator may still be executing the last copy.
        let copy = self.run_dir.trainer_copy(job.seq);
        prepare::atomic::copy(&job.binary, &copy)?;
        let export = self.run_dir.export(job.seq, job.index);
        std::fs::remove_dir_all(&export).ok();
        std::fs::create_dir_all(&export)?;
        let group = self.trainers.sandbox.group()?;
        let command = self.trainers.command(job, &copy, &export, group.as_ref());
        let export_limit = self.trainers.sandbox.resources().export_bytes;
        let over_limit = || {
            group.as_ref().and_then(|g| g.exceeded()).or_else(|| {
                (dir_size(&export) >= export_limit)
                    .then(|| format!("export over {}", gib(export_limit)))
            })
        };
        let exit = run_under_limit(
            command,
            &job.log,
            job.limits.train,
            stop,
            |line| {
                progress.trainer_line(line);
                follower.line(line)
            },
            over_limit,
        )
        .await;
        drop(group);
        std::fs::remove_file(&copy).ok();
        // Only a plain file is taken (not a link the trainer planted); whatever else it left
        // there goes.
        let exported = export.join(MODEL_FILE);
        if std::fs::symlink_metadata(&exported).is_ok_and(|m| m.is_file()) {
            std::fs::rename(&exported, model)?;
        }
        std::fs::remove_dir_all(&export).ok();
        exit
    }
}

/// The bytes of the files under `dir` (not following links); what cannot be read counts 0.
fn dir_size(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|entry| match entry.file_type() {
            Ok(kind) if kind.is_dir() => dir_size(&entry.path()),
            _ => entry.metadata().map_or(0, |m| m.len()),
        })
        .sum()
}

impl Executor for Local {
    fn run<'a>(
        &'a self,
        job: &'a Job,
        stop: &'a mut Stop,
        progress: &'a Progress,
    ) -> Running<'a, Result<Outcome>> {
        Box::pin(self.train_and_score(job, stop, progress))
    }

    /// Its trainers die with the orchestrator, so a handle names nothing that still runs.
    fn abandon<'a>(&'a self, handle: &'a Path) -> Running<'a, Result<()>> {
        Box::pin(async move {
            match std::fs::remove_file(handle) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e.into()),
                _ => Ok(()),
            }
        })
    }

    fn holdout<'a>(
        &'a self,
        model: &'a Path,
        limit: Duration,
    ) -> Running<'a, Result<Score, ScoreError>> {
        Box::pin(self.evaluator.score(model, Split::Test, limit))
    }
}
