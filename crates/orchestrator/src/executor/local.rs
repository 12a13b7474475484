//! The executor for this machine: the trainer runs in the sandbox under the hard limit, and the
//! protected evaluator, kept aside under `runs/<tag>/bin`, scores what it exported.
//!
//! The trainer's jail: its binary, of the data only the training split, the tokenizer and the
//! contract (the scored splits are not there to read), a private `/tmp` that vanishes with it
//! (nothing carries over to the next run), and one writable directory for its export, emptied
//! after the run; no network; its processes die with it.

use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use prepare::{Profile, ResultLine, RunStatus, Split};
use serde::Deserialize;

use super::{Executor, Job, Limits, Outcome, Running, Scored, TrialFailure};
use crate::Stop;
use crate::config::Config;
use crate::curve;
use crate::ledger::Trial;
use crate::process::{Exit, libtorch, run_under_limit};
use crate::progress::Progress;
use crate::sandbox::env::threads;
use crate::sandbox::{Group, Sandbox, gib};
use crate::scoring::{Evaluator, Score, ScoreError};

pub struct Local {
    evaluator: Evaluator,
    trainers: Trainers,
    /// The trainers' copies and the exported models.
    bin_dir: PathBuf,
}

/// What a trainer's jail is made of, wherever it runs: here ([`Local`]), or on a cluster's node
/// from a job's script (the Slurm executor writes the same command line there).
#[derive(Clone)]
pub(super) struct Trainers {
    pub data_dir: PathBuf,
    /// The device the trainer is told to train on.
    pub device: Profile,
    pub sandbox: Sandbox,
    /// Its thread pools' settings, see [`threads`].
    pub threads: Vec<(&'static str, String)>,
}

/// The data files a trainer may read: what `prepare::Dataset::open` and the training loader use.
const TRAINING_FILES: [&str; 6] = [
    "contract.json",
    "source.json",
    "tokenizer.json",
    "token_bytes.bin",
    "train.tokens",
    "train.docs",
];

/// Where the trainer sees its binary, its data and its export directory.
const JAIL_TRAINER: &str = "/autoresearch/train";
const JAIL_DATA: &str = "/autoresearch/data";
const JAIL_EXPORT: &str = "/autoresearch/export";
/// The exported model's name in the export directory.
pub(super) const MODEL_FILE: &str = "model.pt";
/// What libtorch's CUDA caching allocator says when an allocation would pass the device or the
/// share of it the trainer is held to (`limits.gpu_memory_share`).
const GPU_OUT_OF_MEMORY: &str = "CUDA out of memory";

impl Local {
    /// Runs under `runs/<tag>/bin`, beside the evaluator.
    pub fn new(evaluator: Evaluator, cfg: &Config, sandbox: Sandbox) -> Result<Local> {
        let bin_dir = cfg.run_dir().join("bin");
        std::fs::create_dir_all(&bin_dir)?;
        Ok(Local {
            evaluator,
            trainers: Trainers::new(cfg, sandbox, Some(cfg.workers)),
            bin_dir,
        })
    }

    async fn train_and_score(
        &self,
        job: &Job,
        stop: &mut Stop,
        progress: &Progress,
    ) -> Result<Outcome> {
        let model = self
            .bin_dir
            .join(format!("model-{}.{}.pt", job.seq, job.index));
        std::fs::remove_file(&model).ok();
        let started = Instant::now();
        let exit = self.train(job, &model, stop, progress).await?;
        let run_seconds = started.elapsed().as_secs_f64();
        match finished(exit, &job.limits) {
            ControlFlow::Continue(result) => {
                progress.phase("scoring");
                self.score(job, result, model, run_seconds).await
            }
            ControlFlow::Break(outcome) => Ok(outcome),
        }
    }

    /// Runs a copy of the job's trainer in its jail; its exported model is moved to `model`.
    async fn train(
        &self,
        job: &Job,
        model: &Path,
        stop: &mut Stop,
        progress: &Progress,
    ) -> Result<Exit> {
        // A copy under the experiment's name: cargo may rebuild the original while it runs, and
        // a trainer that outlived a killed orchestrator may still be executing the last copy.
        let copy = self.bin_dir.join(format!("train-{}", job.seq));
        prepare::atomic::copy(&job.binary, &copy)?;
        let export = self
            .bin_dir
            .join(format!("export-{}.{}", job.seq, job.index));
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
        let mut out_of_gpu_memory = false;
        let on_stderr = |line: &str| {
            progress.trainer_line(line);
            out_of_gpu_memory |= line.contains(GPU_OUT_OF_MEMORY);
        };
        let exit = run_under_limit(
            command,
            &job.log,
            job.limits.train,
            stop,
            on_stderr,
            over_limit,
        )
        .await;
        drop(group);
        // A trainer may catch the allocator's error and go on with less; only one that failed
        // after it ran out of GPU memory for that.
        let exit = match exit {
            Ok(Exit::Exited { status, .. }) if !status.success() && out_of_gpu_memory => {
                let resources = self.trainers.sandbox.resources();
                Ok(Exit::Limited(format!(
                    "{status}: GPU out of memory (limit {})",
                    resources.describe_gpu_memory()
                )))
            }
            exit => exit,
        };
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

    /// Scores the model of a run that finished with `result`.
    async fn score(
        &self,
        job: &Job,
        result: serde_json::Value,
        model: PathBuf,
        run_seconds: f64,
    ) -> Result<Outcome> {
        let score = self
            .evaluator
            .score(&model, Split::Val, job.limits.eval, job.gpu.as_deref())
            .await;
        scored(job, result, model, run_seconds, score)
    }
}

impl Trainers {
    /// `sharing`: the trainers and evaluators that share this machine's cores (the workers), or
    /// None where they run elsewhere, see [`threads`].
    pub fn new(cfg: &Config, sandbox: Sandbox, sharing: Option<usize>) -> Trainers {
        Trainers {
            data_dir: cfg.data_dir.clone(),
            device: cfg.device,
            sandbox,
            threads: threads(sharing),
        }
    }

