//! The machinery that builds, runs and scores the agent's trainers, shared by the night and by
//! `confirm`, so that a confirmation measures exactly as the night did: the sandbox this machine
//! offers, the builder, the protected evaluator (checked against the run's pins) and the
//! executor.

use std::path::{Path, PathBuf};

use anyhow::Result;
use prepare::Dataset;

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
    let readable = [cfg.data_dir.as_path(), cfg.run_dir.path()];
    let sandbox = Sandbox::detect(cfg.settings.sandbox(), &libtorch, cfg.resources, &readable)?;
    Ok(Builder::new(sandbox, libtorch))
}

/// The protected evaluator (built from `worktree` before the agent changes anything, from files
/// checked to be the base commit's, or checked against the first record's `pinned` hashes) and
/// the executor that runs trials with it on `data` (built while the data is still being
/// prepared); also what the run's first record pins, and the data.
pub async fn executor(
    cfg: &Config,
    builder: &Builder,
    worktree: &Path,
    pinned: Option<Option<Pins>>,
    data: impl Future<Output = Result<Dataset>>,
) -> Result<(Box<dyn Executor>, Pins, Dataset)> {
    if pinned.as_ref().is_some_and(Option::is_none) {
        eprintln!(
            "note: this run's first record pins no evaluator or data hashes (it predates \
             them); they are not checked on this resume"
        );
    }
    let pinned = pinned.flatten();
    let (evaluator, data) = Evaluator::open(cfg, builder, worktree, pinned.as_ref(), data).await?;
    let pins = evaluator.pins();
    let sandbox = builder.sandbox.clone();
    let executor: Box<dyn Executor> = match cfg.settings.executor() {
        ExecutorKind::Local => Box::new(Local::new(evaluator, cfg, sandbox)?),
        ExecutorKind::Slurm => Box::new(Slurm::new(evaluator, cfg, sandbox).await?),
    };
    Ok((executor, pins, data))
}

/// The libtorch the builds link: `LIBTORCH`, else the checkout's `.libtorch` (a link, kept as one:
/// the path is part of cargo's fingerprint of libtorch's bindings).
pub fn libtorch(cfg: &Config) -> PathBuf {
    let path =
        std::env::var_os("LIBTORCH").map_or_else(|| cfg.repo.join(".libtorch"), PathBuf::from);
    std::path::absolute(&path).unwrap_or(path)
}
