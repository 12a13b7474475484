//! What a job leaves in its directory (`done`, `stdout`, `verdict`, `evaluator.stderr`, the
//! model) and the handle file that finds it again, read back into the trial's outcome.

use std::io::{Read, Seek, SeekFrom};
use std::ops::ControlFlow;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::time::{Duration, SystemTime};

use anyhow::Result;

use super::Slurm;
use super::script::STDERR_TAIL;
use crate::curve::Point;
use crate::executor::trial::{MODEL_FILE, finished, scored};
use crate::executor::{Crash, Job, Outcome};
use crate::process::{self, Exit, MAX_LINE};
use crate::scoring::{self, STDERR_LINES, Score, ScoreError, Unscored};

/// A run's job, as its handle file holds it: the id, the directory its results go to, and when
/// it was submitted (unknown for a job found again by its name).
pub(super) struct Handle {
    pub(super) id: u64,
    pub(super) dir: PathBuf,
    pub(super) submitted: Option<f64>,
}

impl Handle {
    pub(super) fn read(path: &Path) -> Option<Handle> {
        let text = std::fs::read_to_string(path).ok()?;
        let mut lines = text.lines();
        Some(Handle {
            id: lines.next()?.trim().parse().ok()?,
            dir: PathBuf::from(lines.next()?),
            submitted: lines.next().and_then(|s| s.parse().ok()),
        })
    }

    pub(super) fn write(&self, path: &Path) -> Result<()> {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        let submitted = self.submitted.map_or(String::new(), |s| format!("{s:.3}"));
        let text = format!("{}\n{}\n{submitted}\n", self.id, self.dir.display());
        prepare::atomic::write(path, text.as_bytes())
    }
}

/// What a job's `done` file says.
pub(super) struct Done {
    pub(super) job: u64,
    pub(super) node: String,
    pub(super) job_start: f64,
    pub(super) end: f64,
    pub(super) train: Option<Phase>,
    pub(super) eval: Option<Phase>,
}

/// One process of a job: its exit code (the shell's: 128 + n for signal n) and times.
#[derive(Clone, Copy, Default)]
pub(super) struct Phase {
    pub(super) rc: i32,
    pub(super) start: f64,
    pub(super) end: f64,
}

impl Phase {
    pub(super) fn seconds(&self) -> f64 {
        (self.end - self.start).max(0.0)
    }

    /// Killed (`timeout -s KILL`) at `limit`.
    pub(super) fn killed_at(&self, limit: Duration) -> bool {
        self.rc == 128 + libc::SIGKILL && self.seconds() >= limit.as_secs_f64() - 0.5
    }
}

impl Done {
    pub(super) fn read(dir: &Path) -> Option<Done> {
        let fields = read_fields(&dir.join("done"))?;
        let phase = |name: &str| {
            Some(Phase {
                rc: number(&fields, &format!("{name}_rc"))? as i32,
                start: number(&fields, &format!("{name}_start"))?,
                end: number(&fields, &format!("{name}_end"))?,
            })
        };
        Some(Done {
            job: field(&fields, "job")?.parse().ok()?,
            node: field(&fields, "node").unwrap_or("?").to_string(),
            job_start: number(&fields, "job_start")?,
            end: number(&fields, "end")?,
            train: phase("train"),
            eval: phase("eval"),
        })
    }
}

impl Slurm {
    /// The trial's outcome from what its job left in `dir`.
    pub(super) fn outcome(
        &self,
        job: &Job,
        dir: &Path,
        done: &Done,
        curve: Vec<Point>,
    ) -> Result<Outcome> {
        let train = done.train.unwrap_or_default();
        let run_seconds = train.seconds();
        let exit = if train.killed_at(job.limits.train) {
            let reason = Crash::killed(&job.limits);
            note(&job.log, &format!("orchestrator: {reason}"));
            Exit::TimedOut
        } else {
            Exit::Exited {
                status: status(train.rc),
                result: result_line(&dir.join("stdout")),
            }
        };
        match finished(exit, job, curve, run_seconds) {
            ControlFlow::Break(outcome) => Ok(outcome),
            ControlFlow::Continue(run) => {
                let model = dir.join(MODEL_FILE);
                let score = self.verdict(dir, done, job.limits.eval, &model);
                scored(job, run, model, score)
            }
        }
    }

