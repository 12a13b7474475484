//! The offline search against the one it replaced, on equal trial counts and many seeds, on a
//! cheap stand-in for the trainer: the real trainer's CPU constants (parsed from
//! crates/train/src/main.rs), a score that is a sum of squared log-distances from an optimum
//! drawn per seed (a few constants matter a lot, most little), the noise of real runs, and
//! crashes past a cliff (a learning rate or a size far above its optimum). Both searches run the
//! loop's rule: a change is kept when its score beats the best's.
//!
//! `cargo bench -p orchestrator --bench search [-- TRIALS SEEDS]` prints, per search, the true
//! (noise-free) score of the best after every tenth trial (median and quartiles over the seeds),
//! and how many trials the new search needed to reach the old one's final best on each seed.
//! The real trainer's counterpart is scripts/bench/search.sh.

use std::collections::{BTreeMap, HashMap, HashSet};

use orchestrator::agent::search::{self, Knob, Outcome, Setting, Trial};
use prepare::rng::SplitMix64;

/// Standard deviation of a run's score: the CPU profile's measured noise floor.
const NOISE: f64 = 0.003;

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let trials = args.first().copied().unwrap_or(60);
    let seeds = args.get(1).copied().unwrap_or(20) as u64;
    let source = std::fs::read_to_string(prepare::workspace_root().join(search::history::SOURCE))
        .expect("the trainer's source");
    let mut curves: BTreeMap<&str, Vec<Vec<f64>>> = BTreeMap::new();
    let (mut to_reach, mut to_reach_again) = (Vec::new(), Vec::new());
    for seed in 0..seeds {
        let objective = Objective::new(&source, seed);
        let old = run(&objective, &source, trials, &mut OldSearch::new(seed));
        let mut searcher = NewSearch::new(seed);
        let new = run(&objective, &source, trials, &mut searcher);
        // A second night from the shipped trainer again, a new tag whose memory holds the first.
        let again = run(&objective, &source, trials, &mut searcher);
        let target = *old.last().unwrap();
        let reach = |curve: &[f64]| {
            curve
                .iter()
                .position(|&b| b <= target)
                .map_or(f64::INFINITY, |t| t as f64 + 1.0)
        };
        to_reach.push(reach(&new));
        to_reach_again.push(reach(&again));
        curves
            .entry("old (one or two constants, 1.5x/2x steps)")
            .or_default()
            .push(old);
        curves
            .entry("new (model), first night")
            .or_default()
            .push(new);
        curves
            .entry("new (model), second night, from the shipped trainer, remembering the first")
            .or_default()
            .push(again);
    }
    println!(
        "stand-in objective: {} constants, {trials} trials, {seeds} seeds, noise sd {NOISE}",
        Objective::new(&source, 0).optimum.len()
    );
    println!("true score of the best above the optimum (median [quartiles]) after N trials:");
    for (name, runs) in &curves {
        let at: Vec<String> = (1..=trials)
            .filter(|t| t % 10 == 0 || *t == trials)
            .map(|t| {
                let (q1, m, q3) = quartiles(runs.iter().map(|r| r[t - 1]).collect());
                format!("{t}: {m:.4} [{q1:.4}, {q3:.4}]")
            })
            .collect();
        println!("  {name}\n    {}", at.join("\n    "));
    }
    for (night, reached) in [("first", to_reach), ("second", to_reach_again)] {
        let never = reached.iter().filter(|t| t.is_infinite()).count();
        let (q1, m, q3) = quartiles(reached);
        println!(
            "trials the new search took to reach the old one's final best on its {night} night: \
             median {m} [quartiles {q1}, {q3}] of {trials} (not within {trials} on {never} of \
             {seeds} seeds); goal: at most {}",
            trials / 2
        );
    }
}

/// A seed's stand-in: each tunable's optimum a factor up to 2.5 from the shipped value (from
/// its distance from 1 for betas and ratios, as the searches scale them), its weight large for
/// three of them and small for the rest.
struct Objective {
    optimum: HashMap<String, (f64, f64)>,
    defaults: HashMap<String, f64>,
    noise: std::cell::Cell<SplitMix64>,
}

impl Objective {
    fn new(source: &str, seed: u64) -> Objective {
        let mut rng = SplitMix64(seed * 7919 + 1);
        let knobs = search::knobs_of(source, "GPU_");
        let mut important: Vec<usize> = (0..knobs.len()).collect();
        rng.shuffle(&mut important);
        let optimum = knobs
            .iter()
            .enumerate()
            .map(|(i, k)| {
                let factor = 2.5f64.powf(rng.open_unit() * 2.0 - 1.0);
                let weight = if important[..3].contains(&i) {
                    0.03
                } else {
                    0.003
                };
                let optimum = if fraction(&k.name, k.value) {
                    1.0 - ((1.0 - k.value) * factor).min(0.99)
                } else {
                    k.value * factor
                };
                (k.name.clone(), (log_scale(k, optimum), weight))
            })
            .collect();
        Objective {
            optimum,
            defaults: knobs.iter().map(|k| (k.name.clone(), k.value)).collect(),
            noise: std::cell::Cell::new(SplitMix64(seed ^ 0xABCD)),
        }
    }

    /// The score without noise; None past the cliff: any constant 6x above its shipped value.
    fn truth(&self, setting: &Setting) -> Option<f64> {
        let mut score = 0.0;
        for (name, (opt, weight)) in &self.optimum {
            let value = setting.values[name];
            let default = self.defaults[name];
            if !fraction(name, default) && value > 6.0 * default {
                return None;
            }
            let x = if fraction(name, default) {
                (1.0 - value).max(1e-3).ln()
            } else {
                value.ln()
            };
            score += weight * (x - opt).powi(2);
        }
        Some(score)
    }

