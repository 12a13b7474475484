//! Tree-structured Parzen estimation (Bergstra et al., 2011), as Optuna's `TPESampler` with
//! `multivariate=True` does it: the observed points are split into the best `gamma` share (`l`)
//! and the rest (`g`, failures included); each side is a mixture of Gaussian kernels, truncated
//! to the unit cube, one per point plus a broad prior; the next point is the candidate with the
//! largest `l(x) / g(x)` among candidates drawn from `l`.
//!
//! One departure, as trust-region optimizers (TuRBO, HEBO) make it: a candidate changes only a
//! few coordinates of the incumbent (the best so far), and the prior is centred on it. A trainer
//! tuned by hand is good near its defaults and much worse across most of the box, so a point
//! drawn from the whole box is a wasted run.

use prepare::rng::SplitMix64;

/// What an observed point gave.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Outcome {
    /// Lower is better.
    Score(f64),
    /// A crash, or a run stopped early: bad, by how much unknown.
    Failed,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Observed {
    /// In the unit cube (clamped there when the search's ranges moved past it).
    pub point: Vec<f64>,
    pub outcome: Outcome,
}

#[derive(Debug, Clone, Copy)]
pub struct Tpe {
    /// Share of the scored points that make the good side (at least one).
    pub gamma: f64,
    /// Candidates drawn per suggestion.
    pub candidates: usize,
    /// Standard deviation of the prior kernel around the incumbent.
    pub prior_sigma: f64,
    /// Most coordinates one candidate changes.
    pub max_changed: usize,
}

impl Default for Tpe {
    fn default() -> Tpe {
        Tpe {
            gamma: 0.25,
            candidates: 64,
            prior_sigma: 0.25,
            max_changed: 3,
        }
    }
}

/// A mixture of axis-aligned Gaussian kernels with equal weights, truncated to the unit cube.
struct Mixture {
    means: Vec<Vec<f64>>,
    sigmas: Vec<f64>,
}

impl Mixture {
    /// The prior around `incumbent` and one kernel per point, with Optuna's multivariate
    /// bandwidth (Scott's rule: `0.2 n^(-1/(d+4))` of the range).
    fn new(incumbent: &[f64], prior_sigma: f64, points: &[&[f64]]) -> Mixture {
        let d = incumbent.len() as f64;
        let bandwidth = (0.2 * (points.len().max(1) as f64).powf(-1.0 / (d + 4.0))).max(0.02);
        let mut means = vec![incumbent.to_vec()];
        let mut sigmas = vec![prior_sigma];
        for point in points {
            means.push(point.to_vec());
            sigmas.push(bandwidth);
        }
        Mixture { means, sigmas }
    }

    fn log_density(&self, x: &[f64]) -> f64 {
        let terms: Vec<f64> = self
            .means
            .iter()
            .zip(&self.sigmas)
            .map(|(mean, &sigma)| {
                x.iter()
                    .zip(mean)
                    .map(|(&xi, &mi)| log_truncated_normal(xi, mi, sigma))
                    .sum::<f64>()
            })
            .collect();
        log_sum_exp(&terms) - (terms.len() as f64).ln()
    }
}

impl Tpe {
    /// The next point: the candidate with the largest `l/g` that `snap` accepts. `snap` puts a
    /// candidate on the grid of values the caller can run (whole numbers, a few digits) and
    /// refuses one it must not run (tried before, or too close to the incumbent to tell apart);
    /// None when no candidate is accepted.
    pub fn suggest(
        &self,
        incumbent: &[f64],
        observed: &[Observed],
        rng: &mut SplitMix64,
        mut snap: impl FnMut(&[f64]) -> Option<Vec<f64>>,
    ) -> Option<Vec<f64>> {
        let (good, bad) = self.split(observed);
        let good_side = Mixture::new(incumbent, self.prior_sigma, &good);
        let bad_side = Mixture::new(incumbent, self.prior_sigma, &bad);
        let mut best: Option<(f64, Vec<f64>)> = None;
        for _ in 0..self.candidates {
            let candidate = self.draw(incumbent, &good_side, rng);
            let Some(candidate) = snap(&candidate) else {
                continue;
            };
            let ratio = good_side.log_density(&candidate) - bad_side.log_density(&candidate);
            if best.as_ref().is_none_or(|(r, _)| ratio > *r) {
                best = Some((ratio, candidate));
            }
        }
        best.map(|(_, point)| point)
    }

