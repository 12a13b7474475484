//! The JSON (and text) behind the page, at stable paths for scripts, each read afresh from the
//! run's records: the ledger through its own types, the pending experiments, the logs, git.

use std::fs;
use std::path::Path;
use std::time::SystemTime;

use anyhow::{Context, Result};
use serde::Serialize;

use super::Run;
use crate::curve::{self, Point};
use crate::git::Git;
use crate::ledger::{Pending, Pendings, Record, read_records};
use crate::report::summary::{Summary, running_best, running_sigma};
use crate::run_dir::RunDir;

/// `/api/experiments`: every record of `experiments.jsonl` by number, as recorded but for the
/// runs' curves (hundreds of points a run, the bulk of a night's records: `/api/experiments/<seq>`
/// has them), with what the table and the progress plot show beside it; and the summary
/// `report --json` prints.
#[derive(Serialize)]
pub struct Experiments {
    pub tag: String,
    /// Each run's training seconds, as the latest result line states it.
    pub budget_seconds: Option<f64>,
    pub summary: Summary,
    pub experiments: Vec<Row>,
}

#[derive(Serialize)]
pub struct Row {
    #[serde(flatten)]
    pub record: Record,
    /// The best's val_bpb once this experiment was decided (the latest keep's).
    pub best_bpb: Option<f64>,
    /// The noise floor in force then: the plot's band is `best_bpb` ± 2 `noise_sigma`.
    pub noise_sigma: Option<f64>,
    /// The optimizer steps of its first run: on a wall-clock budget a change that makes steps
    /// slower or faster moves the score through them.
    pub steps: Option<u64>,
}

pub fn experiments(run: &Run) -> Result<Experiments> {
    let mut records = read_records(&run.dir)?;
    // With several workers the ledger is in the order experiments finished.
    records.sort_by_key(|r| r.seq);
    let summary = crate::report::summarize(&run.tag, &run.dir, &records)?;
    let budget_seconds = records
        .iter()
        .rev()
        .find_map(|r| r.result.as_ref()?.line()?.time_budget_s);
    let bests = running_best(&records);
    let sigmas = running_sigma(&records);
    let experiments = records
        .into_iter()
        .zip(bests.into_iter().zip(sigmas))
        .map(|(mut record, (best_bpb, noise_sigma))| {
            for trial in record.trials.iter_mut().chain(&mut record.best_trials) {
                trial.curve.clear();
            }
            Row {
                steps: record
                    .trials
                    .first()
                    .and_then(|t| t.num_steps)
                    .or_else(|| Some(record.result.as_ref()?.line()?.num_steps)),
                record,
                best_bpb,
                noise_sigma,
            }
        })
        .collect();
    Ok(Experiments {
        tag: run.tag.clone(),
        budget_seconds,
        summary,
        experiments,
    })
}

/// `/api/live`: the experiments in flight (`pending/`) and each of their runs' logs so far.
#[derive(Serialize)]
pub struct Live {
    pub tag: String,
    pub in_flight: Vec<InFlight>,
}

#[derive(Serialize)]
pub struct InFlight {
    #[serde(flatten)]
    pub pending: Pending,
    /// When the change was committed (its pending record written), RFC 3339.
    pub since: Option<String>,
    /// Its runs that have started, in the order they ran; none while it is built.
    pub runs: Vec<RunLog>,
}

#[derive(Serialize)]
pub struct RunLog {
    /// 0 for `logs/<seq>.log`, k for `logs/<seq>.<k>.log`.
    pub index: usize,
    /// The log, relative to the run's directory.
    pub log: String,
    pub bytes: u64,
    /// When the log last grew, RFC 3339.
    pub updated: Option<String>,
    /// The run's progress so far, from the progress lines in its log.
    pub curve: Vec<Point>,
}

