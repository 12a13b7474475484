//! Runs a built trainer under a hard wall-clock limit: its own process group (so that anything
//! it spawns dies with it), output to the experiment's log, the one JSON result line parsed.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, Result};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use crate::Stop;

pub enum Run {
    /// The trainer exited 0 with a result line whose status is `ok`.
    Finished { result: serde_json::Value },
    /// Anything else, with the reason.
    Crashed {
        reason: String,
        result: Option<serde_json::Value>,
    },
    /// Ctrl-C: the run was killed and must not be recorded.
    Interrupted,
}

/// Runs `binary` with `env`, writing stdout and stderr to `log`; `on_progress` gets the percent
/// done from the trainer's progress lines.
pub async fn run_trainer(
    binary: &Path,
    env: &[(&str, String)],
    log: &Path,
    limit: Duration,
    stop: &mut Stop,
    mut on_progress: impl FnMut(&str),
) -> Result<Run> {
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
    let pgid = child.id().context("the trainer has no pid")? as i32;
    let mut log = tokio::fs::File::create(log)
        .await
        .with_context(|| format!("creating {}", log.display()))?;
    let mut stdout = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut stderr = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut result_lines = Vec::new();
    let deadline = tokio::time::sleep(limit);
    tokio::pin!(deadline);
    let (mut out_open, mut err_open) = (true, true);
    let outcome = loop {
        tokio::select! {
            line = stdout.next_line(), if out_open => match line? {
                Some(line) => {
                    log.write_all(format!("{line}\n").as_bytes()).await?;
                    result_lines.push(line);
                }
                None => out_open = false,
            },
            line = stderr.next_line(), if err_open => match line? {
                Some(line) => {
                    log.write_all(format!("{line}\n").as_bytes()).await?;
                    on_progress(&line);
                }
                None => err_open = false,
            },
            status = child.wait(), if !out_open && !err_open => break Some(status?),
            _ = &mut deadline => break None,
            _ = stop.wait() => {
                kill_group(pgid);
                child.wait().await.ok();
                return Ok(Run::Interrupted);
            }
        }
    };
    let Some(status) = outcome else {
        kill_group(pgid);
        child.wait().await.ok();
        let reason = format!(
            "timed out after {:.0} s and was killed",
            limit.as_secs_f64()
        );
        log.write_all(format!("orchestrator: {reason}\n").as_bytes())
            .await?;
        return Ok(Run::Crashed {
            reason,
            result: None,
        });
    };
    // Whatever the trainer left running in its group goes too.
    kill_group(pgid);
    log.flush().await?;
    let result = result_lines
        .iter()
        .rev()
        .find(|l| !l.trim().is_empty())
        .and_then(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(serde_json::Value::is_object);
    Ok(match (status.success(), result) {
        (_, None) => Run::Crashed {
            reason: format!("no result line ({status})"),
            result: None,
        },
        (false, Some(result)) => Run::Crashed {
            reason: format!("{status}, status {}", result["status"]),
            result: Some(result),
        },
        (true, Some(result)) if result["status"] != "ok" || !result["val_bpb"].is_number() => {
            Run::Crashed {
                reason: format!("status {}", result["status"]),
                result: Some(result),
            }
        }
        (true, Some(result)) => Run::Finished { result },
    })
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
pub(crate) fn libtorch_command(binary: &Path) -> tokio::process::Command {
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
    // SAFETY: kill(2) with a negative pid signals the trainer's own process group only.
    unsafe {
        libc::kill(-pgid, libc::SIGKILL);
    }
}
