//! Builds the trainer and the evaluator in the sandbox: `cargo build --release --offline -p train
//! --bin <name> --message-format=json`, read with `cargo_metadata` for the binary's path and the
//! compiler's rendered errors; and runs the trainer's rule tests there (`crates/train/rules.rs`).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result};
use cargo_metadata::Message;
use cargo_metadata::diagnostic::DiagnosticLevel;

use tokio::sync::Mutex;

use crate::git::EDITABLE;
use crate::process::{Bounded, output_within};
use crate::rules;
use crate::run_dir::RunDir;
use crate::sandbox::{Group, Sandbox, env};
use crate::text::tail;

pub enum Build {
    Built {
        binary: PathBuf,
    },
    /// Compiler errors as rustc renders them, for the agent to repair, or why the build was
    /// stopped.
    Failed {
        diagnostics: String,
        /// Stopped at its time limit: a loaded machine may be the cause rather than the code.
        timed_out: bool,
    },
}

/// Why cargo was stopped before it finished.
struct Stopped {
    why: String,
    timed_out: bool,
}

/// Longer than the rule tests take on 2 cores (about 10 s), short enough not to buy training.
const RULE_TESTS_LIMIT: std::time::Duration = std::time::Duration::from_secs(120);

pub use crate::rules::Rules;

/// Builds in a sandbox: the worktree and the toolchain readable, the target directory writable,
/// no network (the dependencies are fetched once at start, see [`fetch`]), the environment from
/// the allow-list. The agent's code runs no build script of its own, but rustc reads what
/// `include_bytes!` and `env!` name: the jail holds neither the data nor a key.
///
/// The workers' worktrees share one target directory: a fresh one per worker would compile tch
/// and every other dependency again, minutes each. Cargo tells a changed source by its mtime
/// alone, so a file edited in one worktree before another worktree's build looks older than that
/// build's output, and cargo would hand back the other worktree's trainer. Hence one build at a
/// time (every clone shares the lock), the trainer's sources touched first (the `train` crate
/// always rebuilds, in seconds; what is outside it is the same in every worktree and is reused),
/// and what was built copied beside the worktree before the next build can replace it.
#[derive(Clone)]
pub struct Builder {
    pub sandbox: Sandbox,
    /// The libtorch the builds link, passed as `LIBTORCH` as the person's builds see it (a link,
    /// usually `.libtorch`, recreated in the jail).
    pub libtorch: PathBuf,
    one_at_a_time: Arc<Mutex<()>>,
}

impl Builder {
    pub fn new(sandbox: Sandbox, libtorch: PathBuf) -> Builder {
        Builder {
            sandbox,
            libtorch,
            one_at_a_time: Arc::default(),
        }
    }

    /// Builds the agent's trainer, the `train` binary of `worktree`, and returns a copy of it
    /// of this worktree's own (`<worktree>.train`).
    pub async fn trainer(&self, worktree: &Path, target_dir: &Path) -> Result<Build> {
        let _building = self.one_at_a_time.lock().await;
        touch_sources(worktree)?;
        let limit = self.sandbox.resources().build_seconds;
        let build = self.build(worktree, target_dir, "train", limit).await?;
        own_copy(build, &RunDir::beside_worktree(worktree, "train"))
    }

    /// Builds the protected evaluator, the `evaluate` binary of the same package. It is the
    /// run's first build, of the base commit's code rather than the agent's, and on a fresh
    /// target directory it compiles libtorch's C++ wrapper and every dependency, many minutes on
    /// a small machine: it gets an hour, or the builds' own limit where that is longer.
    pub async fn evaluator(&self, worktree: &Path, target_dir: &Path) -> Result<Build> {
        let _building = self.one_at_a_time.lock().await;
        let limit = self.sandbox.resources().build_seconds.max(3600);
        self.build(worktree, target_dir, "evaluate", limit).await
    }

