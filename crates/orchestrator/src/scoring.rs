//! Protected scoring: the score that is recorded comes from the `evaluate` binary, built from the
//! run's base commit (outside the agent's directory) before any of the agent's code is built, kept
//! aside under the run's directory, and checked against its hash before every use, together with
//! the data it scores. Both hashes are pinned in the run's
//! first record and checked again on every `--resume`. The evaluator runs in the sandbox: the
//! model it loads is the trainer's work.

use std::io::Read;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use anyhow::{Result, bail};
use prepare::{Dataset, Profile, Split};
use sha2::{Digest, Sha256};

use crate::cargo_build::{Build, Builder};
use crate::config::Config;
use crate::ledger::Pins;
use crate::process::{Lines, libtorch};
use crate::sandbox::{Group, Sandbox, env};

/// What the evaluator says of one exported model on one split.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct Score {
    /// Bits per byte; None when the model is not causal or its losses are not finite.
    pub bpb: Option<f64>,
    pub causal: bool,
    pub probe_max_diff: f64,
    /// The first operation of the model's graphs that is not a pure tensor operation, when the
    /// evaluator refused to run it for that (it was then not probed either).
    #[serde(default)]
    pub refused: Option<String>,
    pub seconds: f64,
}

pub struct Evaluator {
    binary: PathBuf,
    binary_sha256: String,
    data_dir: PathBuf,
    data_sha256: String,
    /// The device it scores on, the trainer's.
    device: Profile,
    sandbox: Sandbox,
    /// Its thread pools' settings: it shares the cores with the workers' trainers.
    threads: Vec<(&'static str, String)>,
}

/// Lines of the evaluator's stderr quoted when it fails.
pub const STDERR_LINES: usize = 5;

/// The prepared files that decide a score, hashed and pinned: those of both scored splits (the
/// training tokens do not decide one).
fn scored_data(dir: &Path) -> Vec<PathBuf> {
    let mut names = prepare::scored_files(Split::Val);
    names.extend(Split::Test.files());
    names.iter().map(|name| dir.join(name)).collect()
}

/// Where the evaluator and the model are seen inside its jail.
const JAIL_EVALUATOR: &str = "/autoresearch/evaluate";
const JAIL_MODEL: &str = "/autoresearch/model.pt";
const JAIL_DATA: &str = "/autoresearch/data";

impl Evaluator {
    /// The evaluator of this run, `runs/<tag>/bin/evaluate`, and the data it scores once `data`
    /// is ready (the evaluator is built meanwhile: the data may be being prepared). Pinned (a
    /// `--resume` after the first record): the copy there must still have the pinned hash, or be
    /// rebuilt to it, and the data must hash as pinned; a mismatch refuses to continue. Not
    /// pinned: built from `worktree`, which must be at the run's base commit outside the
    /// trainer's directory.
    pub async fn open(
        cfg: &Config,
        builder: &Builder,
        worktree: &Path,
        pinned: Option<&Pins>,
        data: impl Future<Output = Result<Dataset>>,
    ) -> Result<(Evaluator, Dataset)> {
        let (binary_sha256, data) = tokio::try_join!(binary(cfg, builder, worktree, pinned), data)?;
        let data_sha256 = sha256_of(&scored_data(&cfg.data_dir))?;
        if let Some(pins) = pinned
            && data_sha256 != pins.data_sha256
        {
            bail!(
                "the scored data in {} is not the data this run started with (sha256 {} now, \
                 {} pinned in its first record): later scores would not compare with earlier \
                 ones. Restore the data, or start a new run",
                cfg.data_dir.display(),
                &data_sha256[..12],
                &pins.data_sha256[..pins.data_sha256.len().min(12)]
            );
        }
        let evaluator = Evaluator {
            binary: cfg.run_dir.evaluator(),
            binary_sha256,
            data_dir: cfg.data_dir.clone(),
            data_sha256,
            device: cfg.device,
            sandbox: builder.sandbox.clone(),
            threads: env::threads(Some(cfg.settings.workers())),
        };
        Ok((evaluator, data))
    }