pub fn live(run: &Run) -> Result<Live> {
    let in_flight = Pendings::new(&run.dir)
        .all()?
        .into_iter()
        .map(|pending| {
            Ok(InFlight {
                since: modified(&run.dir.pending(pending.seq)),
                runs: run_logs(&run.dir, pending.seq)?,
                pending,
            })
        })
        .collect::<Result<_>>()?;
    Ok(Live {
        tag: run.tag.clone(),
        in_flight,
    })
}

/// Experiment `seq`'s logs, `logs/<seq>.log` then `logs/<seq>.<k>.log` by `k`.
fn run_logs(dir: &RunDir, seq: u64) -> Result<Vec<RunLog>> {
    let logs = dir.logs_dir();
    let entries = match fs::read_dir(&logs) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("reading {}", logs.display())),
    };
    let mut runs = Vec::new();
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(index) = RunDir::log_index(&name, seq) else {
            continue;
        };
        // A log being written may end in half a line, which the parser skips.
        let text = fs::read(entry.path()).unwrap_or_default();
        runs.push(RunLog {
            index,
            log: format!("logs/{name}"),
            bytes: text.len() as u64,
            updated: modified(&entry.path()),
            curve: curve::parse(&String::from_utf8_lossy(&text)),
        });
    }
    runs.sort_by_key(|r| r.index);
    Ok(runs)
}

fn modified(path: &Path) -> Option<String> {
    let time: SystemTime = fs::metadata(path).ok()?.modified().ok()?;
    Some(chrono::DateTime::<chrono::Local>::from(time).to_rfc3339())
}

/// `/api/experiments/<seq>`: the record of experiment `seq` as recorded, its runs' curves included.
pub fn record(run: &Run, seq: u64) -> Result<Record> {
    read_records(&run.dir)?
        .into_iter()
        .find(|r| r.seq == seq)
        .ok_or_else(|| {
            NoSuchExperiment {
                tag: run.tag.clone(),
                seq,
            }
            .into()
        })
}

/// What the API answers for an experiment the run does not have.
#[derive(Debug, thiserror::Error)]
#[error("run {tag} has no experiment {seq}, recorded or in flight")]
pub struct NoSuchExperiment {
    tag: String,
    seq: u64,
}

/// `/api/experiments/<seq>/log`: every log of experiment `seq`, each under its name.
pub fn logs(run: &Run, seq: u64) -> Result<String> {
    let runs = run_logs(&run.dir, seq)?;
    if runs.is_empty() {
        commit_of(run, seq)?; // a known experiment without a log yet, or none at all
        return Ok(format!("experiment {seq} has no log yet\n"));
    }
    let mut text = String::new();
    for log in runs {
        let path = run.dir.path().join(&log.log);
        let body = fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
        text += &format!("==> {} <==\n{}\n", log.log, String::from_utf8_lossy(&body));
    }
    Ok(text)
}

/// `/api/experiments/<seq>/diff`: the change experiment `seq` made to its parent, as git shows it.
pub fn diff(run: &Run, seq: u64) -> Result<String> {
    let (commit, parent) = commit_of(run, seq)?;
    if parent.is_empty() || parent == commit {
        return Ok(format!(
            "experiment {seq} is the baseline: the run's base commit {commit}, unchanged\n"
        ));
    }
    Git::new(&run.repo)
        .run(&["diff", "--no-color", "--stat", "--patch", &parent, &commit])
        .with_context(|| {
            format!(
                "the commits of experiment {seq} ({parent}..{commit}) are not in this repository"
            )
        })
}

/// The commit and parent of experiment `seq`, recorded or in flight.
fn commit_of(run: &Run, seq: u64) -> Result<(String, String)> {
    if let Some(r) = read_records(&run.dir)?.into_iter().find(|r| r.seq == seq) {
        return Ok((r.commit, r.parent));
    }
    match Pendings::new(&run.dir)
        .all()?
        .into_iter()
        .find(|p| p.seq == seq)
    {
        Some(p) => Ok((p.commit, p.parent)),
        None => Err(NoSuchExperiment {
            tag: run.tag.clone(),
            seq,
        }
        .into()),
    }
}
