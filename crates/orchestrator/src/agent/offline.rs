//! The built-in search for when no LLM is configured (and the tuner between an LLM's changes,
//! see `tune_share`): it proposes settings of the current best's numeric `const`s with a model
//! of the score fed by every recorded trial (`search`), never repeats a setting, and changes values,
//! never types. Seeded; what it has proposed survives `--resume` (`offline_agent.json`), and
//! what it learnt is read again from the records.

use std::collections::HashSet;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use prepare::Profile;
use prepare::rng::SplitMix64;
use serde::{Deserialize, Serialize};

use super::search::{self, Setting, Trial};
use super::{Proposal, device_prefixes};
use crate::cost::Tokens;
use crate::ledger::Record;
use crate::tools::Workspace;

const SOURCE: &str = search::history::SOURCE;

#[derive(Serialize, Deserialize)]
struct Memory {
    rng: SplitMix64,
    /// Every setting proposed, noted or recorded so far, as [`Setting::key`]s.
    tried: HashSet<String>,
}

pub struct OfflineAgent {
    memory: Memory,
    path: PathBuf,
    /// `GPU_` or `CPU_`: the knobs of the other device do nothing on this machine.
    other_device: &'static str,
    /// What every setting recorded so far gave, this run's and the earlier runs' it remembers.
    trials: Vec<Trial>,
}

impl OfflineAgent {
    /// The search whose memory is `state_path` (a new one from `seed` if there is none), that
    /// knows `trials` already: the records of this run and of the earlier runs remembered.
    pub fn new(
        state_path: PathBuf,
        seed: u64,
        device: Profile,
        trials: Vec<Trial>,
    ) -> Result<OfflineAgent> {
        let mut memory = match std::fs::read(&state_path) {
            Ok(bytes) => serde_json::from_slice(&bytes).with_context(|| {
                format!(
                    "{} is corrupt; remove it to start the offline search's memory again (the \
                     records keep what it learnt)",
                    state_path.display()
                )
            })?,
            Err(_) => Memory {
                rng: SplitMix64(seed ^ 0x5DEE_CE66_D1CE_4E5B),
                tried: HashSet::new(),
            },
        };
        // A setting an earlier run recorded is not run again either.
        memory.tried.extend(trials.iter().map(|t| t.setting.key()));
        Ok(OfflineAgent {
            memory,
            path: state_path,
            other_device: device_prefixes(device).1,
            trials,
        })
    }

    /// A change for the trainer in `ws` (the current best), made there. Every setting proposed
    /// is remembered, so no setting runs twice, nor while it is in flight on another worker.
    pub fn propose(&mut self, ws: &Workspace) -> Result<Proposal> {
        let source = ws.read_file(SOURCE).map_err(anyhow::Error::msg)?;
        let Some(changes) = search::propose(
            &source,
            self.other_device,
            &self.trials,
            &self.memory.tried,
            &mut self.memory.rng,
        ) else {
            bail!(
                "the offline search found no setting near the best that it has not tried; \
                 connect an LLM for new ideas"
            )
        };
        for change in &changes {
            ws.edit_file(
                SOURCE,
                &change.knob.line,
                &change.knob.line_with(change.value),
            )
            .map_err(anyhow::Error::msg)?;
        }
        let edited = ws.read_file(SOURCE).map_err(anyhow::Error::msg)?;
        self.memory.tried.insert(Setting::of(&edited).key());
        self.save()?;
        let description: Vec<String> = changes.iter().map(|c| c.describe()).collect();
        Ok(Proposal {
            description: description.join(", "),
            tokens: Tokens::default(),
            finished: true,
        })
    }

    /// Remembers the setting of a trainer it did not propose (a change re-applied onto a newer
    /// best, an LLM's), so that it is not proposed while it runs, or after.
    pub fn note(&mut self, source: &str) -> Result<()> {
        self.memory.tried.insert(Setting::of(source).key());
        self.save()
    }

    /// Learns what `record` gave; `source` is its trainer.
    pub fn observe(&mut self, record: &Record, source: &str) -> Result<()> {
        if let Some(outcome) = search::history::outcome(record) {
            let setting = Setting::of(source);
            self.memory.tried.insert(setting.key());
            self.trials.push(Trial { setting, outcome });
        }
        self.save()
    }

