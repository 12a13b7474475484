//! A job followed until it ends (its `done` file, or why there is none), re-attached to after a
//! restart, and the holdout's job.

use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Result, bail};

use super::Slurm;
use super::cli::{CancelOnDrop, HOPELESS, State, minutes_text, scancel};
use super::files::{Done, Handle, field, unix_now};
use crate::Stop;
use crate::early_stop::Follower;
use crate::executor::{Job, JobGone};
use crate::ledger::Stopped;
use crate::progress::Progress;
use crate::scoring::{self, Score, ScoreError, Unscored};

/// How often a job is looked at: a `squeue` and a few `stat`s, cheap for the controller.
pub(super) const POLL: Duration = Duration::from_millis(500);
/// How long a job Slurm says completed may take to show its `done` file here (a network
/// filesystem's attribute cache can hide a new file for some seconds).
pub(super) const DONE_GRACE: Duration = Duration::from_secs(30);

pub(super) enum Ended {
    Done(Done),
    /// No results, and why.
    Gone(JobGone),
    Interrupted,
    /// Cancelled by the trainer's follower: clearly worse than the best's runs.
    Stopped(Stopped),
}

/// A trainer's job as it is followed: its log's new lines move the status line and feed the
/// follower that may stop it.
pub(super) struct Following<'a> {
    progress: &'a Progress,
    tail: LogTail,
    follower: &'a mut Follower,
}

impl<'a> Following<'a> {
    pub(super) fn new(
        progress: &'a Progress,
        log: &Path,
        follower: &'a mut Follower,
    ) -> Following<'a> {
        Following {
            progress,
            tail: LogTail::new(log),
            follower,
        }
    }

    /// Feeds the log's new lines on; where the follower stops the run, when it does.
    fn feed(&mut self) -> Option<Stopped> {
        let (progress, follower) = (self.progress, &mut *self.follower);
        let mut stopped = None;
        self.tail.feed(|line| {
            progress.trainer_line(line);
            stopped = stopped.or(follower.line(line));
        });
        stopped
    }
}

impl Slurm {
    /// The job that runs (or ran) `job` before a restart: re-attached when it is still queued
    /// or running, taken when it finished and left its results; None when it must be submitted.
    pub(super) async fn attach(
        &self,
        job: &Job,
        dir: &Path,
        progress: &Progress,
    ) -> Result<Option<Handle>> {
        let name = self.job_name(job);
        let say = |what: &str| {
            progress.println(&format!(
                "slurm | experiment {} run {}: {what}",
                job.seq, job.index
            ))
        };
        let Some(handle) = Handle::read(&job.handle) else {
            // Killed between sbatch and writing the handle: the job is found by its name.
            let Some(id) = self.queued_by_name(&name, dir).await? else {
                return Ok(None);
            };
            let handle = Handle {
                id,
                dir: dir.to_path_buf(),
                submitted: None,
            };
            handle.write(&job.handle)?;
            say(&format!(
                "re-attached to job {id}, found by its name {name}"
            ));
            return Ok(Some(handle));
        };
        if Done::read(dir).is_some_and(|d| d.job == handle.id) {
            say(&format!(
                "job {} finished while the orchestrator was away; its results are taken",
                handle.id
            ));
            return Ok(Some(handle));
        }
        match self.state(handle.id).await? {
            State::Queued(_) | State::Active
                if self.name_of(handle.id).await.as_ref() == Some(&name) =>
            {
                say(&format!("re-attached to job {}", handle.id));
                Ok(Some(handle))
            }
            _ => Ok(None),
        }
    }

