//! Child processes of libtorch programs (the trainer, the evaluator) on this machine: started in
//! their own process group under a hard wall-clock limit, their output logged within a bound, and
//! never left running when the orchestrator dies.

use std::collections::VecDeque;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;
use std::pin::Pin;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use anyhow::{Context, Result};
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncWriteExt, BufReader};

use crate::Stop;

/// Longest line kept from a child's output; the rest of a longer line is cut (a program printing
/// gigabytes without a newline must not fill the orchestrator's memory).
pub const MAX_LINE: usize = 64 * 1024;
/// Bytes of a run's output kept in its log from the start, and again from the end (also for a
/// Slurm job's log, cut once the job ends).
pub const LOG_KEEP: usize = 512 * 1024;

/// How a process run under a limit ended; `S` says why its output stopped it.
pub enum Exit<S> {
    /// It exited by itself; `result` is its last non-empty stdout line when that is a JSON object.
    Exited {
        status: ExitStatus,
        result: Option<serde_json::Value>,
    },
    /// It ran past the limit and its process group was killed.
    TimedOut,
    /// It hit one of its jail's limits (memory, processes, the export's size) and was killed or
    /// failed; the reason, as also logged.
    Limited(String),
    /// Ctrl-C: its process group was killed.
    Interrupted,
    /// Its output asked for it to be stopped (`on_stderr` of [`run_under_limit`]) and its
    /// process group was killed; why, as also logged.
    Stopped(S),
}

/// How often a running child's jail limits are checked (`over_limit` of [`run_under_limit`]).
const LIMITS_EVERY: Duration = Duration::from_secs(1);

/// Runs `command` (a libtorch program, see [`libtorch`], usually in a sandbox) in its own process
/// group, writing stdout and stderr to `log`; `on_stderr` sees each stderr line (progress) and
/// may stop the run, saying why. `over_limit` says which of its jail's limits it ran into, if
/// any: asked every second (the process group is killed at once) and once it has exited.
pub async fn run_under_limit<S: std::fmt::Display>(
    mut command: tokio::process::Command,
    log: &Path,
    limit: Duration,
    stop: &mut Stop,
    on_stderr: impl FnMut(&str) -> Option<S>,
    mut over_limit: impl FnMut() -> Option<String>,
) -> Result<Exit<S>> {
    command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    let mut child = command.spawn().context("starting the trainer")?;
    let pgid = child.id().context("the child has no pid")? as i32;
    let mut log = BoundedLog::create(log).await?;
    let watched = Watched {
        limit,
        stop,
        on_stderr,
        over_limit: &mut over_limit,
    };
    let (ended, last_stdout) = watched.watch(&mut child, &mut log).await?;
    // Whatever it left running in its group goes too.
    kill_group(pgid);
    child.wait().await.ok();
    let ended = match ended {
        Ended::Exited(status) => over_limit().map_or(Ended::Exited(status), Ended::Limited),
        other => other,
    };
    log.finish().await?;
    Ok(match ended {
        Ended::Exited(status) => Exit::Exited {
            status,
            result: last_stdout.as_deref().and_then(result_line),
        },
        Ended::Limited(reason) => {
            log.note(&format!("orchestrator: {reason}")).await?;
            Exit::Limited(reason)
        }
        Ended::TimedOut => {
            let secs = limit.as_secs_f64();
            let reason = format!("timed out after {secs:.0} s and was killed");
            log.note(&format!("orchestrator: {reason}")).await?;
            Exit::TimedOut
        }
        Ended::Interrupted => Exit::Interrupted,
        Ended::Stopped(why) => {
            log.note(&format!("orchestrator: {why}")).await?;
            Exit::Stopped(why)
        }
    })
}

/// How a watched child ended, before its process group is killed and its log finished.
enum Ended<S> {
    Exited(ExitStatus),
    Limited(String),
    TimedOut,
    Interrupted,
    Stopped(S),
}