    /// The good points (the lowest scores, `gamma` of the scored) and the bad (the rest and
    /// every failure).
    fn split<'a>(&self, observed: &'a [Observed]) -> (Vec<&'a [f64]>, Vec<&'a [f64]>) {
        let mut scored: Vec<(f64, &[f64])> = observed
            .iter()
            .filter_map(|o| match o.outcome {
                Outcome::Score(s) => Some((s, o.point.as_slice())),
                Outcome::Failed => None,
            })
            .collect();
        scored.sort_by(|a, b| a.0.total_cmp(&b.0));
        let n_good = ((self.gamma * scored.len() as f64).ceil() as usize).min(scored.len());
        let good = scored[..n_good].iter().map(|(_, p)| *p).collect();
        let bad = scored[n_good..]
            .iter()
            .map(|(_, p)| *p)
            .chain(
                observed
                    .iter()
                    .filter(|o| o.outcome == Outcome::Failed)
                    .map(|o| o.point.as_slice()),
            )
            .collect();
        (good, bad)
    }

    /// The incumbent with one to `max_changed` coordinates drawn from one kernel of `good`.
    fn draw(&self, incumbent: &[f64], good: &Mixture, rng: &mut SplitMix64) -> Vec<f64> {
        let kernel = rng.below(good.means.len());
        let (mean, sigma) = (&good.means[kernel], good.sigmas[kernel]);
        let mut dims: Vec<usize> = (0..incumbent.len()).collect();
        rng.shuffle(&mut dims);
        // One coordinate as often as two or more: single changes are the easiest to judge.
        let changed = if rng.below(2) == 0 {
            1
        } else {
            2 + rng.below(self.max_changed.max(2) - 1)
        };
        let mut point = incumbent.to_vec();
        for &d in dims.iter().take(changed.min(incumbent.len())) {
            point[d] = truncated_normal(mean[d], sigma, rng);
        }
        point
    }
}

/// A draw from N(mean, sigma) truncated to [0, 1], by rejection (then clamped: a kernel far
/// outside the cube).
fn truncated_normal(mean: f64, sigma: f64, rng: &mut SplitMix64) -> f64 {
    for _ in 0..32 {
        let x = mean + sigma * standard_normal(rng);
        if (0.0..=1.0).contains(&x) {
            return x;
        }
    }
    mean.clamp(0.0, 1.0)
}