    /// What the run's first record pins.
    pub fn pins(&self) -> Pins {
        Pins {
            evaluator_sha256: self.binary_sha256.clone(),
            data_sha256: self.data_sha256.clone(),
            sandbox: self.sandbox.support().to_string(),
        }
    }

    /// Scores `model` on `split` under a hard time limit, on `gpu` (the `CUDA_VISIBLE_DEVICES`
    /// value of the worker whose trainer exported it) where the machine has GPUs.
    pub async fn score(
        &self,
        model: &Path,
        split: Split,
        limit: Duration,
        gpu: Option<&str>,
    ) -> Result<Score, ScoreError> {
        self.check()?;
        let group = self.sandbox.group().map_err(|e| {
            let why = format!("its control group: {e:#}");
            Unscored::Evaluator(std::io::Error::other(why))
        })?;
        let score = self.run(model, split, limit, gpu, group.as_ref()).await;
        // A limit the jail hit is the reason, whatever the evaluator made of it.
        match group.as_ref().and_then(Group::exceeded) {
            Some(why) => Err(Unscored::Limited { why }.into()),
            None => score,
        }
    }

    /// Whether the evaluator and the scored data still hash as they did at start: checked
    /// before every use, and again before a verdict that came from elsewhere (a Slurm job) is
    /// believed.
    pub fn check(&self) -> Result<(), ScoreError> {
        if sha256_of(std::slice::from_ref(&self.binary))? != self.binary_sha256 {
            let binary = self.binary.clone();
            return Err(Tampered::Evaluator { binary }.into());
        }
        if sha256_of(&scored_data(&self.data_dir))? != self.data_sha256 {
            let dir = self.data_dir.clone();
            return Err(Tampered::Data { dir }.into());
        }
        Ok(())
    }

    /// The evaluator in its jail, scoring `model` on `split` and writing its verdict to
    /// descriptor `fd`: run here by [`Evaluator::score`], or written into a job's script by
    /// the Slurm executor, which runs it on a node. Of the data the jail holds only what scoring
    /// `split` reads: the model never shares a jail with the other split. The jail gets only the
    /// device nodes of `gpu`, where given, and runs in `group`, where there is one.
    pub fn command(
        &self,
        model: &Path,
        split: Split,
        fd: i32,
        gpu: Option<&str>,
        group: Option<&Group>,
    ) -> tokio::process::Command {
        let mut jail = self.sandbox.jail();
        if let Some(group) = group {
            jail.join(group);
        }
        if let Some(gpu) = gpu {
            jail.env("CUDA_VISIBLE_DEVICES", gpu);
            jail.gpus(gpu);
        }
        let evaluator = jail.read_as(&self.binary, Path::new(JAIL_EVALUATOR));
        let model = jail.read_as(model, Path::new(JAIL_MODEL));
        let files = prepare::scored_files(split);
        let files: Vec<&str> = files.iter().map(String::as_str).collect();
        let data = jail.read_files_as(&self.data_dir, &files, Path::new(JAIL_DATA));
        jail.chdir(Path::new("/tmp"));
        jail.env("HOME", "/tmp");
        jail.env(prepare::DATA_ENV, data.display().to_string());
        jail.env(prepare::DEVICE_ENV, self.device.device());
        for (name, value) in &self.threads {
            jail.env(name, value);
        }
        let args = [
            model.into_os_string(),
            split.name().into(),
            "--result-fd".into(),
            fd.to_string().into(),
        ];
        let mut command = jail.command(&evaluator, &args);
        libtorch(&mut command);
        command
    }

    /// This evaluator with its jails made for the nodes of a cluster rather than this machine
    /// (see [`Sandbox::for_nodes`]).
    pub fn for_nodes(mut self) -> Evaluator {
        self.sandbox = self.sandbox.for_nodes();
        self.threads = env::threads(None);
        self
    }

    /// The binary and the data, which a job on another machine must find at the same paths.
    pub fn paths(&self) -> [&Path; 2] {
        [&self.binary, &self.data_dir]
    }

