//! The run's records under `runs/<tag>/`: `experiments.jsonl` (one JSON object per experiment,
//! append-only, the source of truth for `--resume`), `results.tsv` (the original's format,
//! rewritten from the records after every experiment), `pending/` (the experiments under way)
//! and `logs/` (one log per training run, or why none ran).

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use prepare::ResultLine;
use serde::{Deserialize, Serialize};

use crate::curve::Point;
use crate::decide::{self, Noise};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Keep,
    Discard,
    /// It beat the best it started from, but a newer best came first and its change no longer
    /// applies there.
    Stale,
    Crash,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Keep => "keep",
            Status::Discard => "discard",
            Status::Stale => "stale",
            Status::Crash => "crash",
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Record {
    /// 0 is the unmodified baseline.
    pub seq: u64,
    pub commit: String,
    pub parent: String,
    pub status: Status,
    /// Why a crash was a crash (build failed, timed out, exit code, no result line...).
    pub reason: Option<String>,
    pub description: String,
    pub val_bpb: Option<f64>,
    pub peak_memory_mb: Option<f64>,
    /// The trainer's whole result line.
    pub result: Option<Printed>,
    pub think_seconds: f64,
    pub build_seconds: f64,
    pub run_seconds: f64,
    pub agent_tokens: u64,
    /// program.md changed since the previous experiment.
    pub program_changed: bool,
    pub finished_at: String,
    /// Every training run of this commit: the first, and more when the first was within the
    /// noise (the baseline's runs measure the noise). `val_bpb` is their mean.
    #[serde(default)]
    pub trials: Vec<Trial>,
    /// Re-runs of the best kept commit beside this one, for a comparison side by side:
    /// `best_trials[i]` ran next to `trials[i]`, with the same seed.
    #[serde(default)]
    pub best_trials: Vec<Trial>,
    /// The noise floor (standard deviation of val_bpb between runs) the decision used, or the
    /// one measured from this experiment's runs when `sigma_measured`.
    #[serde(default)]
    pub sigma: Option<f64>,
    #[serde(default)]
    pub sigma_measured: bool,
    /// The gain as judged (negative is better): the mean of the paired differences when the
    /// change ran side by side with the best, else val_bpb minus the best's.
    #[serde(default)]
    pub delta: Option<f64>,
    /// The decision rule that applied, in words.
    #[serde(default)]
    pub rule: Option<String>,
    /// Holdout: the protected score on the test split, for each new best only. Never shown to
    /// the agent.
    #[serde(default)]
    pub test_bpb: Option<f64>,
    /// Warnings for people: the trainer's own val_bpb disagrees with the protected score, a new
    /// best got worse on the test split, ...
    #[serde(default)]
    pub flags: Vec<String>,
    /// Seconds of protected evaluation, every run's and the holdout's.
    #[serde(default)]
    pub eval_seconds: f64,
    /// On the first record only: what every score of the run rests on, checked on `--resume`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pins: Option<Pins>,
    /// The kept experiment whose keep this one revoked: its trainer, re-run beside this change,
    /// was judged non-causal, so it is no longer the best and the branch went back to the keep
    /// before it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked: Option<u64>,
    /// On the first record only: where the run started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start: Option<Start>,
}

/// Where a run started: the commit its branch was made at, what `--from` named (none: the
/// checkout's HEAD), and the earlier runs its memory held.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Start {
    pub commit: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    #[serde(default)]
    pub memory: Vec<String>,
}

/// What a trainer printed as its result line: the line of docs/contract.md, or, from a trainer
/// that broke the contract, whatever JSON object it printed instead (its crash's evidence).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Printed {
    Line(ResultLine),
    Other(serde_json::Value),
}

impl Printed {
    pub fn line(&self) -> Option<&ResultLine> {
        match self {
            Printed::Line(line) => Some(line),
            Printed::Other(_) => None,
        }
    }
}

/// The run's fixed ground, pinned in its first record: a `--resume` with another evaluator or
/// other scored data refuses to continue, as its scores would not compare.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Pins {
    /// sha256 of the protected evaluator built from the base commit.
    pub evaluator_sha256: String,
    /// sha256 of the scored data files (contract, token byte lengths, val and test splits).
    pub data_sha256: String,
    /// What the sandbox for the agent's code does on this machine, in words.
    pub sandbox: String,
}

