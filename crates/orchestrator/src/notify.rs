//! Alerts: autoresearch.toml's `notify = "COMMAND"` runs (through `sh -c`, in its own process
//! group) with one JSON event on stdin whenever something a person would want to hear of
//! happens: a new best, `notify_crashes` crashes in a row, no keep for `notify_idle_hours`,
//! the cost cap reached, the night's end (whatever ended it). The commands run one after
//! another on a task of their own, each for at most [`TIMEOUT`]: a failing or hanging command
//! is logged (`runs/<tag>/notify.log` and the console) and never holds up or stops the night.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde::Serialize;
use tokio::sync::mpsc;

use crate::config::Settings;
use crate::ledger::{Record, Status};
use crate::process::output_fed;
use crate::progress::Progress;
use crate::run_dir::RunDir;
use crate::text::one_line;

/// The longest one notify command may run before its process group is killed.
pub const TIMEOUT: Duration = Duration::from_secs(30);

/// autoresearch.toml's alert settings, resolved.
#[derive(Debug, Clone)]
pub struct Alerts {
    /// The command; None sends nothing.
    pub command: Option<String>,
    /// Crashes in a row that make an alert (and again at every multiple).
    pub crashes: u32,
    /// How long the night may go without a keep before an alert (and again after as long).
    pub idle: Duration,
}

pub const DEFAULT_CRASHES: u32 = 3;
pub const DEFAULT_IDLE_HOURS: f64 = 3.0;

impl Alerts {
    pub fn of(settings: &Settings) -> Alerts {
        let hours = settings.notify_idle_hours.unwrap_or(DEFAULT_IDLE_HOURS);
        Alerts {
            command: settings.notify.clone(),
            crashes: settings.notify_crashes.unwrap_or(DEFAULT_CRASHES),
            idle: Duration::from_secs_f64(hours * 3600.0),
        }
    }
}

/// What happened, as the command reads it on stdin: `{"event": "new_best", "tag": ..,
/// "time": .., "message": .., ...}` with the fields of its kind.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    NewBest {
        seq: u64,
        val_bpb: Option<f64>,
        /// The gain as judged (positive is better).
        gain: Option<f64>,
        description: String,
    },
    CrashStreak {
        crashes: u32,
        seq: u64,
        reason: Option<String>,
    },
    NoKeep {
        hours: f64,
    },
    CostCap {
        spent_usd: f64,
        max_cost_usd: f64,
    },
    NightEnd {
        /// `finished` (its experiments done), `stopped` (Ctrl-C), `cost_cap` or `error`.
        how: End,
        error: Option<String>,
        experiments: usize,
        best_bpb: Option<f64>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum End {
    Finished,
    Stopped,
    CostCap,
    Error,
}

#[derive(Serialize)]
struct Envelope<'a> {
    tag: &'a str,
    time: String,
    /// The event in words, for commands that only pass text on (`jq -r .message | mail ...`).
    message: String,
    #[serde(flatten)]
    event: &'a Event,
}

impl Event {
    fn message(&self, tag: &str) -> String {
        match self {
            Event::NewBest {
                seq,
                val_bpb,
                gain,
                description,
            } => format!(
                "{tag}: new best #{seq} val_bpb {} (gain {}): {description}",
                val_bpb.map_or("-".into(), |v| format!("{v:.6}")),
                gain.map_or("-".into(), |g| format!("{g:.6}"))
            ),
            Event::CrashStreak {
                crashes,
                seq,
                reason,
            } => format!(
                "{tag}: {crashes} crashes in a row, the latest #{seq}: {}",
                reason.as_deref().unwrap_or("-")
            ),
            Event::NoKeep { hours } => format!("{tag}: no keep for {hours:.1} hours"),
            Event::CostCap {
                spent_usd,
                max_cost_usd,
            } => format!(
                "{tag}: the LLM has cost ${spent_usd:.2}, the cap max_cost_usd is ${max_cost_usd}: \
                 no new experiments; raise it and --resume to go on"
            ),
            Event::NightEnd {
                how,
                error,
                experiments,
                best_bpb,
            } => format!(
                "{tag}: the night ended ({}) after {experiments} experiments, best val_bpb {}{}",
                serde_json::to_value(how)
                    .unwrap_or_default()
                    .as_str()
                    .unwrap_or("-"),
                best_bpb.map_or("-".into(), |v| format!("{v:.6}")),
                error
                    .as_deref()
                    .map(|e| format!(": {e}"))
                    .unwrap_or_default()
            ),
        }
    }