    /// Runs the evaluator on `model`. Its verdict comes back through a pipe of its own, passed as
    /// `--result-fd`: the scored model runs inside the evaluator and may print to stdout, so a
    /// line there could be the model's forgery.
    async fn run(
        &self,
        model: &Path,
        split: Split,
        limit: Duration,
        gpu: Option<&str>,
        group: Option<&Group>,
    ) -> Result<Score, ScoreError> {
        let failed = |e: std::io::Error| ScoreError::from(Unscored::Evaluator(e));
        let (mut reader, writer) = std::io::pipe().map_err(failed)?;
        let fd = writer.as_raw_fd();
        exported(model)?;
        let mut command = self.command(model, split, fd, gpu, group);
        command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        inherit(&mut command, fd);
        let mut child = command.spawn().map_err(failed)?;
        // Only the child holds the write end now, so the read ends when it exits (or is killed
        // on a timeout, when the futures below are dropped). Bounded: the model runs inside the
        // evaluator and could write to the descriptor too.
        drop(writer);
        let verdict = tokio::task::spawn_blocking(move || {
            let mut text = String::new();
            (&mut reader)
                .take(MAX_VERDICT)
                .read_to_string(&mut text)
                .map(|_| text)
        });
        // Only the last lines of stderr are kept: the model may print without end.
        let stderr = Lines::new(child.stderr.take().expect("piped"));
        let stderr_tail = async move {
            let mut stderr = stderr;
            let mut tail = std::collections::VecDeque::new();
            while let Ok(Some(line)) = stderr.next_line().await {
                tail.push_back(line);
                if tail.len() > STDERR_LINES {
                    tail.pop_front();
                }
            }
            Vec::from(tail).join(" | ")
        };
        let (status, verdict, stderr) = match tokio::time::timeout(limit, async move {
            let (stderr, status) = tokio::join!(stderr_tail, child.wait());
            (status, verdict.await, stderr)
        })
        .await
        {
            Ok((status, verdict, stderr)) => (
                status.map_err(failed)?,
                verdict.map_err(|e| failed(std::io::Error::other(e)))?,
                stderr,
            ),
            Err(_) => return Err(Unscored::TimedOut { limit }.into()),
        };
        verdict_of(&verdict.map_err(failed)?, status, &stderr)
    }
}

/// Lets the child of `command` inherit descriptor `fd`, which std opened close-on-exec.
fn inherit(command: &mut tokio::process::Command, fd: i32) {
    // SAFETY: fcntl is async-signal-safe and touches only the child's copy of the descriptor.
    unsafe {
        command.pre_exec(move || {
            if libc::fcntl(fd, libc::F_SETFD, 0) == -1 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// Bytes of the verdict read: the model runs inside the evaluator and could write there too.
pub const MAX_VERDICT: u64 = 1 << 20;

/// Refuses a model that is not a plain file (none exported, or a link the trainer planted).
pub fn exported(model: &Path) -> Result<(), ScoreError> {
    if std::fs::symlink_metadata(model).is_ok_and(|m| m.is_file()) {
        Ok(())
    } else {
        let model = model.to_path_buf();
        Err(Unscored::NotExported { model }.into())
    }
}

/// The score in the evaluator's verdict (its last line), believed only when it exited well;
/// `stderr` is the tail of what it printed, quoted when it failed.
pub fn verdict_of(
    verdict: &str,
    status: std::process::ExitStatus,
    stderr: &str,
) -> Result<Score, ScoreError> {
    match verdict.lines().last().map(serde_json::from_str::<Score>) {
        Some(Ok(score)) if status.success() => Ok(score),
        _ => {
            let stderr = stderr.to_string();
            Err(Unscored::Failed { status, stderr }.into())
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ScoreError {
    /// The evaluator or the scored data changed since the run started: no later score could be
    /// trusted, so the run stops.
    #[error(transparent)]
    Tampered(#[from] Tampered),
    /// This model could not be scored (not exported, wrong shape, crashed): the experiment is a
    /// crash.
    #[error(transparent)]
    Unscored(#[from] Unscored),
}

#[derive(Debug, thiserror::Error)]
pub enum Tampered {
    #[error(
        "the protected evaluator {} changed during the run; something outside the loop (perhaps \
         a trainer) wrote to it. Inspect it, then start a new run",
        binary.display()
    )]
    Evaluator { binary: PathBuf },
    #[error(
        "the scored data in {} changed during the run; scores before and after would not \
         compare. Prepare the data again and start a new run",
        dir.display()
    )]
    Data { dir: PathBuf },
    /// A file that is hashed could not be read.
    #[error("reading {}: {error}", path.display())]
    Unreadable {
        path: PathBuf,
        error: std::io::Error,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum Unscored {
    #[error("the trainer exported no model file at {}", model.display())]
    NotExported { model: PathBuf },
    /// It could not be started or read.
    #[error("the evaluator: {0}")]
    Evaluator(std::io::Error),
    /// It exited badly or printed no verdict; `stderr` is the end of what it printed.
    #[error("the protected evaluation failed ({status}): {stderr}")]
    Failed { status: ExitStatus, stderr: String },
    #[error(
        "the protected evaluation took over {:.0} s and was stopped",
        limit.as_secs_f64()
    )]
    TimedOut { limit: Duration },
    /// It ran into a limit of its jail (memory, processes), in the sandbox's words.
    #[error("the protected evaluation: {why}")]
    Limited { why: String },
    #[error("the model's losses are not finite")]
    NotFinite,
    /// A job that was to run it elsewhere ran without it.
    #[error("the evaluator did not run")]
    NotRun,
    /// The job that was to run it elsewhere failed, in the executor's words.
    #[error("{why}")]
    Job { why: String },
    #[error("interrupted")]
    Interrupted,
}

fn sha256_of(files: &[PathBuf]) -> Result<String, Tampered> {
    let mut hasher = Sha256::new();
    for path in files {
        let bytes = std::fs::read(path).map_err(|error| Tampered::Unreadable {
            path: path.clone(),
            error,
        })?;
        hasher.update(&bytes);
    }
    Ok(hex::encode(hasher.finalize()))
}

/// The hash of the run's evaluator: its kept copy when that has the pinned hash, else built
/// from `worktree` and copied there (and then refused unless it has the pinned hash).
async fn binary(
    cfg: &Config,
    builder: &Builder,
    worktree: &Path,
    pinned: Option<&Pins>,
) -> Result<String> {
    std::fs::create_dir_all(cfg.run_dir.bin_dir())?;
    let binary = cfg.run_dir.evaluator();
    if let Some(pins) = pinned
        && sha256_of(std::slice::from_ref(&binary)).is_ok_and(|kept| kept == pins.evaluator_sha256)
    {
        return Ok(pins.evaluator_sha256.clone());
    }
    let built = build(cfg, builder, worktree).await?;
    prepare::atomic::copy(&built, &binary)?;
    let sha = sha256_of(std::slice::from_ref(&binary))?;
    if let Some(pins) = pinned
        && sha != pins.evaluator_sha256
    {
        bail!(
            "the protected evaluator built now (sha256 {}) is not the one this run started \
             with ({} pinned in its first record): crates/train/evaluate, its runtime, prepare \
             or the toolchain changed, or its copy {} was altered. Scores would not compare; \
             start a new run",
            &sha[..12],
            &pins.evaluator_sha256[..pins.evaluator_sha256.len().min(12)],
            binary.display()
        );
    }
    Ok(sha)
}

/// Builds the evaluator from `worktree` in the trainers' target directory: the run's first build,
/// before any of the agent's code is built, so tch and the other dependencies are compiled once
/// for both. The binary is copied aside at once ([`Evaluator::open`]), and what the agent's later
/// builds leave in the target directory can only reach a rebuild, which must match the pin.
async fn build(cfg: &Config, builder: &Builder, worktree: &Path) -> Result<PathBuf> {
    match builder.evaluator(worktree, &cfg.target_dir).await? {
        Build::Built { binary } => Ok(binary),
        Build::Failed { diagnostics, .. } => {
            bail!("the protected evaluator (crates/train/evaluate) does not build:\n{diagnostics}")
        }
    }
}
