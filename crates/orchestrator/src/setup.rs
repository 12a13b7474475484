//! What a fresh machine lacks, done once: libtorch for the trainer, and the prepared data.

use std::process::Command;

use anyhow::{Context, Result, bail};
use prepare::pipeline::{self, Options, Source};
use prepare::{Dataset, Profile};

use crate::config::Config;

pub fn ensure_ready(cfg: &Config) -> Result<Dataset> {
    if !cfg.repo.join(".libtorch/lib").is_dir() && std::env::var_os("LIBTORCH").is_none() {
        let script = cfg.repo.join("scripts/setup-libtorch.sh");
        let status = Command::new("bash")
            .arg(&script)
            .status()
            .with_context(|| format!("running {}", script.display()))?;
        if !status.success() {
            bail!("{} failed; see its output above", script.display());
        }
    }
    if !cfg.data_dir.join("contract.json").exists() {
        let default = cfg.repo.join("data").join("enwik8");
        if cfg.data_dir != default {
            bail!(
                "no prepared data in {}; prepare it with `cargo run --release -p prepare -- --data-dir ...`",
                cfg.data_dir.display()
            );
        }
        eprintln!("preparing enwik8 (once: download, tokenizer, tokens; about a minute)...");
        let summary = pipeline::run(&Options {
            source: Source::Enwik8 {
                download_dir: cfg.repo.join("data").join("download"),
            },
            data_dir: default,
            vocab_size: 8192,
            profile: Profile::detect(),
            seq_len: None,
            eval_bytes: None,
            time_budget_s: 300.0,
        })?;
        eprintln!("{summary}");
    }
    Dataset::open(&cfg.data_dir)
}
