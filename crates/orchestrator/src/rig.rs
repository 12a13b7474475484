//! The machinery that builds, runs and scores the agent's trainers, shared by the night and by
//! `confirm`, so that a confirmation measures exactly as the night did: the sandbox this machine
//! offers, the builder, the protected evaluator (checked against the run's pins) and the
//! executor.

use std::path::{Path, PathBuf};

use anyhow::Result;

use crate::cargo_build::Builder;
use crate::config::{Config, ExecutorKind};
use crate::executor::{Executor, Local, Slurm};
use crate::ledger::Pins;
use crate::sandbox::Sandbox;
use crate::scoring::Evaluator;

/// The builder of the trainers, in the sandbox this machine offers (refused where the settings
/// require one and there is none).
pub fn builder(cfg: &Config) -> Result<Builder> {
    let libtorch = libtorch(cfg);
    let readable = [cfg.data_dir.as_path(), &cfg.run_dir()];
    let sandbox = Sandbox::detect(cfg.sandbox, &libtorch, cfg.resources, &readable)?;
    Ok(Builder::new(sandbox, libtorch))
}

/// The executor of `cfg`, scoring with the run's protected evaluator: built from `worktree` (at
/// the base commit outside the trainer) or kept, and checked against `pinned`. Also returns what
/// the run's first record pins.
pub async fn executor(
    cfg: &Config,
    builder: &Builder,
    worktree: &Path,
    pinned: Option<&Pins>,
) -> Result<(Box<dyn Executor>, Pins)> {
    let evaluator = Evaluator::open(cfg, builder, worktree, pinned).await?;
    let pins = evaluator.pins();
    let sandbox = builder.sandbox.clone();
    let executor: Box<dyn Executor> = match cfg.executor {
        ExecutorKind::Local => Box::new(Local::new(evaluator, cfg, sandbox)?),
        ExecutorKind::Slurm => Box::new(Slurm::new(evaluator, cfg, sandbox).await?),
    };
    Ok((executor, pins))
}

/// The libtorch the builds link: `LIBTORCH`, else the checkout's `.libtorch` (a link, kept as one:
/// the path is part of cargo's fingerprint of libtorch's bindings).
fn libtorch(cfg: &Config) -> PathBuf {
    let path =
        std::env::var_os("LIBTORCH").map_or_else(|| cfg.repo.join(".libtorch"), PathBuf::from);
    std::path::absolute(&path).unwrap_or(path)
}
