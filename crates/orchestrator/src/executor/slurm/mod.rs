//! The executor for a Slurm cluster (`--executor slurm`): each trial is one batch job that runs
//! the trainer in its jail and then the protected evaluator in its own, on whichever node Slurm
//! picks. The jails' command lines are built here, by the same code as [`Local`]'s, and written
//! into the job's script; the job leaves its results in its directory under `runs/<tag>/slurm/`,
//! on the filesystem the nodes share with this machine, and the orchestrator reads them back.
//! Slurm itself only says where a job is (queued, running, gone) and why one that left no results
//! ended (time limit, cancelled, node failure). docs/slurm.md has the cluster's side.
//!
//! What a trial's job leaves in `runs/<tag>/slurm/<seq>.<index>/`: `job.sh`, its script; `stdout`,
//! the end of the trainer's stdout (its result line; its stdout and stderr also go to the trial's
//! log, Slurm's `--output`); `model.pt`, the exported model; `verdict`, the evaluator's verdict,
//! written through its `--result-fd` into a file that no jail sees; `evaluator.stderr`; and, last,
//! `done`, the exit statuses and times. The evaluator's and the data's hashes are checked before
//! a job is submitted and again before its verdict is believed.
//!
//! The job's id is written to the run's handle file right after `sbatch`, so that a `--resume`
//! after the orchestrator was killed re-attaches to a job still queued or running, or takes the
//! results of one that finished meanwhile, instead of submitting it again.
//!
//! [`Local`]: super::Local
//!
//! The parts: [`cli`] (Slurm's commands and its words for a job's state), [`script`] (the job's
//! script), [`files`] (what a job leaves behind, and the outcome read from it), [`probe`] (the
//! check at start), [`follow`] (a job followed to its end, or re-attached after a restart).

mod cli;
mod files;
mod follow;
mod probe;
mod script;

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use prepare::{Profile, Split};

use self::cli::{CLIENTS, State, on_path, scancel};
use self::files::{Handle, note, timing, unix_now};
use self::follow::{Ended, Following, POLL};
use super::trial::{MODEL_FILE, Trainers, stopped_run};
use super::{Crash, Executor, Job, Outcome, Running};
use crate::Stop;
use crate::config::Config;
use crate::early_stop::Follower;
use crate::process::bound_log;
use crate::progress::Progress;
use crate::run_dir::RunDir;
use crate::sandbox::Sandbox;
use crate::scoring::{Evaluator, Score, ScoreError};

pub struct Slurm {
    evaluator: Evaluator,
    trainers: Trainers,
    /// `runs/<tag>/`, whose `slurm/` holds the jobs' scripts and results, shared with the nodes.
    run_dir: RunDir,
    tag: String,
    /// What every job is submitted with: ours, then `[slurm]`'s partition and account; its
    /// `extra` options come last, after the GPU a trial asks for (`--gres`).
    options: Vec<String>,
    gres: Option<String>,
    extra: Vec<String>,
    /// This machine's `PATH`, which the scripts run with (the nodes are assumed to be set up
    /// alike: bubblewrap and coreutils where they are here).
    path: String,
}

impl Slurm {
    /// Checks that this machine can submit jobs, and that a job sees the run directory: a probe
    /// job reads a random token from it and writes it back. Its submission-to-start latency is
    /// printed.
    pub async fn new(evaluator: Evaluator, cfg: &Config, sandbox: Sandbox) -> Result<Slurm> {
        let missing: Vec<&str> = CLIENTS.into_iter().filter(|c| !on_path(c)).collect();
        if !missing.is_empty() {
            bail!(
                "--executor slurm needs the Slurm clients {} on this machine, and {} missing: run \
                 the orchestrator on a submit host of the cluster (docs/slurm.md), or start a \
                 local test cluster with: eval \"$(scripts/slurm-local.sh start)\"",
                CLIENTS.join(", "),
                missing.join(", ")
            );
        }
        let sandbox = sandbox.for_nodes();
        let dir = cfg.run_dir.slurm_dir();
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let mut options: Vec<String> = [
            // The orchestrator's environment (its API key among it) stays here: the scripts
            // set what they run with themselves.
            "--export=NONE",
            // A job re-run by Slurm after a node failure would write over its own results.
            "--no-requeue",
            // The trainer's stdout reaches the log through `tee -a` beside Slurm's own writes.
            "--open-mode=append",
            "--parsable",
        ]
        .map(String::from)
        .into();
        let s = &cfg.settings.slurm();
        let gres = s
            .gres
            .clone()
            .or((cfg.device == Profile::Gpu).then(|| "gpu:1".into()))
            .filter(|g| !g.is_empty());
        options.extend(s.partition.as_ref().map(|p| format!("--partition={p}")));
        options.extend(s.account.as_ref().map(|a| format!("--account={a}")));
        let slurm = Slurm {
            evaluator: evaluator.for_nodes(),
            trainers: Trainers::new(cfg, sandbox, None)?,
            run_dir: cfg.run_dir.clone(),
            tag: cfg.tag.clone(),
            options,
            gres,
            extra: s.extra.clone(),
            path: std::env::var("PATH").unwrap_or_else(|_| "/usr/bin:/bin".into()),
        };
        slurm.probe().await?;
        Ok(slurm)
    }