    /// Follows job `handle` until it ends: its `done` file, or why there is none. `stop`
    /// cancels it; a trainer's job is `following` its log, and cancelled when its follower stops
    /// it.
    pub(super) async fn follow(
        &self,
        handle: &Handle,
        mut stop: Option<&mut Stop>,
        mut following: Option<Following<'_>>,
    ) -> Result<Ended> {
        let id = handle.id;
        let mut shown = String::new();
        let mut unreachable: Option<Instant> = None;
        loop {
            if let Some(done) = Done::read(&handle.dir).filter(|d| d.job == id) {
                return Ok(Ended::Done(done));
            }
            if let Some(stopped) = following.as_mut().and_then(Following::feed) {
                scancel(id).await?;
                return Ok(Ended::Stopped(stopped));
            }
            let state = self.state_while_unreachable(id, &mut unreachable).await?;
            let phase = match &state {
                State::Queued(reason) if HOPELESS.contains(&reason.as_str()) => {
                    scancel(id).await.ok();
                    bail!(
                        "Slurm will not start job {id} as submitted ({reason}): its time limit \
                         (the trial's limits, docs/slurm.md) or its options ({}) are over what the \
                         partition, account or QOS allows. Check [slurm] in autoresearch.toml, or \
                         lower the budget or grace",
                        self.shown_options(true)
                    );
                }
                State::Queued(reason) if reason == "None" => "queued".into(),
                State::Queued(reason) => format!("queued ({reason})"),
                State::Active => "running".into(),
                State::Ended(_) | State::Unknown => {
                    return Ok(self.gone(handle, &state).await);
                }
            };
            if phase != shown
                && let Some(f) = &following
            {
                f.progress.phase(&phase);
                shown = phase;
            }
            tokio::select! {
                _ = tokio::time::sleep(POLL) => {}
                _ = stopped(&mut stop) => {
                    scancel(id).await?;
                    return Ok(Ended::Interrupted);
                }
            }
        }
    }

    /// Where job `id` is; while Slurm does not answer (`unreachable` since when), for up to 10
    /// minutes, still active: the controller may be restarting or failing over, the job goes on
    /// meanwhile, and its `done` file still tells when it ends.
    async fn state_while_unreachable(
        &self,
        id: u64,
        unreachable: &mut Option<Instant>,
    ) -> Result<State> {
        match self.state(id).await {
            Ok(state) => {
                *unreachable = None;
                Ok(state)
            }
            Err(e) => {
                let since = *unreachable.get_or_insert_with(Instant::now);
                if since.elapsed() > Duration::from_secs(600) {
                    return Err(e.context(format!(
                        "Slurm has not answered about job {id} for 10 minutes"
                    )));
                }
                Ok(State::Active)
            }
        }
    }

    /// A job that ended without (yet) showing its `done` file: its results after all, or why
    /// there are none.
    pub(super) async fn gone(&self, handle: &Handle, state: &State) -> Ended {
        let grace = match state {
            State::Ended(s) if s == "COMPLETED" => DONE_GRACE,
            _ => POLL,
        };
        let waited = Instant::now();
        loop {
            if let Some(done) = Done::read(&handle.dir).filter(|d| d.job == handle.id) {
                return Ended::Done(done);
            }
            if waited.elapsed() >= grace {
                break;
            }
            tokio::time::sleep(POLL).await;
        }
        Ended::Gone(self.ended(handle.id, state).await)
    }

    /// Why job `id`, which left no results, ended, from Slurm's records of it.
    pub(super) async fn ended(&self, id: u64, state: &State) -> JobGone {
        let info = self.final_info(id).await;
        let get = |key: &str| {
            info.as_ref()
                .and_then(|i| field(i, key))
                .unwrap_or("?")
                .to_string()
        };
        let job_state = match (&info, state) {
            (Some(_), _) => get("JobState"),
            (None, State::Ended(s)) => s.clone(),
            (None, _) => return JobGone::Forgotten { id },
        };
        // Slurm's words for a state are its first word (`CANCELLED by 0`).
        let job_state = job_state
            .split_whitespace()
            .next()
            .unwrap_or("?")
            .to_string();
        let reason = match get("Reason").as_str() {
            "None" | "?" => String::new(),
            r => format!(", reason {r}"),
        };
        match job_state.as_str() {
            "TIMEOUT" => JobGone::Timeout {
                id,
                minutes: minutes_text(&get("TimeLimit")),
            },
            "CANCELLED" => JobGone::Cancelled { id, reason },
            "NODE_FAIL" => JobGone::NodeFailed {
                id,
                node: get("NodeList"),
            },
            "OUT_OF_MEMORY" => JobGone::OutOfMemory { id },
            "COMPLETED" => JobGone::NotShared {
                id,
                dir: self.run_dir.slurm_dir(),
            },
            _ => JobGone::Other {
                id,
                state: job_state,
                exit: get("ExitCode"),
                reason,
            },
        }
    }

