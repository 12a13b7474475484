//! The built-in search for when no LLM is configured: it nudges the trainer's numeric `const`s,
//! one or two at a time by multiplicative steps, never repeats a setting, and leans toward the
//! directions that helped before. Seeded, and its memory survives `--resume`.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ops::Range;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use prepare::Profile;
use prepare::rng::SplitMix64;
use serde::{Deserialize, Serialize};

use super::{Proposal, device_prefixes};
use crate::cost::Tokens;
use crate::tools::Workspace;

const SOURCE: &str = "crates/train/src/main.rs";
/// Constants that are not tunables: the value-embedding gate reads this many channels, which must
/// stay within the narrowest model width.
const FIXED: [&str; 1] = ["VE_GATE_CHANNELS"];
const STEPS: [f64; 2] = [1.5, 2.0];

/// A `const NAME: TYPE = LITERAL;` line of the trainer.
#[derive(Debug, Clone)]
struct Knob {
    name: String,
    integer: bool,
    value: f64,
    line: String,
    /// Where the literal is in `line`: an edit replaces exactly that, never the type (a search
    /// for "64" once found it in `i64` first and turned `ASPECT_RATIO: i64 = 64` into `i96`).
    literal: Range<usize>,
}

impl Knob {
    /// The line with `value` in place of the literal.
    fn line_with(&self, value: f64) -> String {
        let Range { start, end } = self.literal;
        format!(
            "{}{}{}",
            &self.line[..start],
            literal(self, value),
            &self.line[end..]
        )
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Change {
    name: String,
    up: bool,
}

#[derive(Serialize, Deserialize)]
struct Memory {
    rng: SplitMix64,
    /// Every setting proposed so far, as `NAME=value` lists.
    tried: HashSet<String>,
    /// Summed improvement (bpb, positive = better) of each knob and direction.
    credit: HashMap<String, f64>,
    /// What each experiment in flight changed, by number, to credit when it is decided.
    #[serde(default)]
    in_flight: BTreeMap<u64, Vec<Change>>,
}

pub struct OfflineAgent {
    memory: Memory,
    path: PathBuf,
    /// `GPU_` or `CPU_`: the knobs of the other device do nothing on this machine.
    other_device: &'static str,
}

impl OfflineAgent {
    pub fn new(state_path: PathBuf, seed: u64, device: Profile) -> Result<OfflineAgent> {
        let memory = match std::fs::read(&state_path) {
            Ok(bytes) => {
                serde_json::from_slice(&bytes).context("the offline agent's memory is corrupt")?
            }
            Err(_) => Memory {
                rng: SplitMix64(seed ^ 0x5DEE_CE66_D1CE_4E5B),
                tried: HashSet::new(),
                credit: HashMap::new(),
                in_flight: BTreeMap::new(),
            },
        };
        Ok(OfflineAgent {
            memory,
            path: state_path,
            other_device: device_prefixes(device).1,
        })
    }

    /// A change for experiment `seq`, made in `ws`. Every setting proposed is remembered, so no
    /// setting runs twice, nor while it is in flight on another worker.
    pub fn propose(&mut self, seq: u64, ws: &Workspace) -> Result<Proposal> {
        let source = ws.read_file(SOURCE).map_err(anyhow::Error::msg)?;
        let knobs = self.knobs(&source);
        if knobs.is_empty() {
            bail!("no numeric `const` in {SOURCE} to tune");
        }
        let current: BTreeMap<String, f64> =
            knobs.iter().map(|k| (k.name.clone(), k.value)).collect();
        for _ in 0..200 {
            let count = 1 + self.memory.rng.below(2);
            let mut setting = current.clone();
            let mut changes = Vec::new();
            for _ in 0..count {
                let knob = &knobs[self.memory.rng.below(knobs.len())];
                if changes
                    .iter()
                    .any(|c: &(Knob, f64, bool)| c.0.name == knob.name)
                {
                    continue;
                }
                let up = self.direction(&knob.name);
                let step = STEPS[self.memory.rng.below(STEPS.len())];
                let value = nudge(knob, up, step);
                setting.insert(knob.name.clone(), value);
                changes.push((knob.clone(), value, up));
            }
            if changes.is_empty() || !self.memory.tried.insert(setting_key(&setting)) {
                continue;
            }
            let mut description = Vec::new();
            for (knob, value, _) in &changes {
                ws.edit_file(SOURCE, &knob.line, &knob.line_with(*value))
                    .map_err(anyhow::Error::msg)?;
                description.push(format!(
                    "{} {} -> {}",
                    knob.name,
                    literal(knob, knob.value),
                    literal(knob, *value)
                ));
            }
            let changes = changes
                .into_iter()
                .map(|(k, _, up)| Change { name: k.name, up })
                .collect();
            self.memory.in_flight.insert(seq, changes);
            self.save()?;
            return Ok(Proposal {
                description: description.join(", "),
                tokens: Tokens::default(),
                finished: true,
            });
        }
        bail!("the offline search has tried every nearby setting; connect an LLM for new ideas")
    }

    /// Remembers the setting of a trainer it did not propose (a change re-applied onto a newer
    /// best), so that it is not proposed while it runs, or after.
    pub fn note(&mut self, source: &str) -> Result<()> {
        let setting = self
            .knobs(source)
            .into_iter()
            .map(|k| (k.name, k.value))
            .collect();
        self.memory.tried.insert(setting_key(&setting));
        self.save()
    }

    /// Credits experiment `seq`'s proposal with `gain` (bpb below the best it was compared
    /// with; negative if worse).
    pub fn observe(&mut self, seq: u64, gain: f64) -> Result<()> {
        let Some(changes) = self.memory.in_flight.remove(&seq) else {
            return Ok(()); // not its proposal
        };
        for change in changes {
            *self
                .memory
                .credit
                .entry(key(&change.name, change.up))
                .or_default() += gain;
        }
        self.save()
    }

    /// The tunable constants of `source` that do something on this machine.
    fn knobs(&self, source: &str) -> Vec<Knob> {
        parse_knobs(source)
            .into_iter()
            .filter(|k| !FIXED.contains(&k.name.as_str()) && !k.name.starts_with(self.other_device))
            .collect()
    }

    /// Up or down, leaning to the direction with more credit.
    fn direction(&mut self, name: &str) -> bool {
        let credit = |up| {
            self.memory
                .credit
                .get(&key(name, up))
                .copied()
                .unwrap_or(0.0)
        };
        let lean = ((credit(true) - credit(false)) * 50.0).tanh(); // 0.01 bpb of credit is a strong lean
        let p_up = 0.5 + 0.4 * lean;
        self.memory.rng.below(1000) as f64 / 1000.0 < p_up
    }

    fn save(&self) -> Result<()> {
        prepare::atomic::write(&self.path, &serde_json::to_vec(&self.memory)?)
            .context("saving the offline agent's memory")
    }
}

/// A whole setting as remembered: `NAME=value` pairs in name order.
fn setting_key(setting: &BTreeMap<String, f64>) -> String {
    setting
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

fn key(name: &str, up: bool) -> String {
    format!("{name}{}", if up { "+" } else { "-" })
}

fn nudge(knob: &Knob, up: bool, step: f64) -> f64 {
    // Betas and ratios live in (0, 1): step their distance from 1 instead, so they never cross it.
    let fraction = ["BETA", "RATIO"].iter().any(|w| knob.name.contains(w)) && knob.value < 1.0;
    let scaled = if fraction {
        let distance = if up {
            (1.0 - knob.value) / step
        } else {
            (1.0 - knob.value) * step
        };
        (1.0 - distance).clamp(0.01, 0.999)
    } else if up {
        knob.value * step
    } else {
        knob.value / step
    };
    if !knob.integer {
        return (scaled * 1e6).round() / 1e6;
    }
    let rounded = scaled.round().max(1.0);
    if rounded != knob.value {
        rounded
    } else {
        (knob.value + if up { 1.0 } else { -1.0 }).max(1.0)
    }
}

fn literal(knob: &Knob, value: f64) -> String {
    if knob.integer {
        format!("{}", value as i64)
    } else if value.fract() == 0.0 && value.abs() < 1e15 {
        format!("{value:.1}")
    } else {
        format!("{value}")
    }
}

fn parse_knobs(source: &str) -> Vec<Knob> {
    source
        .lines()
        .filter_map(|line| {
            let rest = line.strip_prefix("const ")?;
            let (name, rest) = rest.split_once(':')?;
            let (ty, rest) = rest.split_once('=')?;
            let value_text = rest.split(';').next()?.trim();
            let start = line.len() - rest.trim_start().len();
            let integer = match ty.trim() {
                "f64" | "f32" => false,
                "i64" | "i32" | "u64" | "u32" | "usize" => true,
                _ => return None,
            };
            let value: f64 = value_text.replace('_', "").parse().ok()?;
            let knob = Knob {
                name: name.trim().to_string(),
                integer,
                value,
                line: line.to_string(),
                literal: start..start + value_text.len(),
            };
            // Only literals that print back the same way can be edited in place.
            (value > 0.0 && value_text == literal(&knob, value)).then_some(knob)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SOURCE_TEXT: &str = "const GPU_DEPTH: i64 = 8; // x\nconst CPU_DEPTH: i64 = 2; // y\n\
        const MATRIX_LR: f64 = 0.04; // z\nconst SOFTCAP: f64 = 15.0; // w\n\
        const VE_GATE_CHANNELS: i64 = 32; // fixed\nconst TOTAL: i64 = 1 << 19; // expression\n";

    #[test]
    fn fractions_stay_below_one() {
        let knob = |name: &str, value| Knob {
            name: name.into(),
            integer: false,
            value,
            line: String::new(),
            literal: 0..0,
        };
        assert_eq!(nudge(&knob("MUON_BETA2", 0.95), true, 2.0), 0.975);
        assert_eq!(nudge(&knob("WARMDOWN_RATIO", 0.5), false, 2.0), 0.01);
        assert_eq!(nudge(&knob("MATRIX_LR", 0.6), true, 2.0), 1.2);
    }

    #[test]
    fn finds_literal_knobs_only() {
        let names: Vec<String> = parse_knobs(SOURCE_TEXT)
            .into_iter()
            .map(|k| k.name)
            .collect();
        assert_eq!(
            names,
            [
                "GPU_DEPTH",
                "CPU_DEPTH",
                "MATRIX_LR",
                "SOFTCAP",
                "VE_GATE_CHANNELS"
            ]
        );
    }

    #[test]
    fn edits_change_the_value_never_the_type() {
        let knobs = parse_knobs("const ASPECT_RATIO: i64 = 64; // width per block of depth\n");
        let edited = knobs[0].line_with(nudge(&knobs[0], true, 1.5));
        assert_eq!(
            edited,
            "const ASPECT_RATIO: i64 = 96; // width per block of depth"
        );
    }

    #[test]
    fn proposes_distinct_edits_of_this_devices_knobs() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("crates/train/src")).unwrap();
        let ws = Workspace::new(dir.path());
        let mut agent = OfflineAgent::new(dir.path().join("memory.json"), 1, Profile::Cpu).unwrap();
        let mut seen = HashSet::new();
        for seq in 0..12 {
            std::fs::write(dir.path().join(SOURCE), SOURCE_TEXT).unwrap();
            let proposal = agent.propose(seq, &ws).unwrap();
            let edited = std::fs::read_to_string(dir.path().join(SOURCE)).unwrap();
            assert_ne!(edited, SOURCE_TEXT);
            assert!(
                edited.contains("GPU_DEPTH: i64 = 8;")
                    && edited.contains("VE_GATE_CHANNELS: i64 = 32;")
            );
            assert!(
                seen.insert(edited),
                "repeated a setting: {}",
                proposal.description
            );
            if seq % 2 == 0 {
                agent.observe(seq, -0.01).unwrap(); // the others are still in flight
            }
        }
        // The memory is kept: a new agent on the same file does not repeat them either.
        let again = OfflineAgent::new(dir.path().join("memory.json"), 1, Profile::Cpu).unwrap();
        assert_eq!(again.memory.tried.len(), 12);
        assert_eq!(again.memory.in_flight.len(), 6);
    }

    #[test]
    fn a_noted_setting_is_never_proposed() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("crates/train/src")).unwrap();
        let ws = Workspace::new(dir.path());
        let source = "const CPU_LR: f64 = 1.0;\n";
        let mut agent = OfflineAgent::new(dir.path().join("memory.json"), 7, Profile::Cpu).unwrap();
        // Every setting one step away from 1.0, as if other workers ran them.
        for value in ["1.5", "2.0"] {
            agent
                .note(&format!("const CPU_LR: f64 = {value};\n"))
                .unwrap();
        }
        std::fs::write(dir.path().join(SOURCE), source).unwrap();
        let proposal = agent.propose(1, &ws).unwrap();
        assert!(
            proposal.description.ends_with("0.5") || proposal.description.ends_with("0.666667"),
            "{}",
            proposal.description
        );
    }
}
