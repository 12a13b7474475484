//! The confirmations' records, `runs/<tag>/confirm.jsonl`, apart from the night's (which they
//! never change): one line per training run as it ends (`"kind": "run"`), and one per finished
//! confirmation with its gains and their intervals (`"kind": "result"`). Read by `report`,
//! `finalize` and the dashboard.

use std::fs::OpenOptions;
use std::io::Write;

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

use crate::decide::{self, t95};
use crate::ledger::Trial;
use crate::run_dir::RunDir;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Entry {
    Run(Run),
    Result(Confirmation),
}

/// One training run of a confirmation.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Run {
    /// The confirmation it belongs to: when that started (RFC 3339).
    pub confirm: String,
    /// `baseline`, `best`, or `without #<seq>` (the best with kept change `seq` left out).
    pub program: String,
    pub commit: String,
    /// Seed, protected val_bpb (None when it failed), timings, steps: as the night records runs.
    pub trial: Trial,
    /// Why it has no score.
    #[serde(default)]
    pub failure: Option<String>,
}

/// A finished confirmation: the best re-trained beside the baseline with fresh seeds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Confirmation {
    /// When it started (RFC 3339), as its runs name it.
    pub confirm: String,
    pub finished_at: String,
    /// Training seconds per run.
    pub budget: f64,
    /// One per round; in each round every program ran once with that seed.
    pub seeds: Vec<u64>,
    pub baseline_commit: String,
    pub best_seq: u64,
    pub best_commit: String,
    /// The best's gain over the baseline (the baseline's val_bpb minus the best's, paired by
    /// seed: positive is better); None with fewer than two pairs.
    pub gain: Option<Interval>,
    /// With `--ablate`: each kept change's part in the best, the best without it minus the best
    /// (positive: the change helps).
    #[serde(default)]
    pub ablations: Vec<Ablation>,
}

/// A kept change left out of the best.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Ablation {
    pub seq: u64,
    pub description: String,
    /// The best with this change taken out; None where it does not come out cleanly.
    pub commit: Option<String>,
    pub gain: Option<Interval>,
    /// Why it was not measured, when it was not.
    #[serde(default)]
    pub note: Option<String>,
}

/// The mean of paired differences and its 95% interval (Student's t on their own spread).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Interval {
    pub mean: f64,
    pub low: f64,
    pub high: f64,
    pub pairs: usize,
}

impl Interval {
    /// The interval of `differences`; None with fewer than two (one has no spread).
    pub fn of(differences: &[f64]) -> Option<Interval> {
        let n = differences.len();
        if n < 2 {
            return None;
        }
        let mean = decide::mean(differences);
        let variance = differences.iter().map(|d| (d - mean).powi(2)).sum::<f64>() / (n - 1) as f64;
        let half = t95(n - 1) * (variance / n as f64).sqrt();
        Some(Interval {
            mean,
            low: mean - half,
            high: mean + half,
            pairs: n,
        })
    }

    /// The whole interval is no gain: the change does not help (or hurts).
    pub fn refuted(&self) -> bool {
        self.high <= 0.0
    }

    /// `confirmed`, `refuted` or `not significant`.
    pub fn verdict(&self) -> &'static str {
        if self.low > 0.0 {
            "confirmed"
        } else if self.refuted() {
            "refuted"
        } else {
            "not significant"
        }
    }

    /// E.g. `+0.012000 (95% interval +0.004000 to +0.020000, 3 pairs): confirmed`.
    pub fn describe(&self) -> String {
        format!(
            "{:+.6} (95% interval {:+.6} to {:+.6}, {} pairs): {}",
            self.mean,
            self.low,
            self.high,
            self.pairs,
            self.verdict()
        )
    }
}

impl Confirmation {
    /// The kept changes this confirmation refutes.
    pub fn refuted(&self) -> Vec<u64> {
        self.ablations
            .iter()
            .filter(|a| a.gain.is_some_and(|g| g.refuted()))
            .map(|a| a.seq)
            .collect()
    }

    /// For people: the best's gain, then each change's part.
    pub fn text(&self) -> String {
        let interval = |i: &Option<Interval>| {
            i.as_ref().map_or(
                "not measured (fewer than 2 pairs)".into(),
                Interval::describe,
            )
        };
        let mut out = format!(
            "confirm {} ({} seeds, {} s budget): best #{} against the baseline, gain {}\n",
            self.confirm,
            self.seeds.len(),
            self.budget,
            self.best_seq,
            interval(&self.gain)
        );
        for a in &self.ablations {
            let part = match &a.note {
                Some(note) => note.clone(),
                None => interval(&a.gain),
            };
            out += &format!("  #{:<4} its part {part}  {}\n", a.seq, a.description);
        }
        out
    }
}

/// Every entry of `run_dir`'s confirmations; none when there were none. A last line without its
/// newline (a kill mid-write) is left out.
pub fn read(run_dir: &RunDir) -> Result<Vec<Entry>> {
    let path = run_dir.confirmations();
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let whole = text.rfind('\n').map_or(0, |i| i + 1);
    let mut entries = Vec::new();
    for (i, line) in text[..whole].lines().enumerate() {
        match serde_json::from_str(line) {
            Ok(entry) => entries.push(entry),
            Err(e) => bail!(
                "{} line {}: {e}; fix or remove that line",
                path.display(),
                i + 1
            ),
        }
    }
    Ok(entries)
}

/// Appends `entry` as one line, in one write.
pub fn append(run_dir: &RunDir, entry: &Entry) -> Result<()> {
    let path = run_dir.confirmations();
    let mut line = serde_json::to_string(entry)?;
    line.push('\n');
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .and_then(|mut f| f.write_all(line.as_bytes()))
        .with_context(|| format!("appending to {}", path.display()))
}

/// The latest finished confirmation of the best at `best_commit`.
pub fn latest<'a>(entries: &'a [Entry], best_commit: &str) -> Option<&'a Confirmation> {
    entries.iter().rev().find_map(|e| match e {
        Entry::Result(c) if c.best_commit == best_commit => Some(c),
        _ => None,
    })
}

/// Runs recorded so far, of every confirmation: fresh seeds start after them.
pub fn runs(entries: &[Entry]) -> usize {
    entries
        .iter()
        .filter(|e| matches!(e, Entry::Run(_)))
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_interval_is_students_t_on_the_pairs_own_spread() {
        assert_eq!(Interval::of(&[0.1]), None);
        let i = Interval::of(&[0.010, 0.014, 0.012]).unwrap();
        // sd 0.002, t95(2) 4.303: half-width 4.303 * 0.002 / sqrt(3).
        let half = 4.303 * 0.002 / 3f64.sqrt();
        assert!((i.mean - 0.012).abs() < 1e-12 && (i.high - i.mean - half).abs() < 1e-9);
        assert_eq!(i.verdict(), "confirmed");
        assert_eq!(
            Interval::of(&[-0.01, -0.012, -0.011]).unwrap().verdict(),
            "refuted"
        );
        assert_eq!(
            Interval::of(&[-0.01, 0.012]).unwrap().verdict(),
            "not significant"
        );
    }
}