    async fn train_and_score(
        &self,
        job: &Job,
        stop: &mut Stop,
        progress: &Progress,
    ) -> Result<Outcome> {
        let dir = self.run_dir.slurm_trial(job.seq, job.index);
        let handle = match self.attach(job, &dir, progress).await? {
            Some(handle) => handle,
            None => self.submit(job, &dir, progress).await?,
        };
        let mut follower = Follower::new(job.early_stop.clone());
        let following = Following::new(progress, &job.log, &mut follower);
        let ended = self.follow(&handle, Some(stop), Some(following)).await?;
        bound_log(&job.log).ok();
        let curve = follower.into_curve();
        match ended {
            Ended::Interrupted => Ok(Outcome::Interrupted),
            Ended::Stopped(stopped) => {
                note(&job.log, &format!("orchestrator: {stopped}"));
                // Without the job's `done` file its wall time is unknown: the training counted
                // until the stop stands in for it.
                Ok(stopped_run(job, stopped, curve, stopped.seconds))
            }
            Ended::Gone(why) => {
                note(&job.log, &format!("orchestrator: {why}"));
                Ok(Outcome::Failed {
                    failure: Crash::JobGone(why).into(),
                    result: None,
                })
            }
            Ended::Done(done) => {
                note(&job.log, &timing(&handle, &done));
                self.outcome(job, &dir, &done, curve)
            }
        }
    }

    /// Submits `job`: a fresh directory with a copy of its trainer, its script, and the job id
    /// written to its handle file at once.
    async fn submit(&self, job: &Job, dir: &Path, progress: &Progress) -> Result<Handle> {
        if let Err(e) = self.evaluator.check() {
            bail!(e);
        }
        std::fs::remove_dir_all(dir).ok();
        let export = dir.join("export");
        std::fs::create_dir_all(&export)
            .with_context(|| format!("creating {}", export.display()))?;
        // The job's own copy: cargo may rebuild the original while the job waits in the queue.
        let copy = dir.join("train");
        prepare::atomic::copy(&job.binary, &copy)?;
        if let Some(logs) = job.log.parent() {
            std::fs::create_dir_all(logs)?;
        }
        std::fs::File::create(&job.log)
            .with_context(|| format!("creating {}", job.log.display()))?;
        let trainer = self.trainers.command(job, &copy, &export, None);
        let model = dir.join(MODEL_FILE);
        let evaluator = self.evaluator.command(&model, Split::Val, 3);
        let script = self.trial_script(job, dir, &trainer, &evaluator)?;
        let limit = job.limits.train + job.limits.eval;
        let submitted = unix_now();
        let id = self
            .sbatch(dir, &script, &self.job_name(job), limit, &job.log, true)
            .await?;
        let handle = Handle {
            id,
            dir: dir.to_path_buf(),
            submitted: Some(submitted),
        };
        handle.write(&job.handle)?;
        self.journal(id, &format!("{}.{}", job.seq, job.index));
        progress.println(&format!(
            "slurm | experiment {} run {}: job {id} submitted ({})",
            job.seq,
            job.index,
            dir.join("job.sh").display()
        ));
        Ok(handle)
    }
}

impl Executor for Slurm {
    fn run<'a>(
        &'a self,
        job: &'a Job,
        stop: &'a mut Stop,
        progress: &'a Progress,
    ) -> Running<'a, Result<Outcome>> {
        Box::pin(self.train_and_score(job, stop, progress))
    }

    /// Cancels the job if it is still queued or running, and removes the handle and the big
    /// files of its directory (the trainer's copy, the model); the small ones (script, result
    /// line, verdict, times) stay for whoever looks into a trial later.
    fn abandon<'a>(&'a self, handle: &'a Path) -> Running<'a, Result<()>> {
        Box::pin(async move {
            if let Some(h) = Handle::read(handle) {
                let active = |state: &State| matches!(state, State::Queued(_) | State::Active);
                if active(&self.state(h.id).await?)
                    && self
                        .name_of(h.id)
                        .await
                        .is_some_and(|n| n.starts_with(&format!("autoresearch-{}-", self.tag)))
                {
                    scancel(h.id).await?;
                    // Its script must not write into the directory once it is cleaned.
                    let waited = Instant::now();
                    while active(&self.state(h.id).await?)
                        && waited.elapsed() < Duration::from_secs(15)
                    {
                        tokio::time::sleep(POLL).await;
                    }
                }
                if h.dir.starts_with(self.run_dir.slurm_dir()) {
                    std::fs::remove_file(h.dir.join("train")).ok();
                    std::fs::remove_file(h.dir.join(MODEL_FILE)).ok();
                    std::fs::remove_dir_all(h.dir.join("export")).ok();
                }
            }
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
        Box::pin(self.holdout_job(model, limit))
    }
}