/// What a child is watched for: its time limit, Ctrl-C, its stderr lines, its jail's limits.
struct Watched<'a, E, L> {
    limit: Duration,
    stop: &'a mut Stop,
    on_stderr: E,
    over_limit: &'a mut L,
}

impl<S, E: FnMut(&str) -> Option<S>, L: FnMut() -> Option<String>> Watched<'_, E, L> {
    /// Logs `child`'s output until it ends; how, and its last non-empty stdout line.
    async fn watch(
        mut self,
        child: &mut tokio::process::Child,
        log: &mut BoundedLog,
    ) -> Result<(Ended<S>, Option<String>)> {
        let mut stdout = Lines::new(child.stdout.take().expect("piped"));
        let mut stderr = Lines::new(child.stderr.take().expect("piped"));
        let mut last_stdout = None;
        let deadline = tokio::time::sleep(self.limit);
        tokio::pin!(deadline);
        let mut checks = tokio::time::interval(LIMITS_EVERY);
        let (mut out_open, mut err_open) = (true, true);
        let ended = loop {
            tokio::select! {
                _ = checks.tick() => if let Some(reason) = (self.over_limit)() {
                    break Ended::Limited(reason);
                },
                line = stdout.next_line(), if out_open => match line? {
                    Some(line) => {
                        log.line(&line).await?;
                        if !line.trim().is_empty() {
                            last_stdout = Some(line);
                        }
                    }
                    None => out_open = false,
                },
                line = stderr.next_line(), if err_open => match line? {
                    Some(line) => {
                        log.line(&line).await?;
                        if let Some(why) = (self.on_stderr)(&line) {
                            break Ended::Stopped(why);
                        }
                    }
                    None => err_open = false,
                },
                status = child.wait(), if !out_open && !err_open => break Ended::Exited(status?),
                _ = &mut deadline => break Ended::TimedOut,
                _ = self.stop.wait() => break Ended::Interrupted,
            }
        };
        Ok((ended, last_stdout))
    }
}

/// What [`Kept`] keeps of `stream`.
async fn kept(stream: impl tokio::io::AsyncRead + Unpin) -> std::io::Result<String> {
    let mut lines = Lines::new(stream);
    let mut kept = Kept::default();
    while let Some(line) = lines.next_line().await? {
        kept.push(line);
    }
    Ok(kept.text())
}

/// A child's output as read within bounds: how it ended (None: it ran past its time limit and
/// its process group was killed), and each stream's lines, its first and last [`LOG_KEEP`]
/// bytes, with a note of what was cut between them.
pub struct Bounded {
    pub status: Option<ExitStatus>,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `command` in its own process group for at most `limit`, reading its output within the
/// bounds of [`Bounded`] (a build, the rule tests: the agent's code may print without end).
pub async fn output_within(command: tokio::process::Command, limit: Duration) -> Result<Bounded> {
    output_fed(command, Stdio::null(), limit).await
}

/// [`output_within`] with `stdin` as the command's standard input.
pub async fn output_fed(
    mut command: tokio::process::Command,
    stdin: Stdio,
    limit: Duration,
) -> Result<Bounded> {
    command
        .stdin(stdin)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    let mut child = command.spawn()?;
    let pgid = child.id().context("the child has no pid")? as i32;
    let stdout = kept(child.stdout.take().expect("piped"));
    let stderr = kept(child.stderr.take().expect("piped"));
    let ran = tokio::time::timeout(limit, async {
        let (stdout, stderr) = tokio::try_join!(stdout, stderr)?;
        std::io::Result::Ok((child.wait().await?, stdout, stderr))
    })
    .await;
    // Whatever it left running in its group goes too, or all of it on a timeout.
    kill_group(pgid);
    Ok(match ran {
        Ok(ran) => {
            let (status, stdout, stderr) = ran?;
            Bounded {
                status: Some(status),
                stdout,
                stderr,
            }
        }
        Err(_) => Bounded {
            status: None,
            stdout: String::new(),
            stderr: String::new(),
        },
    })
}

/// The trainer's result line, when `line` (its last non-empty stdout line) is a JSON object.
pub fn result_line(line: &str) -> Option<serde_json::Value> {
    serde_json::from_str::<serde_json::Value>(line)
        .ok()
        .filter(serde_json::Value::is_object)
}

/// Lines of a child's output, each at most [`MAX_LINE`] bytes. Cancel-safe (a `select!` may drop
/// a call half-way): the partial line lives here, not in the future.
pub struct Lines<R> {
    reader: BufReader<R>,
    line: Vec<u8>,
    cut: bool,
}

impl<R: tokio::io::AsyncRead + Unpin> Lines<R> {
    pub fn new(reader: R) -> Lines<R> {
        Lines {
            reader: BufReader::new(reader),
            line: Vec::new(),
            cut: false,
        }
    }

