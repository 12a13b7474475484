//! The trainer's tunable constants: `const NAME: TYPE = LITERAL;` lines with a plain number, the
//! setting a source holds, and where each value sits in the search's unit cube.

use std::collections::BTreeMap;
use std::ops::Range;

use sha2::{Digest, Sha256};

/// Constants that are not tunables: the value-embedding gate reads this many channels, which must
/// stay within the narrowest model width.
const FIXED: [&str; 1] = ["VE_GATE_CHANNELS"];

/// How far from the incumbent's value the search looks: a factor of 4 either way (of the
/// distance from 1 for betas and ratios). The range moves with the incumbent.
const REACH: f64 = 4.0;

/// A change smaller than this factor is within any run's noise: such a coordinate stays as it is.
const SMALLEST_STEP: f64 = 1.1;

/// A `const NAME: TYPE = LITERAL;` line of the trainer.
#[derive(Debug, Clone)]
pub struct Knob {
    pub name: String,
    integer: bool,
    pub value: f64,
    pub line: String,
    /// Where the literal is in `line`: an edit replaces exactly that, never the type (a search
    /// for "64" once found it in `i64` first and turned `ASPECT_RATIO: i64 = 64` into `i96`).
    literal: Range<usize>,
}

impl Knob {
    /// The line with `value` in place of the literal.
    pub fn line_with(&self, value: f64) -> String {
        let Range { start, end } = self.literal;
        format!(
            "{}{}{}",
            &self.line[..start],
            self.literal(value),
            &self.line[end..]
        )
    }

    /// A whole number (`i64`, `usize`, ...).
    pub fn is_integer(&self) -> bool {
        self.integer
    }

    /// `value` written as this knob's literal.
    pub fn literal(&self, value: f64) -> String {
        if self.integer {
            format!("{}", value as i64)
        } else if value.fract() == 0.0 && value.abs() < 1e15 {
            format!("{value:.1}")
        } else {
            format!("{value}")
        }
    }

    /// Betas and ratios live in (0, 1): they are searched by their distance from 1, so that they
    /// never cross it.
    fn fraction(&self) -> bool {
        ["BETA", "RATIO"].iter().any(|w| self.name.contains(w)) && self.value < 1.0
    }

    /// `value` on the search's log scale.
    fn log(&self, value: f64) -> f64 {
        if self.fraction() {
            (1.0 - value).max(1e-3).ln()
        } else {
            value.ln()
        }
    }

    /// The value at `log` on the search's scale, on the grid of values the search runs: whole
    /// numbers (at least 1), else three significant digits (of the distance from 1 for a
    /// fraction, which stays in [0.01, 0.999]).
    fn value_at(&self, log: f64) -> f64 {
        if self.integer {
            return log.exp().round().max(1.0);
        }
        let three_digits = |x: f64| {
            let scale = 10f64.powi(2 - x.abs().log10().floor() as i32);
            (x * scale).round() / scale
        };
        if self.fraction() {
            1.0 - three_digits(log.exp()).clamp(0.001, 0.99)
        } else {
            three_digits(log.exp())
        }
    }

    /// The range of the search's scale around `self.value`.
    fn range(&self) -> (f64, f64) {
        let centre = self.log(self.value);
        (centre - REACH.ln(), centre + REACH.ln())
    }
}

/// The constants of a trainer's source and the shape of the code around them.
#[derive(Debug, Clone, PartialEq)]
pub struct Setting {
    /// A hash of the source with every constant's literal left out: two sources with the same
    /// structure differ only in their constants, and only their settings compare.
    pub structure: String,
    pub values: BTreeMap<String, f64>,
}

impl Setting {
    pub fn of(source: &str) -> Setting {
        let knobs = parse_knobs(source);
        let mut blanked = Sha256::new();
        let mut knobs_at = knobs.iter().peekable();
        for line in source.lines() {
            match knobs_at.peek() {
                Some(k) if k.line == line => {
                    blanked.update(&line[..k.literal.start]);
                    blanked.update(&line[k.literal.end..]);
                    knobs_at.next();
                }
                _ => blanked.update(line),
            }
            blanked.update("\n");
        }
        Setting {
            structure: hex::encode(&blanked.finalize()[..8]),
            values: knobs.into_iter().map(|k| (k.name, k.value)).collect(),
        }
    }

    /// The setting as remembered for "never twice": the structure and every `NAME=value`.
    pub fn key(&self) -> String {
        let values: Vec<String> = self
            .values
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        format!("{}:{}", self.structure, values.join(","))
    }
}

/// The knobs the search tunes, in the unit cube around the incumbent's values.
pub struct Space {
    pub knobs: Vec<Knob>,
}