/// One training run of an experiment's commit, scored by the protected evaluator.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Trial {
    pub seed: u64,
    /// The protected score; None when the run crashed.
    pub val_bpb: Option<f64>,
    /// What the trainer printed itself, logged beside the protected score.
    pub trainer_val_bpb: Option<f64>,
    /// The trainer's counted training time.
    pub training_seconds: f64,
    /// The trainer's wall time, start-up included.
    pub run_seconds: f64,
    /// The protected evaluation's wall time (causality probe included).
    pub eval_seconds: f64,
    /// Optimizer steps that fitted in the budget (the trainer's result line): on a wall-clock
    /// budget they move the score as much as a change can, so every comparison shows them.
    #[serde(default)]
    pub num_steps: Option<u64>,
    /// The run's progress as the trainer reported it while training (absent in older records).
    #[serde(default)]
    pub curve: Vec<Point>,
}

impl Record {
    /// A record with every optional part empty, for tests to fill in.
    #[cfg(test)]
    pub fn sample(seq: u64, status: Status, val_bpb: Option<f64>) -> Record {
        Record {
            seq,
            commit: format!("{seq:040}"),
            parent: String::new(),
            status,
            reason: None,
            description: format!("change {seq}"),
            val_bpb,
            peak_memory_mb: None,
            result: None,
            think_seconds: 0.0,
            build_seconds: 0.0,
            run_seconds: 0.0,
            agent_tokens: 0,
            program_changed: false,
            finished_at: String::new(),
            trials: Vec::new(),
            best_trials: Vec::new(),
            sigma: None,
            sigma_measured: false,
            delta: None,
            rule: None,
            test_bpb: None,
            flags: Vec::new(),
            eval_seconds: 0.0,
            pins: None,
            revoked: None,
            start: None,
        }
    }

    /// One line for people and the agent: number, status, score, why it crashed, what changed.
    pub fn summary(&self) -> String {
        let bpb = self.val_bpb.map_or("-".into(), |v| format!("{v:.6}"));
        let reason = self
            .reason
            .as_deref()
            .map(|r| format!(" ({r})"))
            .unwrap_or_default();
        format!(
            "#{} {} val_bpb {bpb}{reason}: {}",
            self.seq,
            self.status.as_str(),
            self.description
        )
    }
}

impl Record {
    /// Each run's protected score and steps in the order of pairs, the best's re-runs beside
    /// the change's, e.g. `runs: 2.544400 (64 steps) | best 2.553600 (54 steps)`; None without
    /// a run.
    pub fn runs(&self) -> Option<String> {
        let run = |t: &Trial| {
            let bpb = t.val_bpb.map_or("-".into(), |v| format!("{v:.6}"));
            match t.num_steps {
                Some(steps) => format!("{bpb} ({steps} steps)"),
                None => bpb,
            }
        };
        let runs: Vec<String> = (0..self.trials.len().max(self.best_trials.len()))
            .map(|i| {
                let change = self.trials.get(i).map(run);
                let best = self.best_trials.get(i).map(|t| format!("best {}", run(t)));
                [change, best]
                    .into_iter()
                    .flatten()
                    .collect::<Vec<_>>()
                    .join(" | ")
            })
            .collect();
        (!runs.is_empty()).then(|| format!("runs: {}", runs.join("; ")))
    }
}

/// An experiment that was committed but not yet recorded; re-run on `--resume`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Pending {
    pub seq: u64,
    pub commit: String,
    pub parent: String,
    pub description: String,
    pub think_seconds: f64,
    pub agent_tokens: u64,
}

pub struct Ledger {
    dir: PathBuf,
    pub records: Vec<Record>,
}

impl Ledger {
    /// Opens (or starts) the ledger in `dir`. A last line without its newline, torn by a kill
    /// mid-write, is dropped: its experiment is still pending (`pending/`) and runs again. Any other
    /// line that does not parse stops the run, see [`parse`].
    pub fn open(dir: &Path) -> Result<Ledger> {
        fs::create_dir_all(dir.join("logs"))
            .with_context(|| format!("creating {}", dir.display()))?;
        let path = dir.join("experiments.jsonl");
        let text = match fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        let (records, whole) = parse(&path, &text)?;
        if whole < text.len() {
            eprintln!(
                "note: dropping an incomplete last line of {} (a kill mid-write)",
                path.display()
            );
            OpenOptions::new()
                .write(true)
                .open(&path)?
                .set_len(whole as u64)?;
        }
        Ok(Ledger {
            dir: dir.to_path_buf(),
            records,
        })
    }