    fn save(&self) -> Result<()> {
        prepare::atomic::write(&self.path, &serde_json::to_vec(&self.memory)?)
            .context("saving the offline agent's memory")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::search::Outcome;
    use crate::ledger::Status;

    const SOURCE_TEXT: &str = "const GPU_DEPTH: i64 = 8; // x\nconst CPU_DEPTH: i64 = 2; // y\n\
        const MATRIX_LR: f64 = 0.04; // z\nconst SOFTCAP: f64 = 15.0; // w\n\
        const VE_GATE_CHANNELS: i64 = 32; // fixed\nconst TOTAL: i64 = 1 << 19; // expression\n";

    fn workspace() -> (tempfile::TempDir, Workspace) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("crates/train/src")).unwrap();
        let ws = Workspace::new(dir.path());
        (dir, ws)
    }

    #[test]
    fn proposes_distinct_edits_of_this_devices_knobs_and_remembers_them() {
        let (dir, ws) = workspace();
        let memory = dir.path().join("memory.json");
        let mut agent = OfflineAgent::new(memory.clone(), 1, Profile::Cpu, Vec::new()).unwrap();
        let mut seen = HashSet::new();
        for seq in 1..=12 {
            std::fs::write(dir.path().join(SOURCE), SOURCE_TEXT).unwrap();
            let proposal = agent.propose(&ws).unwrap();
            let edited = std::fs::read_to_string(dir.path().join(SOURCE)).unwrap();
            assert_ne!(edited, SOURCE_TEXT);
            assert!(
                edited.contains("GPU_DEPTH: i64 = 8;")
                    && edited.contains("VE_GATE_CHANNELS: i64 = 32;")
                    && edited.contains("TOTAL: i64 = 1 << 19;"),
                "{edited}"
            );
            assert!(
                seen.insert(edited.clone()),
                "repeated a setting: {}",
                proposal.description
            );
            if seq % 2 == 0 {
                let record = Record::sample(seq, Status::Discard, Some(2.0 + seq as f64));
                agent.observe(&record, &edited).unwrap(); // the others are still in flight
            }
        }
        // A new agent on the same file does not repeat them either.
        let again = OfflineAgent::new(memory, 1, Profile::Cpu, Vec::new()).unwrap();
        assert_eq!(again.memory.tried.len(), 12);
    }

    #[test]
    fn a_setting_noted_or_recorded_before_is_never_proposed() {
        let (dir, ws) = workspace();
        let source = "const CPU_LR: f64 = 1.0;\n";
        let trainer = |v: f64| format!("const CPU_LR: f64 = {v:?};\n");
        let setting = |v: f64| Setting::of(&trainer(v));
        // Within its reach (a factor 2, on a grid of three digits), earlier runs recorded every
        // value from 1.1 to 1.99 and other workers run those from 0.5 to 0.999: 2.0 is left.
        let trials = (110..200)
            .map(|n| Trial {
                setting: setting(n as f64 / 100.0),
                outcome: Outcome::Score(1.0),
            })
            .collect();
        let mut agent =
            OfflineAgent::new(dir.path().join("memory.json"), 7, Profile::Cpu, trials).unwrap();
        for n in 500..1000 {
            agent.note(&trainer(n as f64 / 1000.0)).unwrap();
        }
        std::fs::write(dir.path().join(SOURCE), source).unwrap();
        let proposal = agent.propose(&ws).unwrap();
        assert_eq!(proposal.description, "CPU_LR 1.0 -> 2.0");
        std::fs::write(dir.path().join(SOURCE), source).unwrap();
        let err = agent.propose(&ws).err().unwrap().to_string();
        assert!(err.contains("connect an LLM"), "{err}");
    }

    #[test]
    fn says_so_when_every_setting_near_the_best_was_tried() {
        let (dir, ws) = workspace();
        let mut agent =
            OfflineAgent::new(dir.path().join("memory.json"), 7, Profile::Cpu, Vec::new()).unwrap();
        for depth in 1..=8 {
            agent
                .note(&format!("const CPU_DEPTH: i64 = {depth};\n"))
                .unwrap();
        }
        std::fs::write(dir.path().join(SOURCE), "const CPU_DEPTH: i64 = 2;\n").unwrap();
        let err = agent.propose(&ws).err().unwrap().to_string();
        assert!(err.contains("connect an LLM"), "{err}");
    }
}