    pub async fn next_line(&mut self) -> std::io::Result<Option<String>> {
        loop {
            let available = self.reader.fill_buf().await?;
            if available.is_empty() {
                return Ok((!self.line.is_empty() || self.cut).then(|| self.take()));
            }
            let (taken, ended) = match available.iter().position(|&b| b == b'\n') {
                Some(i) => (i + 1, true),
                None => (available.len(), false),
            };
            let keep = taken - usize::from(ended);
            let room = MAX_LINE.saturating_sub(self.line.len());
            self.line.extend_from_slice(&available[..keep.min(room)]);
            self.cut |= keep > room;
            Pin::new(&mut self.reader).consume(taken);
            if ended {
                return Ok(Some(self.take()));
            }
        }
    }

    fn take(&mut self) -> String {
        let mut line = String::from_utf8_lossy(&self.line).into_owned();
        if std::mem::take(&mut self.cut) {
            line.push_str(" [line cut]");
        }
        self.line.clear();
        line
    }
}

/// The last [`LOG_KEEP`] bytes of lines past the first [`LOG_KEEP`], and what was cut before
/// them.
#[derive(Default)]
struct Tail {
    lines: VecDeque<String>,
    bytes: usize,
    cut_lines: u64,
    cut_bytes: u64,
}

impl Tail {
    fn push(&mut self, line: String) {
        self.bytes += line.len() + 1;
        self.lines.push_back(line);
        while self.bytes > LOG_KEEP {
            let dropped = self
                .lines
                .pop_front()
                .expect("over the bound, so not empty");
            self.bytes -= dropped.len() + 1;
            self.cut_lines += 1;
            self.cut_bytes += dropped.len() as u64 + 1;
        }
    }

    /// The note of what was cut, when something was, then the kept lines; empties it.
    fn drain(&mut self) -> impl Iterator<Item = String> {
        let note = (self.cut_lines > 0).then(|| {
            format!(
                "[orchestrator: {} lines ({} bytes) of output cut here; the log keeps the first \
                 {} KiB and the last {} KiB]",
                self.cut_lines,
                self.cut_bytes,
                LOG_KEEP / 1024,
                LOG_KEEP / 1024
            )
        });
        let lines = std::mem::take(&mut self.lines);
        *self = Tail::default();
        note.into_iter().chain(lines)
    }
}

/// Output kept in memory: its first [`LOG_KEEP`] bytes, then its [`Tail`].
#[derive(Default)]
struct Kept {
    head: String,
    tail: Tail,
}

impl Kept {
    fn push(&mut self, line: String) {
        if self.tail.lines.is_empty() && self.head.len() + line.len() < LOG_KEEP {
            self.head.push_str(&line);
            self.head.push('\n');
        } else {
            self.tail.push(line);
        }
    }

    fn text(mut self) -> String {
        for line in self.tail.drain() {
            self.head.push_str(&line);
            self.head.push('\n');
        }
        self.head
    }
}

/// A run's log: the first [`LOG_KEEP`] bytes as they come (so that a kill leaves them), then
/// only the last [`LOG_KEEP`] bytes, written at the end after a note of what was cut.
struct BoundedLog {
    file: tokio::fs::File,
    written: usize,
    tail: Tail,
}

impl BoundedLog {
    async fn create(path: &Path) -> Result<BoundedLog> {
        Ok(BoundedLog {
            file: tokio::fs::File::create(path)
                .await
                .with_context(|| format!("creating {}", path.display()))?,
            written: 0,
            tail: Tail::default(),
        })
    }