/// Box-Muller.
fn standard_normal(rng: &mut SplitMix64) -> f64 {
    let uniform =
        |rng: &mut SplitMix64| ((rng.next_u64() >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
    let (u, v) = (uniform(rng), uniform(rng));
    (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
}

fn log_truncated_normal(x: f64, mean: f64, sigma: f64) -> f64 {
    let z = (x - mean) / sigma;
    let mass = normal_cdf((1.0 - mean) / sigma) - normal_cdf(-mean / sigma);
    -0.5 * z * z - (sigma * (std::f64::consts::TAU).sqrt()).ln() - mass.max(1e-300).ln()
}

fn normal_cdf(z: f64) -> f64 {
    0.5 * (1.0 + erf(z / std::f64::consts::SQRT_2))
}

/// Abramowitz and Stegun 7.1.26 (absolute error below 1.5e-7), enough for kernel weights.
fn erf(x: f64) -> f64 {
    let t = 1.0 / (1.0 + 0.327_591_1 * x.abs());
    let poly = t
        * (0.254_829_592
            + t * (-0.284_496_736
                + t * (1.421_413_741 + t * (-1.453_152_027 + t * 1.061_405_429))));
    let y = 1.0 - poly * (-x * x).exp();
    if x < 0.0 { -y } else { y }
}

fn log_sum_exp(terms: &[f64]) -> f64 {
    let max = terms.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if max == f64::NEG_INFINITY {
        return max;
    }
    max + terms.iter().map(|t| (t - max).exp()).sum::<f64>().ln()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A bowl with its minimum at `OPTIMUM`, and a cliff (a crash) past 0.9 in the first
    /// coordinate.
    const OPTIMUM: [f64; 4] = [0.7, 0.3, 0.6, 0.45];

    fn objective(x: &[f64]) -> Outcome {
        if x[0] > 0.9 {
            return Outcome::Failed;
        }
        Outcome::Score(x.iter().zip(OPTIMUM).map(|(a, b)| (a - b).powi(2)).sum())
    }

    fn score(o: Outcome) -> f64 {
        match o {
            Outcome::Score(s) => s,
            Outcome::Failed => f64::INFINITY,
        }
    }

    /// Hill-climbing from the centre with `propose`, keeping the best: the best score after
    /// `trials` and the points run.
    fn climb(
        trials: usize,
        mut propose: impl FnMut(&[f64], &[Observed]) -> Vec<f64>,
    ) -> (f64, Vec<Observed>) {
        let mut incumbent = vec![0.5; 4];
        let mut observed = vec![Observed {
            point: incumbent.clone(),
            outcome: objective(&incumbent),
        }];
        for _ in 0..trials {
            let point = propose(&incumbent, &observed);
            let outcome = objective(&point);
            if score(outcome) < score(objective(&incumbent)) {
                incumbent = point.clone();
            }
            observed.push(Observed { point, outcome });
        }
        (score(objective(&incumbent)), observed)
    }

    #[test]
    fn finds_the_optimum_of_a_known_function_better_than_random() {
        let (mut tpe_wins, mut tpe_scores) = (0, Vec::new());
        for seed in 0..10 {
            let mut rng = SplitMix64(seed);
            let (tpe, _) = climb(40, |incumbent, observed| {
                Tpe::default()
                    .suggest(incumbent, observed, &mut rng, |p| Some(p.to_vec()))
                    .unwrap()
            });
            let mut rng = SplitMix64(seed);
            let (random, _) = climb(40, |_, _| {
                (0..4)
                    .map(|_| truncated_normal(0.5, 1.0, &mut rng))
                    .collect()
            });
            tpe_wins += usize::from(tpe < random);
            tpe_scores.push(tpe);
        }
        assert!(
            tpe_wins >= 8,
            "TPE beat random search {tpe_wins} times in 10"
        );
        tpe_scores.sort_by(f64::total_cmp);
        assert!(tpe_scores[5] < 0.01, "median distance² {}", tpe_scores[5]);
    }

    #[test]
    fn never_returns_a_point_its_caller_refuses() {
        let mut rng = SplitMix64(3);
        let mut tried: Vec<Vec<f64>> = Vec::new();
        let grid = |p: &[f64]| {
            p.iter()
                .map(|x| (x * 4.0).round() / 4.0)
                .collect::<Vec<_>>()
        };
        for _ in 0..30 {
            let incumbent = [0.5; 2];
            let observed: Vec<Observed> = tried
                .iter()
                .map(|p| Observed {
                    point: p.clone(),
                    outcome: Outcome::Score(p[0]),
                })
                .collect();
            let Some(point) = Tpe::default().suggest(&incumbent, &observed, &mut rng, |p| {
                let p = grid(p);
                (!tried.contains(&p)).then_some(p)
            }) else {
                break;
            };
            assert!(!tried.contains(&point), "{point:?} repeated");
            tried.push(point);
        }
        assert!(tried.len() >= 15, "only {} distinct points", tried.len());
    }

    #[test]
    fn crashes_steer_it_away() {
        // The best points lie just below a cliff at 0.8 in the first coordinate; the points past
        // it crashed. Told of the crashes, it proposes far fewer points past the cliff than when
        // the crashed points are left out.
        let line: Vec<Observed> = (0..20)
            .map(|i| {
                let x = i as f64 / 19.0;
                Observed {
                    point: vec![x, 0.5],
                    outcome: if x > 0.8 {
                        Outcome::Failed
                    } else {
                        Outcome::Score((x - 0.75).powi(2))
                    },
                }
            })
            .collect();
        let past_the_cliff = |observed: &[Observed]| {
            let mut rng = SplitMix64(11);
            (0..200)
                .filter(|_| {
                    let point = Tpe::default()
                        .suggest(&[0.75, 0.5], observed, &mut rng, |p| Some(p.to_vec()))
                        .unwrap();
                    point[0] > 0.8
                })
                .count()
        };
        let scored: Vec<Observed> = line
            .iter()
            .filter(|o| o.outcome != Outcome::Failed)
            .cloned()
            .collect();
        let (told, untold) = (past_the_cliff(&line), past_the_cliff(&scored));
        assert!(
            told * 3 <= untold && untold > 0,
            "{told} of 200 past the cliff told of the crashes, {untold} untold"
        );
    }
}