    /// The number after every recorded experiment's (with workers they finish out of order).
    pub fn next_seq(&self) -> u64 {
        self.records.iter().map(|r| r.seq + 1).max().unwrap_or(0)
    }

    pub fn best(&self) -> Option<&Record> {
        best(&self.records)
    }

    /// Where the trainer of kept commit `commit` is kept, to run the best beside later changes.
    pub fn best_binary_path(&self, commit: &str) -> PathBuf {
        self.dir.join("bin").join(format!("best-{commit}"))
    }

    /// Where experiment `seq` keeps the trainer of the best it is compared with, see
    /// `research::trials`.
    pub fn beside_path(&self, seq: u64) -> PathBuf {
        self.dir.join("bin").join(format!("beside-{seq}"))
    }

    /// Removes the kept trainers of every commit but the best's.
    pub fn prune_best_binaries(&self) -> Result<()> {
        let keep = self.best().map(|b| self.best_binary_path(&b.commit));
        let Ok(entries) = fs::read_dir(self.dir.join("bin")) else {
            return Ok(());
        };
        for entry in entries {
            let path = entry?.path();
            let name = path.file_name().unwrap_or_default().to_string_lossy();
            // Only recorded commits': a keep another worker has not recorded yet (its rule tests
            // and holdout still running) is about to be the best.
            let recorded = name
                .strip_prefix("best-")
                .is_some_and(|commit| self.records.iter().any(|r| r.commit == commit));
            if recorded && Some(&path) != keep.as_ref() {
                fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))?;
            }
        }
        Ok(())
    }

    pub fn append(&mut self, record: Record) -> Result<()> {
        let path = self.dir.join("experiments.jsonl");
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .with_context(|| format!("opening {}", path.display()))?;
        // One write of the whole line: a kill leaves it whole or without its newline, never a
        // whole-looking line cut short.
        let mut line = serde_json::to_string(&record)?;
        line.push('\n');
        file.write_all(line.as_bytes())?;
        file.sync_data()?;
        self.records.push(record);
        self.write_tsv()
    }

    fn write_tsv(&self) -> Result<()> {
        let mut tsv = String::from("commit\tval_bpb\tmemory_gb\tstatus\tdescription\n");
        for r in &self.records {
            let commit = &r.commit[..r.commit.len().min(7)];
            let bpb = if r.status == Status::Crash {
                0.0
            } else {
                r.val_bpb.unwrap_or(0.0)
            };
            let memory_gb = r.peak_memory_mb.unwrap_or(0.0) / 1024.0;
            let description = r.description.replace(['\t', '\n'], " ");
            tsv.push_str(&format!(
                "{commit}\t{bpb:.6}\t{memory_gb:.1}\t{}\t{description}\n",
                r.status.as_str()
            ));
        }
        prepare::atomic::write(&self.dir.join("results.tsv"), tsv.as_bytes())
    }

    pub fn log_path(&self, seq: u64) -> PathBuf {
        self.trial_log_path(seq, 0)
    }

    /// The log of run `trial` of experiment `seq`, numbered in the order they ran: `<seq>.log` for
    /// the first, `<seq>.<trial>.log` for the rest (a comparison side by side alternates the
    /// change and the best, see the record's `trials` and `best_trials`).
    pub fn trial_log_path(&self, seq: u64, trial: usize) -> PathBuf {
        let name = match trial {
            0 => format!("{seq}.log"),
            k => format!("{seq}.{k}.log"),
        };
        self.dir.join("logs").join(name)
    }

    /// Where an executor keeps what finds run `index` of experiment `seq` again after a restart
    /// (see `executor::Job::handle`), beside the experiment's pending record.
    pub fn handle_path(&self, seq: u64, index: usize) -> PathBuf {
        self.pending_dir().join(format!("{seq}.{index}.job"))
    }

    /// Writes why experiment `seq` ran no trainer (its compiler errors, ...) where its run's log
    /// would have been.
    pub fn write_log(&self, seq: u64, text: &str) -> Result<()> {
        let path = self.log_path(seq);
        fs::write(&path, text).with_context(|| format!("writing {}", path.display()))
    }

    /// Adds `text` to the end of experiment `seq`'s log, after what its run wrote there.
    pub fn append_log(&self, seq: u64, text: &str) -> Result<()> {
        use std::io::Write;
        let path = self.log_path(seq);
        fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .and_then(|mut f| f.write_all(text.as_bytes()))
            .with_context(|| format!("appending to {}", path.display()))
    }

    /// The best kept val_bpb when the noise floor was last measured.
    pub fn sigma_measured_at(&self) -> Option<f64> {
        self.records
            .iter()
            .rev()
            .find(|r| r.sigma_measured)
            .and_then(|r| r.val_bpb)
    }

    /// Seconds of training runs spent re-running (every run but the first of each experiment
    /// after the baseline, the best's re-runs included), and of all runs.
    pub fn rerun_seconds(&self) -> (f64, f64) {
        let seconds = |trials: &[Trial]| trials.iter().map(|t| t.run_seconds).sum::<f64>();
        let (mut reruns, mut all) = (0.0, 0.0);
        for r in &self.records {
            let runs = seconds(&r.trials) + seconds(&r.best_trials);
            all += runs;
            if r.seq > 0 {
                reruns += runs - r.trials.first().map_or(0.0, |t| t.run_seconds);
            }
        }
        (reruns, all)
    }

    /// The experiments under way when the run stopped, by number: `pending/<seq>.json`, one per
    /// experiment in flight (and `pending.json`, where runs before workers kept their one). Each is
    /// written atomically, so one that does not parse was changed by hand: the run stops rather
    /// than forget the experiment.
    pub fn pendings(&self) -> Result<Vec<Pending>> {
        let mut paths = vec![self.dir.join("pending.json")];
        match fs::read_dir(self.pending_dir()) {
            Ok(entries) => {
                for entry in entries {
                    let path = entry?.path();
                    if path.extension().is_some_and(|e| e == "json") {
                        paths.push(path);
                    }
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).context("reading the pending experiments"),
        }
        let mut pendings = Vec::new();
        for path in paths {
            match fs::read(&path) {
                Ok(bytes) => {
                    pendings.push(serde_json::from_slice::<Pending>(&bytes).map_err(|e| {
                        anyhow::anyhow!(
                            "{}: {e}; fix it, or remove it to drop the interrupted experiment, \
                             then --resume",
                            path.display()
                        )
                    })?)
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
            }
        }
        pendings.sort_by_key(|p| p.seq);
        pendings.dedup_by_key(|p| p.seq);
        Ok(pendings)
    }

    /// Records `pending` as under way, until [`Ledger::clear_pending`].
    pub fn write_pending(&self, pending: &Pending) -> Result<()> {
        let path = self.pending_dir().join(format!("{}.json", pending.seq));
        fs::create_dir_all(self.pending_dir())?;
        prepare::atomic::write(&path, &serde_json::to_vec(pending)?)
    }

    /// Experiment `seq` is recorded: its pending record goes, with its executors' handles (which
    /// the caller has let go of, see [`Ledger::handles`]).
    pub fn clear_pending(&self, seq: u64) -> Result<()> {
        let mut paths = self.handles(seq)?;
        paths.push(self.pending_dir().join(format!("{seq}.json")));
        let legacy = self.dir.join("pending.json");
        if fs::read(&legacy)
            .ok()
            .and_then(|b| serde_json::from_slice::<Pending>(&b).ok())
            .is_some_and(|p| p.seq == seq)
        {
            paths.push(legacy);
        }
        for path in paths {
            match fs::remove_file(&path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(e).with_context(|| format!("removing {}", path.display()));
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// The executors' handles of experiment `seq`'s runs, see [`Ledger::handle_path`].
    pub fn handles(&self, seq: u64) -> Result<Vec<PathBuf>> {
        let prefix = format!("{seq}.");
        let Ok(entries) = fs::read_dir(self.pending_dir()) else {
            return Ok(Vec::new());
        };
        let mut handles = Vec::new();
        for entry in entries {
            let path = entry?.path();
            let name = path.file_name().unwrap_or_default().to_string_lossy();
            if name.starts_with(&prefix) && name.ends_with(".job") {
                handles.push(path);
            }
        }
        Ok(handles)
    }

    fn pending_dir(&self) -> PathBuf {
        self.dir.join("pending")
    }
}

/// The records of `runs/<tag>/experiments.jsonl`, read only. Unlike `Ledger::open` this never
/// truncates: the loop may be appending a line right now, and a reader must not cut it.
pub fn read_records(dir: &Path) -> Result<Vec<Record>> {
    let path = dir.join("experiments.jsonl");
    let text = match fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    Ok(parse(&path, &text)?.0)
}

/// The records of ledger text read from `path`, and the length of its whole lines. Only a last
/// line without its newline may be left out (it is being written, or was torn by a kill); any
/// whole line that is not a record is an error naming its line: skipping it would lose a record
/// silently, and stopping there would drop every record after it.
fn parse(path: &Path, text: &str) -> Result<(Vec<Record>, usize)> {
    let whole = text.rfind('\n').map_or(0, |i| i + 1);
    let mut records = Vec::new();
    for (i, line) in text[..whole].lines().enumerate() {
        match serde_json::from_str::<Record>(line) {
            Ok(record) => records.push(record),
            Err(e) => bail!(
                "{} line {}: {}; fix or remove that line, then --resume",
                path.display(),
                i + 1,
                if line.trim().is_empty() {
                    "an empty line".to_string()
                } else {
                    e.to_string()
                }
            ),
        }
    }
    Ok((records, whole))
}

/// The best kept record: the last keep. Every keep beat the best before it, and the branch
/// builds on it; its val_bpb need not be the lowest, as a change kept side by side may have run
/// while the machine was slower than when an earlier keep did.
/// A keep a later record revoked (see [`Record::revoked`]) is no longer one.
pub fn best(records: &[Record]) -> Option<&Record> {
    best_without(records, None)
}

/// The best as [`best`] finds it, once `revoking` is revoked too.
pub fn best_without(records: &[Record], revoking: Option<u64>) -> Option<&Record> {
    let revoked: Vec<u64> = records
        .iter()
        .filter_map(|r| r.revoked)
        .chain(revoking)
        .collect();
    records
        .iter()
        .rev()
        .find(|r| r.status == Status::Keep && !revoked.contains(&r.seq))
}

/// The protected scores of `trials`, the runs that were scored.
pub fn scores(trials: &[Trial]) -> Vec<f64> {
    trials.iter().filter_map(|t| t.val_bpb).collect()
}

/// How the changes after the baseline ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tally {
    pub keeps: usize,
    pub discards: usize,
    pub crashes: usize,
}

pub fn tally(records: &[Record]) -> Tally {
    let count = |s| {
        records
            .iter()
            .filter(|r| r.seq > 0 && r.status == s)
            .count()
    };
    Tally {
        keeps: count(Status::Keep),
        // A stale change is a discard that says why.
        discards: count(Status::Discard) + count(Status::Stale),
        crashes: count(Status::Crash),
    }
}

/// The noise floor the decisions use: `configured` (autoresearch.toml's `noise_sigma`, taken as
/// exact) when set, else the one measured, see [`noise_floor`].
pub fn noise_in_force(records: &[Record], configured: Option<f64>) -> Option<Noise> {
    configured
        .map(|sigma| Noise { sigma, dof: None })
        .or_else(|| noise_floor(records))
}

/// The noise floor measured by `records`: the standard deviation pooled over every program run
/// more than once since the noise was last measured (the measurement's seeds, the changes' own
/// runs, and each best's re-runs beside later changes, which see the machine hours later and so
/// bring its drift into the pool); the latest recorded one where no program ran twice.
pub fn noise_floor(records: &[Record]) -> Option<Noise> {
    let since = records.iter().rposition(|r| r.sigma_measured).unwrap_or(0);
    let mut groups: Vec<Vec<f64>> = records.iter().map(|r| scores(&r.trials)).collect();
    let mut best: Option<usize> = None;
    for (i, r) in records.iter().enumerate() {
        if let Some(b) = best {
            groups[b].extend(scores(&r.best_trials));
        }
        if r.status == Status::Keep {
            best = Some(i);
        }
    }
    decide::pooled_std_dev(&groups[since..]).or_else(|| {
        let sigma = records.iter().rev().find_map(|r| r.sigma)?;
        Some(Noise { sigma, dof: None })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(seq: u64, status: Status, bpb: Option<f64>) -> Record {
        Record {
            commit: format!("{seq:07}abcdef"),
            description: format!("change\t{seq}"),
            peak_memory_mb: Some(2048.0),
            ..Record::sample(seq, status, bpb)
        }
    }

    #[test]
    fn tsv_has_the_original_format_and_a_torn_line_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let mut ledger = Ledger::open(dir.path()).unwrap();
        ledger.append(record(0, Status::Keep, Some(1.5))).unwrap();
        ledger.append(record(1, Status::Crash, None)).unwrap();
        ledger.append(record(2, Status::Keep, Some(1.25))).unwrap();
        let tsv = fs::read_to_string(dir.path().join("results.tsv")).unwrap();
        assert_eq!(
            tsv,
            "commit\tval_bpb\tmemory_gb\tstatus\tdescription\n\
             0000000\t1.500000\t2.0\tkeep\tchange 0\n\
             0000001\t0.000000\t2.0\tcrash\tchange 1\n\
             0000002\t1.250000\t2.0\tkeep\tchange 2\n"
        );
        let mut file = OpenOptions::new()
            .append(true)
            .open(dir.path().join("experiments.jsonl"))
            .unwrap();
        write!(file, "{{\"seq\": 3, \"comm").unwrap();
        let reopened = Ledger::open(dir.path()).unwrap();
        assert_eq!(reopened.records.len(), 3);
        assert_eq!(reopened.next_seq(), 3);
        assert_eq!(reopened.best().unwrap().seq, 2);
        let text = fs::read_to_string(dir.path().join("experiments.jsonl")).unwrap();
        assert!(text.ends_with("}\n"), "the torn line is cut off");
    }

    #[test]
    fn a_corrupt_middle_line_stops_the_run_and_truncates_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let mut ledger = Ledger::open(dir.path()).unwrap();
        for seq in 0..4 {
            ledger.append(record(seq, Status::Keep, Some(1.5))).unwrap();
        }
        let path = dir.path().join("experiments.jsonl");
        let text = fs::read_to_string(&path).unwrap();
        let mut lines: Vec<&str> = text.lines().collect();
        lines[1] = "{\"seq\": 1, \"commit\": ";
        let corrupt = lines.join("\n") + "\n";
        fs::write(&path, &corrupt).unwrap();
        for err in [
            Ledger::open(dir.path()).err().unwrap(),
            read_records(dir.path()).unwrap_err(),
        ] {
            let err = format!("{err:#}");
            assert!(
                err.contains("experiments.jsonl line 2: ")
                    && err.contains("fix or remove that line, then --resume"),
                "{err}"
            );
        }
        assert_eq!(fs::read_to_string(&path).unwrap(), corrupt, "nothing cut");
        // An empty line is named as such; a torn last line alone is no error.
        lines[1] = "";
        fs::write(&path, lines.join("\n") + "\n").unwrap();
        let err = format!("{:#}", Ledger::open(dir.path()).err().unwrap());
        assert!(err.contains("line 2: an empty line"), "{err}");
        fs::write(&path, text.clone() + "{\"seq\": 4").unwrap();
        assert_eq!(read_records(dir.path()).unwrap().len(), 4);
        assert_eq!(Ledger::open(dir.path()).unwrap().records.len(), 4);
        assert_eq!(fs::read_to_string(&path).unwrap(), text);
        // A pending experiment that does not parse is not forgotten either.
        fs::write(dir.path().join("pending.json"), "{").unwrap();
        let err = format!("{:#}", ledger.pendings().unwrap_err());
        assert!(
            err.contains("pending.json") && err.contains("--resume"),
            "{err}"
        );
    }

    #[test]
    fn the_best_is_the_last_keep_and_only_its_trainer_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let mut ledger = Ledger::open(dir.path()).unwrap();
        ledger.append(record(0, Status::Keep, Some(1.5))).unwrap();
        // Kept side by side on a slower machine: higher than the baseline's, yet the best.
        ledger.append(record(1, Status::Keep, Some(1.52))).unwrap();
        ledger
            .append(record(2, Status::Discard, Some(1.4)))
            .unwrap();
        assert_eq!(ledger.best().unwrap().seq, 1);
        fs::create_dir_all(dir.path().join("bin")).unwrap();
        for r in &ledger.records {
            fs::write(ledger.best_binary_path(&r.commit), "trainer").unwrap();
        }
        fs::write(dir.path().join("bin/evaluate"), "evaluator").unwrap();
        // A keep another worker has not recorded yet stays too.
        fs::write(ledger.best_binary_path("not-yet-recorded"), "trainer").unwrap();
        ledger.prune_best_binaries().unwrap();
        let mut left: Vec<String> = fs::read_dir(dir.path().join("bin"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(
            left,
            ["best-0000001abcdef", "best-not-yet-recorded", "evaluate"]
        );
    }

    #[test]
    fn a_revoked_keep_is_the_best_no_longer() {
        let records = [
            record(0, Status::Keep, Some(1.5)),
            record(1, Status::Keep, Some(1.2)),
        ];
        assert_eq!(best_without(&records, Some(1)).unwrap().seq, 0);
        let revoking = Record {
            revoked: Some(1),
            ..record(2, Status::Discard, None)
        };
        let records = [records[0].clone(), records[1].clone(), revoking];
        assert_eq!(best(&records).unwrap().seq, 0);
    }

    fn trials(scores: &[f64]) -> Vec<Trial> {
        scores
            .iter()
            .map(|&v| Trial {
                seed: 42,
                val_bpb: Some(v),
                trainer_val_bpb: None,
                training_seconds: 1.0,
                run_seconds: 1.0,
                eval_seconds: 0.0,
                num_steps: Some(60),
                curve: Vec::new(),
            })
            .collect()
    }

    #[test]
    fn the_noise_floor_pools_runs_since_it_was_measured() {
        let runs = |seq, scores: &[f64], measured| Record {
            trials: trials(scores),
            sigma: Some(0.5),
            sigma_measured: measured,
            ..record(seq, Status::Discard, None)
        };
        // Before any program ran twice: the one the decisions used.
        let configured = noise_floor(&[runs(0, &[2.0], false)]).unwrap();
        assert_eq!((configured.sigma, configured.dof), (0.5, None));
        let old = runs(0, &[3.0, 2.0], true);
        let baseline = runs(1, &[1.0, 1.002, 1.004], true);
        let rerun = runs(2, &[1.1, 1.106], false);
        let once = runs(3, &[0.9], false);
        let floor = noise_floor(&[old, baseline, rerun, once]).unwrap();
        assert!(
            (floor.sigma - (2.6e-5f64 / 3.0).sqrt()).abs() < 1e-12,
            "{floor:?}"
        );
        assert_eq!(floor.dof, Some(3));
    }

    #[test]
    fn the_best_re_run_beside_a_change_joins_the_best_and_counts_as_a_re_run() {
        let keep = |seq, scores: &[f64]| Record {
            trials: trials(scores),
            sigma_measured: seq == 0,
            ..record(seq, Status::Keep, Some(decide::mean(scores)))
        };
        let baseline = keep(0, &[1.0, 1.002, 1.004]);
        // Beside change 1 the baseline ran again, 1.010 and 1.012: its group is five runs.
        let paired = Record {
            trials: trials(&[1.0, 1.003]),
            best_trials: trials(&[1.010, 1.012]),
            ..record(1, Status::Discard, Some(1.0015))
        };
        let floor = noise_floor(&[baseline.clone(), paired.clone()]).unwrap();
        let group = [1.0, 1.002, 1.004, 1.010, 1.012];
        let expected = (decide::pooled_std_dev(&[group.to_vec(), vec![1.0, 1.003]]))
            .unwrap()
            .sigma;
        assert!((floor.sigma - expected).abs() < 1e-12, "{floor:?}");
        assert_eq!(floor.dof, Some(5));
        let dir = tempfile::tempdir().unwrap();
        let mut ledger = Ledger::open(dir.path()).unwrap();
        ledger.append(baseline).unwrap();
        ledger.append(paired).unwrap();
        // The baseline's three seeds are no re-runs; change 1's second run and the two of the
        // best are.
        assert_eq!(ledger.rerun_seconds(), (3.0, 7.0));
    }
}
