//! The trials the search learns from, read from the records of runs (`runs/<tag>/
//! experiments.jsonl`) and the trainer's source at each recorded commit. Scores compare only
//! between runs with the same evaluation contract, device and training budget: a run's are
//! those of its unmodified baseline's result line.

use std::path::Path;

use anyhow::Result;
use prepare::Profile;

use super::{Outcome, Setting, Trial};
use crate::git::Git;
use crate::ledger::{Record, Status};

/// The trainer's source, whose constants the search tunes.
pub const SOURCE: &str = "crates/train/src/main.rs";

/// What makes two runs' scores comparable.
#[derive(Debug, Clone, PartialEq)]
pub struct Context {
    pub contract: String,
    /// `cpu` or `cuda`.
    pub device: String,
    /// Training seconds per run.
    pub budget: f64,
}

impl Context {
    pub fn new(contract: &str, device: Profile, budget: f64) -> Context {
        Context {
            contract: contract.to_string(),
            device: device.device().to_string(),
            budget,
        }
    }

    /// The context of a run, from its baseline's result line.
    fn of_run(records: &[Record]) -> Option<Context> {
        let result = records
            .iter()
            .find(|r| r.seq == 0)?
            .result
            .as_ref()?
            .line()?;
        Some(Context {
            contract: result.contract.clone(),
            device: result.device.clone(),
            budget: result.time_budget_s?,
        })
    }

    fn matches(&self, other: &Context) -> bool {
        self.contract == other.contract
            && self.device == other.device
            && (self.budget - other.budget).abs() < 1e-6
    }
}

/// What a record says of its setting: its score; a failure for a crash or a run stopped before
/// its score (a discard without one); nothing for an LLM's proposal that never finished (its
/// commit is its parent's, which it did not change).
pub fn outcome(record: &Record) -> Option<Outcome> {
    if record.seq > 0 && record.commit == record.parent {
        return None;
    }
    Some(match (record.status, record.val_bpb) {
        (Status::Crash, _) | (_, None) => Outcome::Failed,
        (_, Some(score)) => Outcome::Score(score),
    })
}

/// What the search starts knowing: the trials of the earlier `runs` (by tag) and of this run's
/// `records` so far, those whose scores compare with this run's (`context`), their sources read
/// from the repository `repo`.
pub fn known(
    repo: &Path,
    runs: &[(String, Vec<Record>)],
    records: &[Record],
    context: &Context,
) -> Result<Vec<Trial>> {
    let git = Git::new(repo);
    let mut trials = Vec::new();
    for records in runs.iter().map(|(_, r)| r.as_slice()).chain([records]) {
        trials.extend(self::trials(&git, records, context)?);
    }
    Ok(trials)
}

/// The trials of one run's `records` when its context is `context`, their sources read from
/// `git`'s repository (a commit no longer there is left out).
pub fn trials(git: &Git, records: &[Record], context: &Context) -> Result<Vec<Trial>> {
    if !Context::of_run(records).is_some_and(|c| c.matches(context)) {
        return Ok(Vec::new());
    }
    let outcomes: Vec<(&Record, Outcome)> = records
        .iter()
        .filter_map(|r| Some((r, outcome(r)?)))
        .collect();
    let specs: Vec<String> = outcomes
        .iter()
        .map(|(r, _)| format!("{}:{SOURCE}", r.commit))
        .collect();
    let sources = git.show_files(&specs)?;
    Ok(outcomes
        .into_iter()
        .zip(sources)
        .filter_map(|((_, outcome), source)| {
            Some(Trial {
                setting: Setting::of(&source?),
                outcome,
            })
        })
        .collect())
}