    fn run(&self, setting: &Setting) -> Outcome {
        let mut rng = self.noise.get();
        let noise = NOISE * rng.standard_normal();
        self.noise.set(rng);
        self.truth(setting)
            .map_or(Outcome::Failed, |s| Outcome::Score(s + noise))
    }
}

fn fraction(name: &str, value: f64) -> bool {
    ["BETA", "RATIO"].iter().any(|w| name.contains(w)) && value < 1.0
}

fn log_scale(k: &Knob, value: f64) -> f64 {
    if fraction(&k.name, k.value) {
        (1.0 - value.min(0.999)).ln()
    } else {
        value.ln()
    }
}

trait Searcher {
    /// A change to `best`, the best's source; None when it has nothing new.
    fn propose(&mut self, best: &str) -> Option<String>;
    fn observe(&mut self, source: &str, outcome: Outcome, gain: f64);
}

/// The loop's rule on `objective`: the true score of the best after each trial.
fn run(
    objective: &Objective,
    source: &str,
    trials: usize,
    searcher: &mut dyn Searcher,
) -> Vec<f64> {
    let mut best = source.to_string();
    let score = |o: Outcome| match o {
        Outcome::Score(s) => s,
        Outcome::Failed => f64::INFINITY,
    };
    let first = objective.run(&Setting::of(&best));
    searcher.observe(&best, first, 0.0);
    let mut best_score = score(first);
    let mut curve = Vec::new();
    for _ in 0..trials {
        if let Some(changed) = searcher.propose(&best) {
            let outcome = objective.run(&Setting::of(&changed));
            searcher.observe(&changed, outcome, best_score - score(outcome));
            if score(outcome) < best_score {
                best_score = score(outcome);
                best = changed;
            }
        }
        curve.push(objective.truth(&Setting::of(&best)).unwrap());
    }
    curve
}

struct NewSearch {
    rng: SplitMix64,
    trials: Vec<Trial>,
    tried: HashSet<String>,
}

impl NewSearch {
    fn new(seed: u64) -> NewSearch {
        NewSearch {
            rng: SplitMix64(seed),
            trials: Vec::new(),
            tried: HashSet::new(),
        }
    }
}

impl Searcher for NewSearch {
    fn propose(&mut self, best: &str) -> Option<String> {
        let changes = search::propose(best, "GPU_", &self.trials, &self.tried, &mut self.rng)?;
        let mut changed = best.to_string();
        for c in changes {
            changed = changed.replace(&c.knob.line, &c.knob.line_with(c.value));
        }
        self.tried.insert(Setting::of(&changed).key());
        Some(changed)
    }

    fn observe(&mut self, source: &str, outcome: Outcome, _gain: f64) {
        self.trials.push(Trial {
            setting: Setting::of(source),
            outcome,
        });
    }
}

/// The search the model-based ones replaced, as it was: one or two constants at a time, up or down by 1.5x
/// or 2x, leaning toward directions that helped, never a setting twice.
struct OldSearch {
    rng: SplitMix64,
    tried: HashSet<String>,
    credit: HashMap<String, f64>,
    last: Vec<String>,
}

impl OldSearch {
    fn new(seed: u64) -> OldSearch {
        OldSearch {
            rng: SplitMix64(seed ^ 0x5DEE_CE66_D1CE_4E5B),
            tried: HashSet::new(),
            credit: HashMap::new(),
            last: Vec::new(),
        }
    }

    fn direction(&mut self, name: &str) -> bool {
        let credit = |up: bool| {
            self.credit
                .get(&format!("{name}{up}"))
                .copied()
                .unwrap_or(0.0)
        };
        let lean = ((credit(true) - credit(false)) * 50.0).tanh();
        self.rng.below(1000) as f64 / 1000.0 < 0.5 + 0.4 * lean
    }
}

impl Searcher for OldSearch {
    fn propose(&mut self, best: &str) -> Option<String> {
        let knobs = search::knobs_of(best, "GPU_");
        for _ in 0..200 {
            let mut changed = best.to_string();
            let mut names = Vec::new();
            for _ in 0..1 + self.rng.below(2) {
                let knob = &knobs[self.rng.below(knobs.len())];
                if names.iter().any(|(n, _)| n == &knob.name) {
                    continue;
                }
                let up = self.direction(&knob.name);
                let step = [1.5, 2.0][self.rng.below(2)];
                changed = changed.replace(&knob.line, &knob.line_with(nudge(knob, up, step)));
                names.push((knob.name.clone(), up));
            }
            if changed != best && self.tried.insert(Setting::of(&changed).key()) {
                self.last = names.iter().map(|(n, up)| format!("{n}{up}")).collect();
                return Some(changed);
            }
        }
        None
    }

    fn observe(&mut self, _source: &str, _outcome: Outcome, gain: f64) {
        let gain = if gain.is_finite() { gain } else { -0.1 };
        for key in std::mem::take(&mut self.last) {
            *self.credit.entry(key).or_default() += gain;
        }
    }
}

fn nudge(knob: &Knob, up: bool, step: f64) -> f64 {
    let scaled = if fraction(&knob.name, knob.value) {
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
    if !knob.is_integer() {
        return (scaled * 1e6).round() / 1e6;
    }
    let rounded = scaled.round().max(1.0);
    if rounded != knob.value {
        rounded
    } else {
        (knob.value + if up { 1.0 } else { -1.0 }).max(1.0)
    }
}

fn quartiles(mut values: Vec<f64>) -> (f64, f64, f64) {
    values.sort_by(f64::total_cmp);
    let at = |q: f64| values[((values.len() - 1) as f64 * q).round() as usize];
    (at(0.25), at(0.5), at(0.75))
}