    async fn line(&mut self, line: &str) -> Result<()> {
        let len = line.len() + 1;
        if self.tail.lines.is_empty() && self.written + len <= LOG_KEEP {
            self.written += len;
            return self.note(line).await;
        }
        self.tail.push(line.to_string());
        Ok(())
    }

    async fn note(&mut self, line: &str) -> Result<()> {
        self.file.write_all(format!("{line}\n").as_bytes()).await?;
        Ok(())
    }

    /// Writes the kept tail, after a note of what was cut before it.
    async fn finish(&mut self) -> Result<()> {
        let lines: Vec<String> = self.tail.drain().collect();
        for line in lines {
            self.note(&line).await?;
        }
        self.file.flush().await?;
        Ok(())
    }
}

/// Cuts a finished job's log to its first and last [`LOG_KEEP`] bytes, as [`run_under_limit`]
/// keeps them (a Slurm job wrote it whole, on the node).
pub fn bound_log(log: &Path) -> Result<()> {
    let mut file = std::fs::File::open(log)?;
    let len = file.metadata()?.len();
    let keep = LOG_KEEP as u64;
    if len <= 2 * keep {
        return Ok(());
    }
    let mut head = vec![0; LOG_KEEP];
    file.read_exact(&mut head)?;
    let mut tail = vec![0; LOG_KEEP];
    file.seek(SeekFrom::End(-(keep as i64)))?;
    file.read_exact(&mut tail)?;
    let mut text = head;
    text.extend_from_slice(
        format!(
            "\n[orchestrator: {} bytes of output cut here; the log keeps the first {} KiB and \
             the last {} KiB]\n",
            len - 2 * keep,
            LOG_KEEP >> 10,
            LOG_KEEP >> 10
        )
        .as_bytes(),
    );
    text.extend_from_slice(&tail);
    prepare::atomic::write(log, &text)
}

/// Makes `command` one for a libtorch program (the trainer or the evaluator, or the sandbox that
/// runs it).
///
/// glibc hands every allocation over 32 MB (activations, gradients, logits) back to the kernel
/// when it is freed, so each training step faults in and zero-fills the same memory again: on
/// CPU that took 60% of the time as system time. Keeping freed memory for reuse doubled the CPU
/// trainer's tokens/s (2,755 -> 5,371 on 2 cores), at the price of a higher peak RSS.
///
/// `kill_on_drop` cannot act when the orchestrator itself is killed (`kill -9`), and a trainer
/// (or evaluator) would run on unseen, holding the CPU or GPU that the resumed run needs; on
/// Linux the kernel kills it when its parent dies (bubblewrap, `--die-with-parent`, passes
/// that on to what it runs).
pub fn libtorch(command: &mut tokio::process::Command) {
    command
        .env("MALLOC_MMAP_THRESHOLD_", "1000000000000")
        .env("MALLOC_TRIM_THRESHOLD_", "1000000000000")
        .kill_on_drop(true);
    #[cfg(target_os = "linux")]
    // SAFETY: prctl and getppid are async-signal-safe and touch only the child about to exec.
    unsafe {
        let parent = std::process::id();
        command.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) == -1 {
                return Err(std::io::Error::last_os_error());
            }
            // A parent killed between the fork and the line above sends no signal: the child
            // would run on, orphaned (seen once in the kill -9 test on a loaded machine).
            if libc::getppid() as u32 != parent {
                return Err(std::io::Error::other("the orchestrator died"));
            }
            Ok(())
        });
    }
}

fn kill_group(pgid: i32) {
    // SAFETY: kill(2) with a negative pid signals the child's own process group only.
    unsafe {
        libc::kill(-pgid, libc::SIGKILL);
    }
}