    /// Runs the rule tests of the trainer in `worktree` (`crates/train/rules.rs`, see
    /// [`crate::rules`]): a change may tune anything, but not break these. They are the agent's
    /// code, so they are compiled in the build's jail but run in one like the trainer's (the binary read-only, a private `/tmp`, no
    /// target directory, a time limit): a test cannot train past the budget and leave weights
    /// where a later build could `include_bytes!` them.
    pub async fn rule_tests(&self, worktree: &Path, target_dir: &Path) -> Result<Rules> {
        if let Some(why) = rules::tampered(worktree)? {
            return Ok(Rules::Broken(why));
        }
        // Compiled as `cargo test` would, but without the package's dev-dependencies: its own
        // tests' fixtures need prepare's data pipeline, which the evaluator's build leaves out, and
        // compiling it for the rules took 25 s of one core after the baseline's evaluation.
        let args = [
            "rustc",
            "--release",
            "--offline",
            "-p",
            "train",
            "--bin",
            "train",
            "--message-format=json",
            "--",
            "--test",
        ];
        let compiled = {
            let _building = self.one_at_a_time.lock().await;
            touch_sources(worktree)?;
            let limit = self.sandbox.resources().build_seconds;
            let out = self.cargo(worktree, target_dir, &args, limit).await?;
            own_copy(
                compiled(out, "train")?,
                &RunDir::beside_worktree(worktree, "rules"),
            )?
        };
        let tests = match compiled {
            Build::Built { binary } => binary,
            Build::Failed { diagnostics, .. } => return Ok(Rules::Broken(diagnostics)),
        };
        let mut jail = self.sandbox.jail();
        let group = self.sandbox.group()?;
        if let Some(group) = &group {
            jail.join(group);
        }
        jail.no_gpu();
        let binary = jail.read_as(&tests, Path::new("/rules/train-tests"));
        jail.chdir(Path::new("/tmp"));
        jail.env("HOME", "/tmp");
        let out = output_within(jail.command(&binary, &[]), RULE_TESTS_LIMIT)
            .await
            .context("running the rule tests")?;
        if let Some(why) = group.as_ref().and_then(Group::exceeded) {
            return Ok(Rules::Broken(format!("the rule tests: {why}")));
        }
        let Some(status) = out.status else {
            return Ok(Rules::Broken(format!(
                "the rule tests ran over {} s and were stopped",
                RULE_TESTS_LIMIT.as_secs()
            )));
        };
        Ok(rules::verdict(
            &rules::required(worktree)?,
            status.success(),
            &format!("{}{}", out.stdout, out.stderr),
        ))
    }

    async fn build(
        &self,
        worktree: &Path,
        target_dir: &Path,
        bin: &str,
        limit: u64,
    ) -> Result<Build> {
        let args = [
            "build",
            "--release",
            "--offline",
            "-p",
            "train",
            "--bin",
            bin,
            "--message-format=json",
        ];
        compiled(self.cargo(worktree, target_dir, &args, limit).await?, bin)
    }

    /// Runs `cargo ARGS` in `worktree` in the jail: the toolchain and the worktree readable, the
    /// target directory writable, libtorch linked in; its output, or why it was stopped (its
    /// `limit` in seconds or its memory: a const evaluation that never ends, an `include_bytes!`
    /// of `/dev/zero`).
    async fn cargo(
        &self,
        worktree: &Path,
        target_dir: &Path,
        args: &[&str],
        limit: u64,
    ) -> Result<Result<Bounded, Stopped>> {
        std::fs::create_dir_all(target_dir)
            .with_context(|| format!("creating {}", target_dir.display()))?;
        let (cargo_home, rustup_home) = env::toolchain_homes();
        let mut jail = self.sandbox.jail();
        // It writes the target directory every build shares, owned by the orchestrator's user,
        // and runs no code of the agent's (its build scripts are the base commit's, see `fetch`).
        jail.as_orchestrator();
        jail.no_gpu();
        let group = self.sandbox.group()?;
        if let Some(group) = &group {
            jail.join(group);
        }
        jail.read(&rustup_home);
        for part in ["bin", "registry", "git"] {
            let dir = cargo_home.join(part);
            if dir.is_dir() {
                jail.read(&dir);
            }
        }
        jail.read(worktree);
        jail.write(target_dir);
        jail.link(&self.libtorch);
        jail.chdir(worktree);
        jail.env("HOME", "/tmp");
        jail.env("CARGO_HOME", cargo_home.display().to_string());
        jail.env("RUSTUP_HOME", rustup_home.display().to_string());
        jail.env("CARGO_TARGET_DIR", target_dir.display().to_string());
        jail.env("LIBTORCH", self.libtorch.display().to_string());
        jail.env("LIBTORCH_CXX11_ABI", "1");
        let args: Vec<std::ffi::OsString> = args.iter().map(Into::into).collect();
        let out = output_within(jail.command(&cargo(), &args), Duration::from_secs(limit))
            .await
            .with_context(|| format!("running cargo {}", args[0].to_string_lossy()))?;
        if let Some(why) = group.as_ref().and_then(Group::exceeded) {
            return Ok(Err(Stopped {
                why: format!("the build: {why}"),
                timed_out: false,
            }));
        }
        Ok(match out.status {
            Some(_) => Ok(out),
            None => Err(Stopped {
                why: format!("build over {limit} s: stopped (limits.build_seconds)"),
                timed_out: true,
            }),
        })
    }
}