    /// The evaluator's verdict that a job left in `dir`, believed only if the evaluator and the
    /// data still hash as at start.
    pub(super) fn verdict(
        &self,
        dir: &Path,
        done: &Done,
        limit: Duration,
        model: &Path,
    ) -> Result<Score, ScoreError> {
        self.evaluator.check()?;
        scoring::exported(model)?;
        let Some(eval) = done.eval else {
            return Err(Unscored::NotRun.into());
        };
        if eval.killed_at(limit) {
            return Err(Unscored::TimedOut { limit }.into());
        }
        let verdict = read_bounded(&dir.join("verdict"), scoring::MAX_VERDICT);
        let stderr = read_bounded(&dir.join("evaluator.stderr"), STDERR_TAIL as u64);
        let lines: Vec<&str> = stderr.lines().collect();
        let stderr = lines[lines.len().saturating_sub(STDERR_LINES)..].join(" | ");
        scoring::verdict_of(&verdict, status(eval.rc), &stderr)
    }
}

/// The latency figures of a finished job, for its log.
pub(super) fn timing(handle: &Handle, done: &Done) -> String {
    let queued = handle
        .submitted
        .map_or("?".into(), |s| format!("{:.2}", done.job_start - s));
    format!(
        "orchestrator: Slurm job {} on node {}: started {queued} s after submission, ran {:.1} s, \
         seen done {:.2} s after it ended",
        handle.id,
        done.node,
        done.end - done.job_start,
        unix_now() - done.end
    )
}

/// Appends a note to a trial's log.
pub(super) fn note(log: &Path, text: &str) {
    use std::io::Write;
    if let Ok(mut f) = std::fs::OpenOptions::new().append(true).open(log) {
        writeln!(f, "{text}").ok();
    }
}

/// The trainer's result line: its last non-empty stdout line, when that is a JSON object.
pub(super) fn result_line(stdout: &Path) -> Option<serde_json::Value> {
    let text = read_bounded_tail(stdout, 2 * MAX_LINE as u64);
    let line = text.lines().rev().find(|l| !l.trim().is_empty())?;
    process::result_line(line)
}

pub(super) fn read_bounded(path: &Path, limit: u64) -> String {
    let mut text = Vec::new();
    if let Ok(file) = std::fs::File::open(path) {
        file.take(limit).read_to_end(&mut text).ok();
    }
    String::from_utf8_lossy(&text).into_owned()
}

pub(super) fn read_bounded_tail(path: &Path, limit: u64) -> String {
    let mut text = Vec::new();
    if let Ok(mut file) = std::fs::File::open(path) {
        let len = file.metadata().map_or(0, |m| m.len());
        if file
            .seek(SeekFrom::Start(len.saturating_sub(limit)))
            .is_ok()
        {
            file.read_to_end(&mut text).ok();
        }
    }
    String::from_utf8_lossy(&text).into_owned()
}

/// A file of `key=value` words (a job's `done`, the probe's reply); None until it exists.
pub(super) fn read_fields(path: &Path) -> Option<String> {
    std::fs::read_to_string(path).ok()
}

/// The value of `key=` in `Key=value` text (space- or line-separated, as `scontrol -o` prints).
pub(super) fn field<'t>(text: &'t str, key: &str) -> Option<&'t str> {
    let prefix = format!("{key}=");
    text.split_whitespace()
        .find_map(|word| word.strip_prefix(prefix.as_str()))
}

pub(super) fn number(text: &str, key: &str) -> Option<f64> {
    field(text, key)?.parse().ok()
}

/// `ExitStatus` of a shell exit code, shown as `Local`'s are ("exit status: 1").
pub(super) fn status(rc: i32) -> ExitStatus {
    ExitStatus::from_raw((rc & 0xff) << 8)
}

pub(super) fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::super::cli::{minutes_text, pattern};
    use super::*;

    #[test]
    fn fields_and_limits_are_read_as_slurm_prints_them() {
        let line = "JobId=5 JobName=autoresearch-t-1.0 JobState=TIMEOUT Reason=TimeLimit \
                    ExitCode=0:15 TimeLimit=00:01:00 NodeList=vm";
        assert_eq!(field(line, "JobState"), Some("TIMEOUT"));
        assert_eq!(field(line, "State"), None);
        assert_eq!(minutes_text(field(line, "TimeLimit").unwrap()), "1 min");
        assert_eq!(minutes_text("1-02:03:00"), "1563 min");
        assert_eq!(minutes_text("UNLIMITED"), "UNLIMITED");
        assert_eq!(pattern(Path::new("/r/a%b")), "/r/a%%b");
        assert_eq!(status(137).to_string(), "exit status: 137");
    }

    #[test]
    fn the_result_line_is_the_last_json_object_on_stdout() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("stdout");
        std::fs::write(&path, "step 1\n{\"status\":\"ok\"}\n\n").unwrap();
        assert_eq!(result_line(&path).unwrap()["status"], "ok");
        std::fs::write(&path, "{\"status\":\"ok\"}\nnot json\n").unwrap();
        assert!(result_line(&path).is_none());
    }
}
