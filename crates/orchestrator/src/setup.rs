//! What a fresh machine lacks, done once: libtorch for the trainer, and the prepared data.

use std::path::Path;

use anyhow::{Context, Result, bail, ensure};
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

/// [`ensure_ready`], with the data prepared in the background when it is missing: that takes
/// minutes on a small machine (the tokenizer's training, the encoding), in which libtorch's
/// install when it is missing (scripts/setup.sh installs it first) and then the protected
/// evaluator's first build run beside it. The data directory exists on return (the jails bind
/// it); the data is ready when the future resolves.
///
/// The preparation is a child process (this program's hidden `prepare-data`) in a session of its
/// own, so that it can lower the priority of its scheduler autogroup: the build, in an autogroup
/// of its own too (bubblewrap's `--new-session`), then has both cores whenever it can use them,
/// and the data takes what the build leaves idle. At equal priority the scheduler splits the
/// cores between the two, and their sum comes out later than each in turn. It is killed with
/// the orchestrator, even by `kill -9`, and resumes from its last whole file the next time.
pub async fn start(cfg: &Config) -> Result<impl Future<Output = Result<Dataset>> + use<>> {
    let preparing = if needs_preparing(cfg)? {
        std::fs::create_dir_all(&cfg.data_dir)
            .with_context(|| format!("creating {}", cfg.data_dir.display()))?;
        Some(spawn_preparation(&cfg.repo)?)
    } else {
        None
    };
    ensure_libtorch(cfg).await?;
    let data_dir = cfg.data_dir.clone();
    Ok(async move {
        if let Some(mut child) = preparing {
            let status = child
                .wait()
                .await
                .context("waiting for the data's preparation")?;
            ensure!(
                status.success(),
                "preparing the data failed ({status}): its error is above; the next run resumes \
                 it from its last whole file"
            );
        }
        Dataset::open(&data_dir)
    })
}

fn spawn_preparation(repo: &Path) -> Result<tokio::process::Child> {
    let exe = std::env::current_exe().context("finding this program to prepare the data")?;
    let mut command = tokio::process::Command::new(&exe);
    command
        .arg("prepare-data")
        .current_dir(repo)
        .kill_on_drop(true);
    // SAFETY: setsid and prctl are async-signal-safe and touch only the child about to exec.
    unsafe {
        command.pre_exec(|| {
            if libc::setsid() == -1 || libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) == -1 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    command
        .spawn()
        .with_context(|| format!("starting {} prepare-data", exe.display()))
}

/// `prepare-data`: the default data set prepared at the lowest priority its session's autogroup
/// can have (see [`start`]). Where the kernel has no autogroups, it runs at the usual priority.
pub fn prepare_data(repo: &Path) -> Result<()> {
    std::fs::write("/proc/self/autogroup", "19").ok();
    prepare_enwik8(repo)
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
    eprintln!("preparing enwik8 (once: download, tokenizer, tokens; minutes on 2 cores)...");
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
