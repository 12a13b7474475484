//! The offline agent's model-based search over the trainer's constants: every trial recorded
//! with the same evaluation contract, device and budget (this run's and, through the memory,
//! earlier runs'), crashes and early stops included, feeds a model of the score (`model`) that
//! proposes the next setting of the current best's constants (`knobs`). Settings are compared only
//! between sources of the same structure: after an LLM's change to the code, the trials of the
//! old code no longer say how the new one behaves.

pub mod history;
mod knobs;
mod model;

use std::collections::HashSet;

use prepare::rng::SplitMix64;

pub use knobs::{Knob, Setting};
pub use model::{Observed, Outcome};

use knobs::Space;

/// What one setting gave.
#[derive(Debug, Clone, PartialEq)]
pub struct Trial {
    pub setting: Setting,
    pub outcome: Outcome,
}

/// One constant of the best's source, changed.
#[derive(Debug, Clone)]
pub struct Change {
    pub knob: Knob,
    pub value: f64,
}

impl Change {
    /// `NAME old -> new`.
    pub fn describe(&self) -> String {
        format!(
            "{} {} -> {}",
            self.knob.name,
            self.knob.literal(self.knob.value),
            self.knob.literal(self.value)
        )
    }
}

/// The constants of `source` the search tunes, leaving alone those whose names start with
/// `idle_prefix` (the other device's).
pub fn knobs_of(source: &str, idle_prefix: &str) -> Vec<Knob> {
    Space::of(source, idle_prefix).knobs
}

/// The next change to the constants of `best` (the current best's source), none of whose
/// settings is in `tried` (see [`Setting::key`]); the constants whose names start with
/// `idle_prefix` are left alone. None when nothing new is found near the best.
pub fn propose(
    best: &str,
    idle_prefix: &str,
    trials: &[Trial],
    tried: &HashSet<String>,
    rng: &mut SplitMix64,
) -> Option<Vec<Change>> {
    let space = Space::of(best, idle_prefix);
    let incumbent = Setting::of(best);
    let observed: Vec<Observed> = trials
        .iter()
        .filter(|t| t.setting.structure == incumbent.structure)
        .filter_map(|t| {
            Some(Observed {
                point: space.to_unit(&t.setting.values)?,
                outcome: t.outcome,
            })
        })
        .collect();
    let at = |values: &[f64]| {
        let mut setting = incumbent.clone();
        for (knob, value) in space.knobs.iter().zip(values) {
            setting.values.insert(knob.name.clone(), *value);
        }
        setting
    };
    let centre = space.to_unit(&incumbent.values)?;
    let point = model::suggest(&centre, &observed, rng, |point| {
        let values = space.values_at(point);
        let setting = at(&values);
        let new = setting != incumbent && !tried.contains(&setting.key());
        new.then(|| space.to_unit(&setting.values))?
    })?;
    Some(
        space
            .knobs
            .iter()
            .zip(space.values_at(&point))
            .filter(|(knob, value)| *value != knob.value)
            .map(|(knob, value)| Change {
                knob: knob.clone(),
                value,
            })
            .collect(),
    )
}
