//! The run's records under `runs/<tag>/`: `experiments.jsonl` (one JSON object per experiment,
//! append-only, the source of truth for `--resume`), `results.tsv` (the original's format,
//! rewritten from the records after every experiment), `pending/` (the experiments under way,
//! [`Pendings`]) and `logs/` (one log per training run, or why none ran).

mod pending;
mod record;

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::Path;

use anyhow::{Context, Result, bail};

pub use pending::Pendings;
pub use record::{Pending, Pins, Printed, Record, Start, Status, Stopped, Trial};

use crate::run_dir::RunDir;

pub struct Ledger {
    dir: RunDir,
    pub records: Vec<Record>,
}

impl Ledger {
    /// Opens (or starts) the ledger in `dir`. A last line without its newline, torn by a kill
    /// mid-write, is dropped: its experiment is still pending (`pending/`) and runs again. Any other
    /// line that does not parse stops the run, see [`parse`].
    pub fn open(dir: &RunDir) -> Result<Ledger> {
        fs::create_dir_all(dir.logs_dir())
            .with_context(|| format!("creating {}", dir.path().display()))?;
        let path = dir.experiments();
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
            dir: dir.clone(),
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

    pub fn dir(&self) -> &RunDir {
        &self.dir
    }

    /// Removes the kept trainers of every commit but the best's.
    pub fn prune_best_binaries(&self) -> Result<()> {
        let keep = self.best().map(|b| self.dir.best_trainer(&b.commit));
        let Ok(entries) = fs::read_dir(self.dir.bin_dir()) else {
            return Ok(());
        };
        for entry in entries {
            let path = entry?.path();
            let name = path.file_name().unwrap_or_default().to_string_lossy();
            // Only recorded commits': a keep another worker has not recorded yet (its rule tests
            // and holdout still running) is about to be the best.
            let recorded = RunDir::best_trainer_commit(&name)
                .is_some_and(|commit| self.records.iter().any(|r| r.commit == commit));
            if recorded && Some(&path) != keep.as_ref() {
                fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))?;
            }
        }
        Ok(())
    }

    pub fn append(&mut self, record: Record) -> Result<()> {
        let path = self.dir.experiments();
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
        prepare::atomic::write(&self.dir.results_tsv(), tsv.as_bytes())
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
}

/// Writes why experiment `seq` ran no trainer (its compiler errors, ...) where its run's log
/// would have been.
pub fn write_log(dir: &RunDir, seq: u64, text: &str) -> Result<()> {
    let path = dir.log(seq, 0);
    fs::write(&path, text).with_context(|| format!("writing {}", path.display()))
}

/// Adds `text` to the end of experiment `seq`'s log, after what its run wrote there.
pub fn append_log(dir: &RunDir, seq: u64, text: &str) -> Result<()> {
    let path = dir.log(seq, 0);
    fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .and_then(|mut f| f.write_all(text.as_bytes()))
        .with_context(|| format!("appending to {}", path.display()))
}

/// The records of `runs/<tag>/experiments.jsonl`, read only. Unlike `Ledger::open` this never
/// truncates: the loop may be appending a line right now, and a reader must not cut it.
pub fn read_records(dir: &RunDir) -> Result<Vec<Record>> {
    let path = dir.experiments();
    let text = match fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    Ok(parse(&path, &text)?.0)
}

/// The records of run `tag` of `repo`, which must have some: else an error that says how to start
/// it, and which runs have records.
pub fn read_run(repo: &Path, tag: &str) -> Result<Vec<Record>> {
    let dir = RunDir::new(repo, tag);
    let records = read_records(&dir)?;
    if records.is_empty() {
        let known = known_runs(repo);
        bail!(
            "no experiments in {}: start a run with `cargo run --release -p orchestrator -- --tag {tag}`{}",
            dir.experiments().display(),
            if known.is_empty() {
                String::new()
            } else {
                format!("; runs with experiments there: {}", known.join(", "))
            }
        );
    }
    Ok(records)
}

/// The tags of `repo` that have records, for the messages that name a run not found.
pub fn known_runs(repo: &Path) -> Vec<String> {
    let mut tags: Vec<String> = fs::read_dir(RunDir::all(repo))
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| RunDir::at(&e.path()).experiments().is_file())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    tags.sort();
    tags
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

/// The runs of each record's program: `[i]` holds record `i`'s own runs and, for a keep, its
/// re-runs beside the changes recorded while it was the best.
pub fn runs_by_program(records: &[Record]) -> Vec<Vec<&Trial>> {
    let mut groups: Vec<Vec<&Trial>> = records.iter().map(|r| r.trials.iter().collect()).collect();
    let mut best: Option<usize> = None;
    for (i, r) in records.iter().enumerate() {
        if let Some(b) = best {
            groups[b].extend(&r.best_trials);
        }
        if r.status == Status::Keep {
            best = Some(i);
        }
    }
    groups
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
        let mut ledger = Ledger::open(&RunDir::at(dir.path())).unwrap();
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
        let reopened = Ledger::open(&RunDir::at(dir.path())).unwrap();
        assert_eq!(reopened.records.len(), 3);
        assert_eq!(reopened.next_seq(), 3);
        assert_eq!(reopened.best().unwrap().seq, 2);
        let text = fs::read_to_string(dir.path().join("experiments.jsonl")).unwrap();
        assert!(text.ends_with("}\n"), "the torn line is cut off");
    }

    #[test]
    fn a_corrupt_middle_line_stops_the_run_and_truncates_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let mut ledger = Ledger::open(&RunDir::at(dir.path())).unwrap();
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
            Ledger::open(&RunDir::at(dir.path())).err().unwrap(),
            read_records(&RunDir::at(dir.path())).unwrap_err(),
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
        let err = format!("{:#}", Ledger::open(&RunDir::at(dir.path())).err().unwrap());
        assert!(err.contains("line 2: an empty line"), "{err}");
        fs::write(&path, text.clone() + "{\"seq\": 4").unwrap();
        assert_eq!(read_records(&RunDir::at(dir.path())).unwrap().len(), 4);
        assert_eq!(
            Ledger::open(&RunDir::at(dir.path())).unwrap().records.len(),
            4
        );
        assert_eq!(fs::read_to_string(&path).unwrap(), text);
        // A pending experiment that does not parse is not forgotten either.
        fs::write(dir.path().join("pending.json"), "{").unwrap();
        let err = format!("{:#}", Pendings::new(&ledger.dir).all().unwrap_err());
        assert!(
            err.contains("pending.json") && err.contains("--resume"),
            "{err}"
        );
    }

    #[test]
    fn the_best_is_the_last_keep_and_only_its_trainer_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let mut ledger = Ledger::open(&RunDir::at(dir.path())).unwrap();
        ledger.append(record(0, Status::Keep, Some(1.5))).unwrap();
        // Kept side by side on a slower machine: higher than the baseline's, yet the best.
        ledger.append(record(1, Status::Keep, Some(1.52))).unwrap();
        ledger
            .append(record(2, Status::Discard, Some(1.4)))
            .unwrap();
        assert_eq!(ledger.best().unwrap().seq, 1);
        fs::create_dir_all(dir.path().join("bin")).unwrap();
        for r in &ledger.records {
            fs::write(ledger.dir.best_trainer(&r.commit), "trainer").unwrap();
        }
        fs::write(dir.path().join("bin/evaluate"), "evaluator").unwrap();
        // A keep another worker has not recorded yet stays too.
        fs::write(ledger.dir.best_trainer("not-yet-recorded"), "trainer").unwrap();
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
}
