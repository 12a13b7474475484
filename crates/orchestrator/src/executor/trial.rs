//! What every trial shares, wherever it runs: the trainer's jail ([`Trainers`]), what its exit
//! means ([`finished`]), what the protected evaluator's verdict makes of it ([`scored`]), and the
//! [`Outcome`] the loop gets back, with why a run has no score ([`TrialFailure`]).

use std::ops::ControlFlow;
use std::path::{Path, PathBuf};

use anyhow::{Result, bail};
use prepare::{Profile, ResultLine, RunStatus};
use serde::Deserialize;

use super::Job;
use super::failure::{Crash, StoppedRun, TrialFailure};
use crate::config::Config;
use crate::curve::Point;
use crate::ledger::{Printed, Stopped, Trial};
use crate::process::{Exit, libtorch};
use crate::sandbox::env::threads;
use crate::sandbox::{Group, Sandbox};
use crate::scoring::{Score, ScoreError, Unscored};

/// What came of one job.
pub enum Outcome {
    Scored(Scored),
    /// No score: the run crashed, or its model could not be scored or trusted. `result` is what
    /// the trainer printed as its result line, when it printed one.
    Failed {
        failure: TrialFailure,
        result: Option<Printed>,
    },
    /// Ctrl-C: the run was killed and must not be recorded.
    Interrupted,
}

/// A run that trained and was scored by the protected evaluator.
pub struct Scored {
    /// What the ledger records of it.
    pub trial: Trial,
    /// The trainer's result line.
    pub result: ResultLine,
    /// The exported model, kept until the experiment is decided (the holdout scores it).
    pub model: PathBuf,
}

/// The exported model's name in the export directory.
pub const MODEL_FILE: &str = "model.pt";

/// Where the trainer sees its binary, its data and its export directory.
const JAIL_TRAINER: &str = "/autoresearch/train";
const JAIL_DATA: &str = "/autoresearch/data";
const JAIL_EXPORT: &str = "/autoresearch/export";

/// What a trainer's jail is made of, wherever it runs: here ([`super::Local`]), or on a
/// cluster's node from a job's script (the Slurm executor writes the same command line there).
#[derive(Clone)]
pub struct Trainers {
    pub data_dir: PathBuf,
    /// The device the trainer is told to train on.
    pub device: Profile,
    pub sandbox: Sandbox,
    /// Its thread pools' settings, see [`threads`].
    pub threads: Vec<(&'static str, String)>,
}

impl Trainers {
    /// `sharing`: the trainers and evaluators that share this machine's cores (the workers), or
    /// None where they run elsewhere, see [`threads`].
    /// Refuses prepared data that lacks a file the trainer reads.
    pub fn new(cfg: &Config, sandbox: Sandbox, sharing: Option<usize>) -> Result<Trainers> {
        prepare::ensure_files(&cfg.data_dir, &prepare::training_files())?;
        Ok(Trainers {
            data_dir: cfg.data_dir.clone(),
            device: cfg.device,
            sandbox,
            threads: threads(sharing),
        })
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
        let files = prepare::training_files();
        let files: Vec<&str> = files.iter().map(String::as_str).collect();
        let data = jail.read_files_as(&self.data_dir, &files, Path::new(JAIL_DATA));
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

/// A run that finished well, to be scored: its result line, its curve and its wall time.
pub struct Finished {
    pub result: ResultLine,
    pub curve: Vec<Point>,
    pub run_seconds: f64,
}

/// The run of a trainer that finished well (exit 0, a result line as docs/contract.md has it,
/// status `ok`), to be scored; else the outcome that ends the job. The trainer prints no
/// val_bpb: only the evaluator scores. A trainer killed at `limits.train` ran over its budget
/// once the budget is measured (see [`super::Limits`]). `curve` is what was seen of its progress,
/// `run_seconds` its wall time.
pub fn finished(
    exit: Exit<Stopped>,
    job: &Job,
    curve: Vec<Point>,
    run_seconds: f64,
) -> ControlFlow<Outcome, Finished> {
    let limits = &job.limits;
    let crashed = |crash: Crash, result| {
        ControlFlow::Break(Outcome::Failed {
            failure: crash.into(),
            result,
        })
    };
    let (status, printed) = match exit {
        Exit::Interrupted => return ControlFlow::Break(Outcome::Interrupted),
        Exit::TimedOut => return crashed(Crash::killed(limits), None),
        Exit::Limited(why) => return crashed(Crash::Limited { why }, None),
        Exit::Stopped(stopped) => {
            return ControlFlow::Break(stopped_run(job, stopped, curve, run_seconds));
        }
        Exit::Exited { status, result } => (status, result),
    };
    let Some(printed) = printed else {
        return crashed(Crash::NoResultLine { status }, None);
    };
    let line = match ResultLine::deserialize(&printed) {
        Ok(line) => line,
        Err(e) => {
            let error = e.to_string();
            return crashed(
                Crash::Malformed { status, error },
                Some(Printed::Other(printed)),
            );
        }
    };
    let reported = line.status;
    if !status.success() {
        crashed(
            Crash::Failed { status, reported },
            Some(Printed::Line(line)),
        )
    } else if reported != RunStatus::Ok {
        crashed(Crash::NotOk { reported }, Some(Printed::Line(line)))
    } else {
        ControlFlow::Continue(Finished {
            result: line,
            curve,
            run_seconds,
        })
    }
}

/// The outcome of a run stopped early at `stopped` after `run_seconds` of wall time, having
/// shown `curve`: unscored.
pub fn stopped_run(job: &Job, stopped: Stopped, curve: Vec<Point>, run_seconds: f64) -> Outcome {
    let trial = Trial {
        seed: job.seed,
        val_bpb: None,
        trainer_val_bpb: None,
        training_seconds: stopped.seconds,
        run_seconds,
        eval_seconds: 0.0,
        num_steps: Some(stopped.step),
        curve,
    };
    Outcome::Failed {
        failure: TrialFailure::Stopped(Box::new(StoppedRun { trial, stopped })),
        result: None,
    }
}

/// The outcome of a run that finished (`run`) and whose model the protected evaluator judged
/// (`score`): a tampered evaluator or data stops the run; otherwise it is scored, or why not.
pub fn scored(
    job: &Job,
    run: Finished,
    model: PathBuf,
    score: Result<Score, ScoreError>,
) -> Result<Outcome> {
    let Finished {
        result,
        curve,
        run_seconds,
    } = run;
    let unscored = |failure: TrialFailure, result| {
        Ok(Outcome::Failed {
            failure,
            result: Some(Printed::Line(result)),
        })
    };
    let score = match score {
        Ok(score) => score,
        Err(ScoreError::Tampered(why)) => bail!(why),
        Err(ScoreError::Unscored(why)) => return unscored(why.into(), result),
    };
    if let Some(op) = score.refused {
        return unscored(TrialFailure::Refused { op }, result);
    }
    if !score.causal {
        let max_diff = score.probe_max_diff;
        return unscored(TrialFailure::NonCausal { max_diff }, result);
    }
    let Some(bpb) = score.bpb else {
        return unscored(Unscored::NotFinite.into(), result);
    };
    Ok(Outcome::Scored(Scored {
        trial: Trial {
            seed: job.seed,
            val_bpb: Some(bpb),
            trainer_val_bpb: result.claimed_bpb(),
            training_seconds: result.training_seconds,
            run_seconds,
            eval_seconds: score.seconds,
            num_steps: Some(result.num_steps),
            curve,
        },
        result,
        model,
    }))
}
