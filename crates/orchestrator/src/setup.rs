//! What a fresh machine lacks, done once: libtorch for the trainer, and the prepared data.

use std::path::Path;

use anyhow::{Context, Result, bail};
use prepare::pipeline::{self, Options, Source};
use prepare::{Dataset, Profile};

use crate::config::{Config, default_data_dir};
use crate::rig;

/// libtorch and the prepared data, at once.
pub async fn ensure_ready(cfg: &Config) -> Result<Dataset> {
    ensure_libtorch(cfg).await?;
    if needs_preparing(cfg)? {
        prepare_enwik8(&cfg.repo)?;
    }
    Dataset::open(&cfg.data_dir)
}

/// [`ensure_ready`], with the data prepared on a thread of its own when it is missing: that takes
/// a minute of both cores on a small machine (the tokenizer's training, the encoding), in which
/// libtorch's install when it is missing (scripts/setup.sh installs it first) and then the
/// protected evaluator's first build (one core of C++ for long stretches) run beside it. The
/// data directory exists on return (the jails bind it); the data is ready when the future
/// resolves.
pub async fn start(cfg: &Config) -> Result<impl Future<Output = Result<Dataset>> + use<>> {
    let (prepared, ready) = tokio::sync::oneshot::channel();
    if needs_preparing(cfg)? {
        std::fs::create_dir_all(&cfg.data_dir)
            .with_context(|| format!("creating {}", cfg.data_dir.display()))?;
        let repo = cfg.repo.clone();
        // A thread, not tokio's blocking pool, which the runtime waits for when it shuts down:
        // on Ctrl-C the process ends at once, and the preparation resumes from its last whole
        // file the next time.
        std::thread::spawn(move || prepared.send(prepare_enwik8(&repo)));
    } else {
        prepared.send(Ok(())).ok();
    }
    ensure_libtorch(cfg).await?;
    let data_dir = cfg.data_dir.clone();
    Ok(async move {
        ready
            .await
            .context("the data's preparation ended without a result")??;
        Dataset::open(&data_dir)
    })
}

/// Runs scripts/setup-libtorch.sh when the libtorch the builds link is the checkout's `.libtorch`
/// and it is missing (`cargo run` sets `LIBTORCH` to it from .cargo/config.toml, present or not);
/// stopped with the orchestrator (Ctrl-C while it downloads).
async fn ensure_libtorch(cfg: &Config) -> Result<()> {
    let libtorch = rig::libtorch(cfg);
    if libtorch.join("lib").is_dir() {
        return Ok(());
    }
    let checkouts = cfg.repo.join(".libtorch");
    if libtorch != std::path::absolute(&checkouts).unwrap_or(checkouts) {
        bail!(
            "LIBTORCH is {}, which holds no lib/: point it at a libtorch 2.11.0, or unset it to \
             have scripts/setup-libtorch.sh set up .libtorch",
            libtorch.display()
        );
    }
    let script = cfg.repo.join("scripts/setup-libtorch.sh");
    let status = tokio::process::Command::new("bash")
        .arg(&script)
        .kill_on_drop(true)
        .status()
        .await
        .with_context(|| format!("running {}", script.display()))?;
    if !status.success() {
        bail!("{} failed; see its output above", script.display());
    }
    Ok(())
}

/// Whether the default data set is still to be prepared; an error for other data directories,
/// which the person prepares.
fn needs_preparing(cfg: &Config) -> Result<bool> {
    if cfg.data_dir.join("contract.json").exists() {
        return Ok(false);
    }
    if cfg.data_dir != default_data_dir(&cfg.repo) {
        bail!(
            "no prepared data in {}; prepare it with `cargo run --release -p prepare -- --data-dir ...`",
            cfg.data_dir.display()
        );
    }
    Ok(true)
}

fn prepare_enwik8(repo: &Path) -> Result<()> {
    eprintln!("preparing enwik8 (once: download, tokenizer, tokens; about a minute on 2 cores)...");
    let summary = pipeline::run(&Options {
        source: Source::Enwik8 {
            download_dir: repo.join("data").join("download"),
        },
        data_dir: default_data_dir(repo),
        vocab_size: 8192,
        profile: Profile::detect(),
        seq_len: None,
        eval_bytes: None,
        time_budget_s: 300.0,
    })?;
    eprintln!("{summary}");
    Ok(())
}
