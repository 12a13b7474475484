//! Child processes of libtorch programs (the trainer, the evaluator) on this machine: started in
//! their own process group under a hard wall-clock limit, their output logged, and never left
//! running when the orchestrator dies.

use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use anyhow::{Context, Result};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use crate::Stop;

/// How a process run under a limit ended.
pub enum Exit {
    /// It exited by itself; `result` is its last non-empty stdout line when that is a JSON object.
    Exited {
        status: ExitStatus,
        result: Option<serde_json::Value>,
    },
    /// It ran past the limit and its process group was killed; the reason, as also logged.
    TimedOut(String),
    /// Ctrl-C: its process group was killed.
    Interrupted,
}

/// Runs `binary` with `env` in its own process group (so that anything it spawns dies with it),
/// writing stdout and stderr to `log`; `on_stderr` sees each stderr line (progress).
pub async fn run_under_limit(
    binary: &Path,
    env: &[(&str, String)],
    log: &Path,
    limit: Duration,
    stop: &mut Stop,
    mut on_stderr: impl FnMut(&str),
) -> Result<Exit> {
    let mut command = libtorch_command(binary);
    command
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    let mut child = command
        .spawn()
        .with_context(|| format!("starting {}", binary.display()))?;
    let pgid = child.id().context("the child has no pid")? as i32;
    let mut log = tokio::fs::File::create(log)
        .await
        .with_context(|| format!("creating {}", log.display()))?;
    let mut stdout = BufReader::new(child.stdout.take().expect("piped")).lines();
    let mut stderr = BufReader::new(child.stderr.take().expect("piped")).lines();
    let mut stdout_lines = Vec::new();
    let deadline = tokio::time::sleep(limit);
    tokio::pin!(deadline);
    let (mut out_open, mut err_open) = (true, true);
    let status = loop {
        tokio::select! {
            line = stdout.next_line(), if out_open => match line? {
                Some(line) => {
                    log.write_all(format!("{line}\n").as_bytes()).await?;
                    stdout_lines.push(line);
                }
                None => out_open = false,
            },
            line = stderr.next_line(), if err_open => match line? {
                Some(line) => {
                    log.write_all(format!("{line}\n").as_bytes()).await?;
                    on_stderr(&line);
                }
                None => err_open = false,
            },
            status = child.wait(), if !out_open && !err_open => break status?,
            _ = &mut deadline => {
                kill_group(pgid);
                child.wait().await.ok();
                let reason = format!("timed out after {:.0} s and was killed", limit.as_secs_f64());
                log.write_all(format!("orchestrator: {reason}\n").as_bytes()).await?;
                return Ok(Exit::TimedOut(reason));
            }
            _ = stop.wait() => {
                kill_group(pgid);
                child.wait().await.ok();
                return Ok(Exit::Interrupted);
            }
        }
    };
    // Whatever it left running in its group goes too.
    kill_group(pgid);
    log.flush().await?;
    let result = stdout_lines
        .iter()
        .rev()
        .find(|l| !l.trim().is_empty())
        .and_then(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(serde_json::Value::is_object);
    Ok(Exit::Exited { status, result })
}

/// A command for a libtorch program (the trainer or the evaluator).
///
/// glibc hands every allocation over 32 MB (activations, gradients, logits) back to the kernel
/// when it is freed, so each training step faults in and zero-fills the same memory again: on
/// CPU that took 60% of the time as system time. Keeping freed memory for reuse doubled the CPU
/// trainer's tokens/s (2,755 -> 5,371 on 2 cores), at the price of a higher peak RSS.
///
/// `kill_on_drop` cannot act when the orchestrator itself is killed (`kill -9`), and a trainer
/// (or evaluator) would run on unseen, holding the CPU or GPU that the resumed run needs; on
/// Linux the kernel kills it when its parent dies.
pub fn libtorch_command(binary: &Path) -> tokio::process::Command {
    let mut command = tokio::process::Command::new(binary);
    command
        .env("MALLOC_MMAP_THRESHOLD_", "1000000000000")
        .env("MALLOC_TRIM_THRESHOLD_", "1000000000000")
        .kill_on_drop(true);
    #[cfg(target_os = "linux")]
    // SAFETY: prctl is async-signal-safe and touches only the child about to exec.
    unsafe {
        command.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) == -1 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    command
}

fn kill_group(pgid: i32) {
    // SAFETY: kill(2) with a negative pid signals the child's own process group only.
    unsafe {
        libc::kill(-pgid, libc::SIGKILL);
    }
}
