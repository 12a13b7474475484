//! Protected scoring: the score that is recorded comes from the `evaluate` binary, built once
//! from the run's base commit (outside the agent's directory), kept aside under the run's
//! directory, and checked against its hash before every use, together with the data it scores.
//! The trainer only exports its model; nothing the agent edits decides the number.

use std::io::Read;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use prepare::{Profile, Split};
use sha2::{Digest, Sha256};

use crate::cargo_build::{Build, build_evaluator};
use crate::config::Config;
use crate::process::libtorch_command;
use crate::text::tail;

/// What the evaluator says of one exported model on one split.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct Score {
    /// Bits per byte; None when the model is not causal or its losses are not finite.
    pub bpb: Option<f64>,
    pub causal: bool,
    pub probe_max_diff: f64,
    pub seconds: f64,
}

pub struct Evaluator {
    binary: PathBuf,
    binary_sha256: String,
    data_dir: PathBuf,
    data_sha256: String,
    /// The device it scores on, the trainer's.
    device: Profile,
}

/// The prepared files that decide a score; the training tokens do not.
const SCORED_FILES: [&str; 6] = [
    "contract.json",
    "token_bytes.bin",
    "val.tokens",
    "val.docs",
    "test.tokens",
    "test.docs",
];

impl Evaluator {
    /// Builds the evaluator from the working tree, which must be at the run's base commit, and
    /// copies it to `runs/<tag>/bin/evaluate`.
    pub async fn build(cfg: &Config) -> Result<Evaluator> {
        let built = match build_evaluator(&cfg.repo, &cfg.target_dir).await? {
            Build::Built { binary } => binary,
            Build::Failed { diagnostics } => {
                bail!(
                    "the protected evaluator (crates/train/evaluate) does not build:\n{diagnostics}"
                )
            }
        };
        let bin_dir = cfg.run_dir().join("bin");
        std::fs::create_dir_all(&bin_dir)?;
        let binary = bin_dir.join("evaluate");
        prepare::atomic::copy(&built, &binary)?;
        Ok(Evaluator {
            binary_sha256: sha256_of(std::slice::from_ref(&binary))?,
            binary,
            data_dir: cfg.data_dir.clone(),
            data_sha256: sha256_of(&SCORED_FILES.map(|f| cfg.data_dir.join(f)))?,
            device: cfg.device,
        })
    }

    /// Scores `model` on `split` under a hard time limit.
    pub async fn score(
        &self,
        model: &Path,
        split: Split,
        limit: Duration,
    ) -> Result<Score, ScoreError> {
        let unchanged = |files: &[PathBuf], sha256: &str| {
            sha256_of(files)
                .map(|s| s == sha256)
                .map_err(|e| ScoreError::Tampered(format!("{e:#}")))
        };
        if !unchanged(std::slice::from_ref(&self.binary), &self.binary_sha256)? {
            return Err(ScoreError::Tampered(format!(
                "the protected evaluator {} changed during the run; something outside the loop \
                 (perhaps a trainer) wrote to it. Inspect it, then start a new run",
                self.binary.display()
            )));
        }
        if !unchanged(
            &SCORED_FILES.map(|f| self.data_dir.join(f)),
            &self.data_sha256,
        )? {
            return Err(ScoreError::Tampered(format!(
                "the scored data in {} changed during the run; scores before and after would not \
                 compare. Prepare the data again and start a new run",
                self.data_dir.display()
            )));
        }
        self.run(model, split, limit).await
    }

    /// Runs the evaluator on `model`. Its verdict comes back through a pipe of its own, passed as
    /// `--result-fd`: the scored model runs inside the evaluator and may print to stdout, so a
    /// line there could be the model's forgery.
    async fn run(&self, model: &Path, split: Split, limit: Duration) -> Result<Score, ScoreError> {
        let failed = |e: std::io::Error| ScoreError::Failed(format!("the evaluator: {e}"));
        let (mut reader, writer) = std::io::pipe().map_err(failed)?;
        let fd = writer.as_raw_fd();
        let mut command = libtorch_command(&self.binary);
        command
            .arg(model)
            .arg(split.name())
            .args(["--result-fd", &fd.to_string()])
            .env(prepare::DATA_ENV, &self.data_dir)
            .env(prepare::DEVICE_ENV, self.device.device())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        // SAFETY: fcntl is async-signal-safe and touches only the child's copy of the descriptor,
        // which std opened close-on-exec.
        unsafe {
            command.pre_exec(move || {
                if libc::fcntl(fd, libc::F_SETFD, 0) == -1 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = command.spawn().map_err(failed)?;
        // Only the child holds the write end now, so the read ends when it exits (or is killed
        // on a timeout, when the futures below are dropped).
        drop(writer);
        let verdict = tokio::task::spawn_blocking(move || {
            let mut text = String::new();
            reader.read_to_string(&mut text).map(|_| text)
        });
        let (out, verdict) = match tokio::time::timeout(limit, async {
            (child.wait_with_output().await, verdict.await)
        })
        .await
        {
            Ok((out, verdict)) => (
                out.map_err(failed)?,
                verdict.map_err(|e| ScoreError::Failed(format!("the evaluator: {e}")))?,
            ),
            Err(_) => {
                return Err(ScoreError::Failed(format!(
                    "the protected evaluation took over {:.0} s and was stopped",
                    limit.as_secs_f64()
                )));
            }
        };
        let verdict = verdict.map_err(failed)?;
        match verdict.lines().last().map(serde_json::from_str::<Score>) {
            Some(Ok(score)) if out.status.success() => Ok(score),
            _ => {
                let stderr = String::from_utf8_lossy(&out.stderr);
                Err(ScoreError::Failed(format!(
                    "the protected evaluation failed ({}): {}",
                    out.status,
                    tail(&stderr, 5).replace('\n', " | ")
                )))
            }
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ScoreError {
    /// The evaluator or the scored data changed since the run started: no later score could be
    /// trusted, so the run stops.
    #[error("{0}")]
    Tampered(String),
    /// This model could not be scored (not exported, wrong shape, crashed): the experiment is a
    /// crash.
    #[error("{0}")]
    Failed(String),
}

fn sha256_of(files: &[PathBuf]) -> Result<String> {
    let mut hasher = Sha256::new();
    for file in files {
        let bytes = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
        hasher.update(&bytes);
    }
    Ok(hex::encode(hasher.finalize()))
}