    /// `binary` (the job's trainer, copied) in its jail, exporting its model into `export`, in
    /// `group` where there is one.
    pub fn command(
        &self,
        job: &Job,
        binary: &Path,
        export: &Path,
        group: Option<&Group>,
    ) -> tokio::process::Command {
        let mut jail = self.sandbox.jail();
        if let Some(group) = group {
            jail.join(group);
        }
        jail.file_size_limit(self.sandbox.resources().export_bytes);
        let trainer = jail.read_as(binary, Path::new(JAIL_TRAINER));
        let data = jail.read_files_as(&self.data_dir, &TRAINING_FILES, Path::new(JAIL_DATA));
        let export_seen = jail.write_as(export, Path::new(JAIL_EXPORT));
        jail.chdir(Path::new("/tmp"));
        jail.env("HOME", "/tmp");
        jail.env(prepare::DATA_ENV, data.display().to_string());
        jail.env(prepare::SEED_ENV, job.seed.to_string());
        jail.env(prepare::TIME_BUDGET_ENV, job.budget.to_string());
        jail.env(prepare::DEVICE_ENV, self.device.device());
        for (name, value) in &self.threads {
            jail.env(name, value);
        }
        if let Some(gpu) = &job.gpu {
            jail.env("CUDA_VISIBLE_DEVICES", gpu);
            jail.gpus(gpu);
        }
        let model_seen = export_seen.join(MODEL_FILE);
        jail.env(prepare::EXPORT_ENV, model_seen.display().to_string());
        let mut command = jail.command(&trainer, &[]);
        libtorch(&mut command);
        command
    }
}

/// The outcome of a run that finished with `result` and whose model the protected evaluator
/// judged (`score`): a tampered evaluator or data stops the run; otherwise it is scored, or why
/// not.
pub(super) fn scored(
    job: &Job,
    result: serde_json::Value,
    model: PathBuf,
    run_seconds: f64,
    score: Result<Score, ScoreError>,
) -> Result<Outcome> {
    let unscored = |failure, result| {
        Ok(Outcome::Failed {
            failure,
            result: Some(result),
        })
    };
    let score = match score {
        Ok(score) => score,
        Err(ScoreError::Tampered(why)) => bail!(why),
        Err(ScoreError::Failed(why)) => return unscored(TrialFailure::Unscored(why), result),
    };
    if let Some(op) = score.refused {
        return unscored(TrialFailure::Refused(op), result);
    }
    if !score.causal {
        return unscored(TrialFailure::NonCausal(score.probe_max_diff), result);
    }
    let Some(bpb) = score.bpb else {
        let why = "the model's losses are not finite".to_string();
        return unscored(TrialFailure::Unscored(why), result);
    };
    Ok(Outcome::Scored(Scored {
        trial: Trial {
            seed: job.seed,
            val_bpb: Some(bpb),
            trainer_val_bpb: result["val_bpb"].as_f64(),
            training_seconds: result["training_seconds"].as_f64().unwrap_or(0.0),
            run_seconds,
            eval_seconds: score.seconds,
            num_steps: result["num_steps"].as_u64(),
            curve: curve::parse(&String::from_utf8_lossy(
                &std::fs::read(&job.log).unwrap_or_default(),
            )),
        },
        result,
        model,
    }))
}

/// The result line of a trainer that finished well (exit 0, a result line as docs/contract.md
/// has it, status `ok`), to be scored; else the outcome that ends the job. The trainer prints no
/// val_bpb: only the evaluator scores. A trainer killed at `limits.train` ran over its budget
/// once the budget is measured (see [`Limits`]).
pub(super) fn finished(exit: Exit, limits: &Limits) -> ControlFlow<Outcome, serde_json::Value> {
    let crashed = |reason: String, result| {
        ControlFlow::Break(Outcome::Failed {
            failure: TrialFailure::Crashed(reason),
            result,
        })
    };
    let (status, result) = match exit {
        Exit::Interrupted => return ControlFlow::Break(Outcome::Interrupted),
        Exit::TimedOut(_) => return crashed(limits.trainer_killed(), None),
        Exit::Limited(reason) => return crashed(reason, None),
        Exit::Exited { status, result } => (status, result),
    };
    let Some(result) = result else {
        return crashed(format!("no result line ({status})"), None);
    };
    let line = match ResultLine::deserialize(&result) {
        Ok(line) => line,
        Err(e) => {
            return crashed(
                format!("{status}, result line not as docs/contract.md has it: {e}"),
                Some(result),
            );
        }
    };
    if !status.success() {
        crashed(format!("{status}, status {}", line.status), Some(result))
    } else if line.status != RunStatus::Ok {
        crashed(format!("status {}", line.status), Some(result))
    } else {
        ControlFlow::Continue(result)
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
        gpu: Option<&'a str>,
    ) -> Running<'a, Result<Score, ScoreError>> {
        Box::pin(self.evaluator.score(model, Split::Test, limit, gpu))
    }
}