    /// The holdout: the evaluator on the test split, as a job of its own (the GPU is on the
    /// nodes).
    pub(super) async fn holdout_job(
        &self,
        model: &Path,
        limit: Duration,
    ) -> Result<Score, ScoreError> {
        self.evaluator.check()?;
        scoring::exported(model)?;
        let failed = |e: anyhow::Error| {
            ScoreError::from(Unscored::Job {
                why: format!("{e:#}"),
            })
        };
        let run = model
            .parent()
            .and_then(Path::file_name)
            .map_or("model".into(), |n| n.to_string_lossy().into_owned());
        let dir = self.run_dir.slurm_holdout(&run);
        std::fs::remove_dir_all(&dir).ok();
        std::fs::create_dir_all(&dir).map_err(|e| failed(e.into()))?;
        let script = self.holdout_script(&dir, model, limit).map_err(failed)?;
        let name = format!("autoresearch-{}-holdout-{run}", self.tag);
        let submitted = unix_now();
        let id = self
            .sbatch(&dir, &script, &name, limit, &dir.join("output"), true)
            .await
            .map_err(failed)?;
        self.journal(id, &format!("holdout-{run}"));
        // Nothing resumes a holdout: a job left behind would only hold a GPU.
        let mut cancel = CancelOnDrop(Some(id));
        let handle = Handle {
            id,
            dir: dir.clone(),
            submitted: Some(submitted),
        };
        let ended = self.follow(&handle, None, None).await.map_err(failed)?;
        cancel.0 = None;
        match ended {
            Ended::Done(done) => self.verdict(&dir, &done, limit, model),
            Ended::Gone(why) => Err(Unscored::Job {
                why: why.to_string(),
            }
            .into()),
            Ended::Interrupted => Err(Unscored::Interrupted.into()),
            Ended::Stopped(stopped) => Err(Unscored::Job {
                why: stopped.to_string(),
            }
            .into()),
        }
    }
}

/// The new complete lines of a log that a job is writing.
pub(super) struct LogTail {
    path: PathBuf,
    offset: u64,
}

impl LogTail {
    fn new(path: &Path) -> LogTail {
        LogTail {
            path: path.to_path_buf(),
            offset: 0,
        }
    }

    fn feed(&mut self, mut line: impl FnMut(&str)) {
        let Ok(mut file) = std::fs::File::open(&self.path) else {
            return;
        };
        let len = file.metadata().map_or(0, |m| m.len());
        // Far behind (a trainer printing fast): only the latest lines matter for progress.
        self.offset = self.offset.max(len.saturating_sub(64 << 10));
        let mut bytes = Vec::new();
        if file.seek(SeekFrom::Start(self.offset)).is_err() || file.read_to_end(&mut bytes).is_err()
        {
            return;
        }
        let Some(last) = bytes.iter().rposition(|&b| b == b'\n') else {
            return;
        };
        self.offset += last as u64 + 1;
        for l in String::from_utf8_lossy(&bytes[..last]).lines() {
            line(l);
        }
    }
}

pub(super) async fn stopped(stop: &mut Option<&mut Stop>) {
    match stop {
        Some(stop) => stop.wait().await,
        None => std::future::pending().await,
    }
}
