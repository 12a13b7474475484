//! The run's records under `runs/<tag>/`: `experiments.jsonl` (one JSON object per experiment,
//! append-only, the source of truth for `--resume`), `results.tsv` (the original's format,
//! rewritten from the records after every experiment), `pending.json` (the experiment under way)
//! and `logs/` (one log per training run, or why none ran).

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::decide::{self, Noise};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Keep,
    Discard,
    Crash,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Keep => "keep",
            Status::Discard => "discard",
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
    pub result: Option<serde_json::Value>,
    pub think_seconds: f64,
    pub build_seconds: f64,
    pub run_seconds: f64,
    pub agent_tokens: u64,
    /// program.md changed since the previous experiment.
    pub program_changed: bool,
    pub finished_at: String,
    /// Every training run of this commit: the first, and re-runs with other seeds when the first
    /// result was within the noise (the baseline's runs measure the noise). `val_bpb` is their mean.
    #[serde(default)]
    pub trials: Vec<Trial>,
    /// The noise floor (standard deviation of val_bpb between runs) the decision used, or the
    /// one measured from this experiment's runs when `sigma_measured`.
    #[serde(default)]
    pub sigma: Option<f64>,
    #[serde(default)]
    pub sigma_measured: bool,
    /// val_bpb minus the best kept val_bpb before this experiment (negative is better).
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
    /// The trainer's wall time, start-up and its own evaluation included.
    pub run_seconds: f64,
    /// The protected evaluation's wall time (causality probe included).
    pub eval_seconds: f64,
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
            sigma: None,
            sigma_measured: false,
            delta: None,
            rule: None,
            test_bpb: None,
            flags: Vec::new(),
            eval_seconds: 0.0,
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
    /// Opens (or starts) the ledger in `dir`. A line torn by a kill mid-write is dropped.
    pub fn open(dir: &Path) -> Result<Ledger> {
        fs::create_dir_all(dir.join("logs"))
            .with_context(|| format!("creating {}", dir.display()))?;
        let path = dir.join("experiments.jsonl");
        let text = match fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        let mut records = Vec::new();
        let mut valid_len = 0;
        for line in text.split_inclusive('\n') {
            match serde_json::from_str::<Record>(line.trim_end()) {
                Ok(r) if line.ends_with('\n') => {
                    records.push(r);
                    valid_len += line.len();
                }
                _ => break,
            }
        }
        if valid_len < text.len() {
            eprintln!(
                "note: dropping an incomplete last line of {}",
                path.display()
            );
            OpenOptions::new()
                .write(true)
                .open(&path)?
                .set_len(valid_len as u64)?;
        }
        Ok(Ledger {
            dir: dir.to_path_buf(),
            records,
        })
    }

    pub fn next_seq(&self) -> u64 {
        self.records.last().map_or(0, |r| r.seq + 1)
    }

    pub fn best(&self) -> Option<&Record> {
        best(&self.records)
    }

    pub fn append(&mut self, record: Record) -> Result<()> {
        let path = self.dir.join("experiments.jsonl");
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .with_context(|| format!("opening {}", path.display()))?;
        writeln!(file, "{}", serde_json::to_string(&record)?)?;
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

    /// The log of run `trial` of experiment `seq`: `<seq>.log` for the first, `<seq>.<trial>.log`
    /// for re-runs with other seeds.
    pub fn trial_log_path(&self, seq: u64, trial: usize) -> PathBuf {
        let name = match trial {
            0 => format!("{seq}.log"),
            k => format!("{seq}.{k}.log"),
        };
        self.dir.join("logs").join(name)
    }

    /// Writes why experiment `seq` ran no trainer (its compiler errors, ...) where its run's log
    /// would have been.
    pub fn write_log(&self, seq: u64, text: &str) -> Result<()> {
        let path = self.log_path(seq);
        fs::write(&path, text).with_context(|| format!("writing {}", path.display()))
    }

    /// The best kept val_bpb when the noise floor was last measured.
    pub fn sigma_measured_at(&self) -> Option<f64> {
        self.records
            .iter()
            .rev()
            .find(|r| r.sigma_measured)
            .and_then(|r| r.val_bpb)
    }

    /// Seconds of training runs spent re-running changes (every run but the first of each
    /// experiment after the baseline), and of all runs.
    pub fn rerun_seconds(&self) -> (f64, f64) {
        let runs = |r: &Record| r.trials.iter().map(|t| t.run_seconds).collect::<Vec<_>>();
        let reruns: f64 = self
            .records
            .iter()
            .filter(|r| r.seq > 0)
            .map(|r| runs(r).iter().skip(1).sum::<f64>())
            .sum();
        let all: f64 = self
            .records
            .iter()
            .map(|r| runs(r).iter().sum::<f64>())
            .sum();
        (reruns, all)
    }

    pub fn pending(&self) -> Result<Option<Pending>> {
        match fs::read(self.dir.join("pending.json")) {
            Ok(bytes) => Ok(serde_json::from_slice(&bytes).ok()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    pub fn set_pending(&self, pending: Option<&Pending>) -> Result<()> {
        let path = self.dir.join("pending.json");
        match pending {
            Some(p) => prepare::atomic::write(&path, &serde_json::to_vec(p)?),
            None => match fs::remove_file(&path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e.into()),
                _ => Ok(()),
            },
        }
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
    // Only whole lines count; a last line without its newline is still being written.
    let whole = &text[..text.rfind('\n').map_or(0, |i| i + 1)];
    whole
        .lines()
        .enumerate()
        .map(|(i, line)| {
            serde_json::from_str(line).with_context(|| format!("{} line {}", path.display(), i + 1))
        })
        .collect()
}

/// The best kept record: lowest val_bpb.
pub fn best(records: &[Record]) -> Option<&Record> {
    records
        .iter()
        .filter(|r| r.status == Status::Keep)
        .min_by(|a, b| {
            a.val_bpb
                .unwrap_or(f64::MAX)
                .total_cmp(&b.val_bpb.unwrap_or(f64::MAX))
        })
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
        discards: count(Status::Discard),
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
/// more than once since the noise was last measured (the measurement's seeds and every re-run
/// change), so that it grows more precise through the night, as three seeds alone can be far
/// off; the latest recorded one where no program ran twice.
pub fn noise_floor(records: &[Record]) -> Option<Noise> {
    let since = records.iter().rposition(|r| r.sigma_measured).unwrap_or(0);
    let groups: Vec<Vec<f64>> = records[since..].iter().map(|r| scores(&r.trials)).collect();
    decide::pooled_std_dev(&groups).or_else(|| {
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
    }

    #[test]
    fn the_noise_floor_pools_runs_since_it_was_measured() {
        let runs = |seq, scores: &[f64], measured| Record {
            trials: scores
                .iter()
                .map(|&v| Trial {
                    seed: 42,
                    val_bpb: Some(v),
                    trainer_val_bpb: None,
                    training_seconds: 1.0,
                    run_seconds: 1.0,
                    eval_seconds: 0.0,
                })
                .collect(),
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
}