/// Sets the mtime of every file under the trainer's directory to now, see [`Builder`].
fn touch_sources(worktree: &Path) -> Result<()> {
    fn touch(dir: &Path, now: SystemTime) -> std::io::Result<()> {
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            let kind = entry.file_type()?;
            if kind.is_dir() {
                touch(&entry.path(), now)?;
            } else if kind.is_file() {
                std::fs::File::options()
                    .append(true)
                    .open(entry.path())?
                    .set_modified(now)?;
            }
        }
        Ok(())
    }
    let dir = worktree.join(EDITABLE);
    touch(&dir, SystemTime::now()).with_context(|| format!("touching {}", dir.display()))
}

/// `build` with its binary copied to `to`, where the next build does not replace it.
fn own_copy(build: Build, to: &Path) -> Result<Build> {
    Ok(match build {
        Build::Built { binary } => {
            prepare::atomic::copy(&binary, to)
                .with_context(|| format!("copying {} to {}", binary.display(), to.display()))?;
            Build::Built {
                binary: to.to_path_buf(),
            }
        }
        failed => failed,
    })
}

/// The executable cargo built for target `bin` (with `--message-format=json`), or the compiler's
/// errors, or why the build was stopped.
fn compiled(out: Result<Bounded, Stopped>, bin: &str) -> Result<Build> {
    let out = match out {
        Ok(out) => out,
        Err(Stopped { why, timed_out }) => {
            return Ok(Build::Failed {
                diagnostics: why,
                timed_out,
            });
        }
    };
    let mut binary = None;
    let mut errors = Vec::new();
    for message in Message::parse_stream(out.stdout.as_bytes()) {
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
        Some(binary) if out.status.is_some_and(|s| s.success()) => Ok(Build::Built { binary }),
        _ => {
            if errors.is_empty() {
                errors.push(tail(&out.stderr, 30));
            }
            Ok(Build::Failed {
                diagnostics: errors.join("\n"),
                timed_out: false,
            })
        }
    }
}

/// The cargo that built the orchestrator (`CARGO`, set by `cargo run`), else the one on `PATH`.
fn cargo() -> PathBuf {
    std::env::var_os("CARGO").map_or_else(|| "cargo".into(), PathBuf::from)
}

/// Downloads what `Cargo.lock` names and is not yet on this machine, so that the sandboxed builds
/// can run offline. It runs no build script and none of the agent's code (the manifests and the
/// lock file are the base commit's), so it runs outside the sandbox, with the network and proxy
/// settings but no key.
pub async fn fetch(worktree: &Path) -> Result<()> {
    let (cargo_home, rustup_home) = env::toolchain_homes();
    let mut command = tokio::process::Command::new(cargo());
    command
        .args(["fetch", "--quiet"])
        .current_dir(worktree)
        .env_clear()
        .envs(env::allowed())
        .env("CARGO_HOME", cargo_home)
        .env("RUSTUP_HOME", rustup_home)
        .stdin(Stdio::null())
        .kill_on_drop(true);
    for (name, value) in std::env::vars() {
        if name.to_ascii_lowercase().ends_with("_proxy") || name == "HOME" {
            command.env(name, value);
        }
    }
    let out = command.output().await.context("running cargo fetch")?;
    if !out.status.success() {
        anyhow::bail!(
            "cargo fetch failed; the sandboxed builds are offline and need every dependency \
             downloaded: {}",
            tail(&String::from_utf8_lossy(&out.stderr), 10)
        );
    }
    Ok(())
}
