//! Builds the trainer and the evaluator: `cargo build --release -p train --bin <name>
//! --message-format=json`, read with `cargo_metadata` for the binary's path and the compiler's
//! rendered errors.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use anyhow::{Context, Result};
use cargo_metadata::Message;
use cargo_metadata::diagnostic::DiagnosticLevel;

use crate::text::tail;

pub enum Build {
    Built {
        binary: PathBuf,
    },
    /// Compiler errors as rustc renders them, for the agent to repair.
    Failed {
        diagnostics: String,
    },
}

/// Builds the agent's trainer, the `train` binary.
pub async fn build_trainer(repo: &Path, target_dir: &Path) -> Result<Build> {
    build(repo, target_dir, "train").await
}

/// Builds the protected evaluator, the `evaluate` binary of the same package.
pub async fn build_evaluator(repo: &Path, target_dir: &Path) -> Result<Build> {
    build(repo, target_dir, "evaluate").await
}

async fn build(repo: &Path, target_dir: &Path, bin: &str) -> Result<Build> {
    let out =
        tokio::process::Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .args(["build", "--release", "-p", "train", "--bin", bin])
            .arg("--message-format=json")
            .current_dir(repo)
            .env("CARGO_TARGET_DIR", target_dir)
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output()
            .await
            .context("running cargo build")?;
    let mut binary = None;
    let mut errors = Vec::new();
    for message in Message::parse_stream(&out.stdout[..]) {
        match message.context("reading cargo's messages")? {
            Message::CompilerArtifact(artifact) if artifact.target.name == bin => {
                binary = artifact.executable.map(PathBuf::from).or(binary);
            }
            Message::CompilerMessage(msg) if msg.message.level == DiagnosticLevel::Error => {
                errors.push(msg.message.rendered.unwrap_or(msg.message.message));
            }
            _ => {}
        }
    }
    match binary {
        Some(binary) if out.status.success() => Ok(Build::Built { binary }),
        _ => {
            if errors.is_empty() {
                errors.push(tail(&String::from_utf8_lossy(&out.stderr), 30));
            }
            Ok(Build::Failed {
                diagnostics: errors.join("\n"),
            })
        }
    }
}