impl Space {
    /// The tunable constants of `source` that do something on this machine: not those whose
    /// name starts with `idle_prefix` (the other device's), nor the fixed ones.
    pub fn of(source: &str, idle_prefix: &str) -> Space {
        Space {
            knobs: parse_knobs(source)
                .into_iter()
                .filter(|k| !FIXED.contains(&k.name.as_str()) && !k.name.starts_with(idle_prefix))
                .collect(),
        }
    }

    /// `values` in the unit cube (clamped to it); None when a knob is missing.
    pub fn to_unit(&self, values: &BTreeMap<String, f64>) -> Option<Vec<f64>> {
        self.knobs
            .iter()
            .map(|k| {
                let (low, high) = k.range();
                let value = *values.get(&k.name)?;
                Some(((k.log(value) - low) / (high - low)).clamp(0.0, 1.0))
            })
            .collect()
    }

    /// The values at `point`, each on its grid; a coordinate within the smallest step of the
    /// incumbent's value keeps that value.
    pub fn values_at(&self, point: &[f64]) -> Vec<f64> {
        self.knobs
            .iter()
            .zip(point)
            .map(|(k, &u)| {
                let (low, high) = k.range();
                let value = k.value_at(low + u * (high - low));
                let step = (k.log(value) - k.log(k.value)).abs();
                let whole_step = k.integer && value != k.value;
                if whole_step || step >= SMALLEST_STEP.ln() {
                    value
                } else {
                    k.value
                }
            })
            .collect()
    }
}

pub fn parse_knobs(source: &str) -> Vec<Knob> {
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
            (value > 0.0 && value_text == knob.literal(value)).then_some(knob)
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
    fn finds_literal_knobs_only_and_this_devices_tunables() {
        let names = |knobs: Vec<Knob>| knobs.into_iter().map(|k| k.name).collect::<Vec<_>>();
        assert_eq!(
            names(parse_knobs(SOURCE_TEXT)),
            [
                "GPU_DEPTH",
                "CPU_DEPTH",
                "MATRIX_LR",
                "SOFTCAP",
                "VE_GATE_CHANNELS"
            ]
        );
        assert_eq!(
            names(Space::of(SOURCE_TEXT, "GPU_").knobs),
            ["CPU_DEPTH", "MATRIX_LR", "SOFTCAP"]
        );
    }

    #[test]
    fn edits_change_the_value_never_the_type() {
        let knobs = parse_knobs("const ASPECT_RATIO: i64 = 64; // width per block of depth\n");
        assert_eq!(
            knobs[0].line_with(96.0),
            "const ASPECT_RATIO: i64 = 96; // width per block of depth"
        );
    }

    #[test]
    fn values_stay_on_their_grid_and_fractions_below_one() {
        let space = Space::of(
            "const MUON_BETA2: f64 = 0.95;\nconst DEPTH: i64 = 2;\nconst LR: f64 = 0.04;\n",
            "GPU_",
        );
        for point in [[0.0; 3], [1.0; 3], [0.3, 0.61, 0.77]] {
            let values = space.values_at(&point);
            assert!(values[0] > 0.0 && values[0] < 1.0, "{values:?}");
            assert!(values[1] >= 1.0 && values[1].fract() == 0.0, "{values:?}");
            let digits = format!("{}", values[2])
                .trim_start_matches("0.")
                .trim_start_matches('0')
                .len();
            assert!(digits <= 3, "{values:?}");
        }
        // The edges are a factor 4 away; the middle is the incumbent.
        assert_eq!(space.values_at(&[1.0, 1.0, 1.0]), [0.8, 8.0, 0.16]);
        assert_eq!(space.values_at(&[0.5, 0.5, 0.5]), [0.95, 2.0, 0.04]);
        let far = "const MUON_BETA2: f64 = 0.8;\nconst DEPTH: i64 = 8;\nconst LR: f64 = 0.01;\n";
        let unit = space.to_unit(&Setting::of(far).values).unwrap();
        for (u, expected) in unit.iter().zip([1.0, 1.0, 0.0]) {
            assert!((u - expected).abs() < 1e-9, "{unit:?}");
        }
    }

    #[test]
    fn a_setting_is_its_constants_and_the_code_around_them() {
        let a = Setting::of("const LR: f64 = 0.04;\nfn main() {}\n");
        let b = Setting::of("const LR: f64 = 0.05;\nfn main() {}\n");
        let c = Setting::of("const LR: f64 = 0.04;\nfn main() { loop {} }\n");
        assert_eq!(a.structure, b.structure);
        assert_ne!(a.structure, c.structure);
        assert_ne!(a.key(), b.key());
        assert_ne!(a.key(), c.key());
    }
}