    /// The night's end: how `night` ended, and the records in `run_dir` as they are now.
    pub fn night_end(run_dir: &RunDir, night: &Result<End>) -> Event {
        let records = crate::ledger::read_records(run_dir).unwrap_or_default();
        let (how, error) = match night {
            Ok(end) => (*end, None),
            Err(e) => (End::Error, Some(format!("{e:#}"))),
        };
        Event::NightEnd {
            how,
            error,
            experiments: records.len(),
            best_bpb: crate::ledger::best(&records).and_then(|r| r.val_bpb),
        }
    }

    /// The alerts a record raises: a new best, or a crash streak reaching a multiple of
    /// `crashes` (the changes after the baseline, in the order they were recorded).
    pub fn of_record(records: &[Record], crashes: u32) -> Option<Event> {
        let last = records.last()?;
        if last.seq == 0 {
            return None;
        }
        match last.status {
            Status::Keep => Some(Event::NewBest {
                seq: last.seq,
                val_bpb: last.val_bpb,
                gain: last.delta.map(|d| -d),
                description: last.description.clone(),
            }),
            Status::Crash => {
                let streak = records
                    .iter()
                    .rev()
                    .take_while(|r| r.seq > 0 && r.status == Status::Crash)
                    .count() as u32;
                streak.is_multiple_of(crashes).then(|| Event::CrashStreak {
                    crashes: streak,
                    seq: last.seq,
                    reason: last.reason.clone(),
                })
            }
            Status::Discard | Status::Stale => None,
        }
    }
}

/// Sends events to the notify command, one at a time, in the order they were raised. Clones
/// share the queue.
#[derive(Clone)]
pub struct Notifier {
    tag: String,
    queue: Option<mpsc::UnboundedSender<String>>,
}

/// The task running the notify command; see [`Sending::wait`].
pub struct Sending(Option<tokio::task::JoinHandle<()>>);

impl Notifier {
    /// Checks that the command's program exists (a typo is said at start, not at the first
    /// event hours later) and starts the task that runs it in `repo` (where autoresearch.toml's
    /// relative paths start); logs go to `run_dir/notify.log`.
    pub fn start(
        alerts: &Alerts,
        tag: &str,
        repo: &Path,
        run_dir: &RunDir,
        progress: Progress,
    ) -> Result<(Notifier, Sending)> {
        let mut notifier = Notifier {
            tag: tag.to_string(),
            queue: None,
        };
        let Some(command) = alerts.command.clone() else {
            return Ok((notifier, Sending(None)));
        };
        check_program(&command, repo)?;
        std::fs::create_dir_all(run_dir.path())
            .with_context(|| format!("creating {}", run_dir.path().display()))?;
        let (queue, events) = mpsc::unbounded_channel();
        let runner = Runner {
            command,
            repo: repo.to_path_buf(),
            dir: run_dir.clone(),
            timeout: TIMEOUT,
            progress,
        };
        notifier.queue = Some(queue);
        Ok((notifier, Sending(Some(tokio::spawn(runner.each(events))))))
    }

    /// Queues `event`; returns at once.
    pub fn send(&self, event: &Event) {
        let Some(queue) = &self.queue else { return };
        let envelope = Envelope {
            tag: &self.tag,
            time: chrono::Local::now().to_rfc3339(),
            message: event.message(&self.tag),
            event,
        };
        if let Ok(json) = serde_json::to_string(&envelope) {
            queue.send(json).ok();
        }
    }
}

impl Sending {
    /// Waits until every queued event's command has run (each for at most [`TIMEOUT`]), once
    /// every [`Notifier`] is dropped.
    pub async fn wait(self) {
        if let Some(task) = self.0 {
            task.await.ok();
        }
    }
}

/// Runs the command once per event.
struct Runner {
    command: String,
    /// Where it runs.
    repo: PathBuf,
    /// Where its input and log are written.
    dir: RunDir,
    timeout: Duration,
    progress: Progress,
}

impl Runner {
    async fn each(self, mut events: mpsc::UnboundedReceiver<String>) {
        while let Some(event) = events.recv().await {
            let outcome = self.run(&event).await;
            let line = match &outcome {
                Ok(()) => format!("{event}\n  ok\n"),
                Err(e) => {
                    self.progress.println(&format!(
                        "warning: the notify command failed ({e:#}); the night goes on; see {}",
                        self.dir.notify_log().display()
                    ));
                    format!("{event}\n  failed: {e:#}\n")
                }
            };
            let log = self.dir.notify_log();
            OpenOptions::new()
                .create(true)
                .append(true)
                .open(&log)
                .and_then(|mut f| f.write_all(line.as_bytes()))
                .ok();
        }
    }

    /// One run of the command with `event` on stdin.
    async fn run(&self, event: &str) -> Result<()> {
        // From a file rather than a pipe: a command that never reads its stdin gets no SIGPIPE
        // and the sender never blocks.
        let input = self.dir.notify_event();
        std::fs::write(&input, format!("{event}\n"))
            .with_context(|| format!("writing {}", input.display()))?;
        let stdin = std::fs::File::open(&input)?;
        let mut command = tokio::process::Command::new("sh");
        command.arg("-c").arg(&self.command).current_dir(&self.repo);
        let out = output_fed(command, Stdio::from(stdin), self.timeout).await?;
        match out.status {
            None => bail!(
                "it ran past {} s and was killed",
                self.timeout.as_secs_f64()
            ),
            Some(status) if !status.success() => {
                bail!("{status}: {}", one_line(out.stderr.trim(), 300))
            }
            Some(_) => Ok(()),
        }
    }
}

/// Refuses a command whose program is not there: `sh -c 'command -v PROGRAM'`. Shell syntax
/// in the first word (an assignment, a subshell) is left to the shell.
fn check_program(command: &str, repo: &Path) -> Result<()> {
    let Some(program) = command.split_whitespace().next() else {
        bail!("notify is empty in autoresearch.toml: give a command, or remove the key");
    };
    if program.contains(['=', '(', '$', '{', '`', '\'', '"']) {
        return Ok(());
    }
    let found = std::process::Command::new("sh")
        .args(["-c", "command -v -- \"$1\"", "sh", program])
        .current_dir(repo)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .context("running sh to find the notify command")?;
    if !found.success() {
        bail!(
            "notify = {command:?} in autoresearch.toml: `{program}` is not a command here (not on \
             PATH, not a file); fix the key or remove it"
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn runner(dir: &Path, command: &str, timeout: Duration) -> Runner {
        Runner {
            command: command.into(),
            repo: dir.to_path_buf(),
            dir: RunDir::at(dir),
            timeout,
            progress: Progress::new(),
        }
    }

    #[tokio::test]
    async fn a_failing_or_hanging_command_is_logged_and_the_next_event_still_goes_out() {
        let dir = tempfile::tempdir().unwrap();
        let events = dir.path().join("events");
        let command = format!(
            "read event; case \"$event\" in *hang*) sleep 60;; *fail*) echo broken >&2; exit 3;; \
             esac; echo \"$event\" >> {}",
            events.display()
        );
        let (queue, received) = mpsc::unbounded_channel();
        for event in [
            "{\"e\": \"hang\"}",
            "{\"e\": \"fail\"}",
            "{\"e\": \"fine\"}",
        ] {
            queue.send(event.to_string()).unwrap();
        }
        drop(queue);
        let started = std::time::Instant::now();
        runner(dir.path(), &command, Duration::from_secs(1))
            .each(received)
            .await;
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the hang was cut"
        );
        assert_eq!(
            std::fs::read_to_string(&events).unwrap(),
            "{\"e\": \"fine\"}\n"
        );
        let log = std::fs::read_to_string(dir.path().join("notify.log")).unwrap();
        assert!(
            log.contains("failed: it ran past 1 s and was killed"),
            "{log}"
        );
        assert!(log.contains("failed: exit status: 3: broken"), "{log}");
        assert!(log.ends_with("{\"e\": \"fine\"}\n  ok\n"), "{log}");
    }

    #[test]
    fn a_missing_program_is_refused_at_start() {
        let dir = tempfile::tempdir().unwrap();
        let check = |command| check_program(command, dir.path());
        let err = format!("{:#}", check("no-such-notifier --flag").unwrap_err());
        assert!(
            err.contains("`no-such-notifier` is not a command here"),
            "{err}"
        );
        check("cat >> events.jsonl").unwrap();
        check("FOO=1 cat").unwrap();
        // A script given relative to the repository is looked for there.
        check("./alert.sh").unwrap_err();
        std::fs::write(dir.path().join("alert.sh"), "cat\n").unwrap();
        check("./alert.sh").unwrap();
    }

    #[test]
    fn records_raise_a_new_best_and_every_nth_crash_in_a_row() {
        let crash = |seq| Record::sample(seq, Status::Crash, None);
        let mut records = vec![Record::sample(0, Status::Keep, Some(1.5))];
        assert!(
            Event::of_record(&records, 2).is_none(),
            "the baseline is no news"
        );
        records.push(Record {
            delta: Some(-0.25),
            ..Record::sample(1, Status::Keep, Some(1.25))
        });
        let Some(Event::NewBest { seq: 1, gain, .. }) = Event::of_record(&records, 2) else {
            panic!("a new best");
        };
        assert_eq!(gain, Some(0.25));
        let streaks: Vec<Option<u32>> = (2..7)
            .map(|seq| {
                records.push(crash(seq));
                match Event::of_record(&records, 2) {
                    Some(Event::CrashStreak { crashes, .. }) => Some(crashes),
                    _ => None,
                }
            })
            .collect();
        assert_eq!(streaks, [None, Some(2), None, Some(4), None]);
    }
}
