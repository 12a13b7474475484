//! Keep or discard, accounting for noise: two runs of the same program differ (the seed, and on
//! a wall-clock budget how many steps fit, which moves with the machine's load), by 0.01-0.05 bpb
//! in a short CPU run, so a smaller "improvement" is as likely luck as progress. A change's first
//! run is compared with the best's mean against the pooled noise floor; a gain within the noise
//! is settled by running the best and the change alternately, side by side on the same machine,
//! and judging the paired differences on their own spread ([`judge`]). A change that touches
//! only comments or the seed is never kept at all. [`keep_rule`] tells the agent the same rule
//! with the same numbers.

mod cosmetic;
mod noise;

pub use cosmetic::cosmetic;
pub use noise::{Noise, mean, noise_floor, noise_in_force, pooled_std_dev, t95, threshold};

use noise::squares;

/// Most pairs of a side-by-side comparison (at most 2 * MAX_PAIRS - 1 runs beyond the first).
pub const MAX_PAIRS: usize = 4;
/// Fewest pairs a comparison runs once started: one difference has no spread, and the spread of
/// two is so unreliable that two differences alike by chance decide (measured on CPU: -0.044
/// and -0.046, then +0.015).
pub const MIN_PAIRS: usize = 3;

#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    Keep(String),
    Discard(String),
    /// Within the noise: run (another pair of) the best and the change side by side.
    Pair(String),
}

/// What a change is judged on.
#[derive(Debug, Clone, Copy)]
pub struct Evidence<'a> {
    /// The best kept program's own runs; their mean is its val_bpb.
    pub best: &'a [f64],
    /// The noise floor pooled over the ledger (None when not measured).
    pub noise: Option<Noise>,
    /// The change's runs, in order.
    pub change: &'a [f64],
    /// Re-runs of the best beside the change: `reruns[i]` ran next to `change[i]`, same seed.
    pub reruns: &'a [f64],
    /// False once re-runs have used their share of the training time.
    pub may_rerun: bool,
}

impl Evidence<'_> {
    /// The paired differences, change minus best, of the pairs complete so far.
    pub fn differences(&self) -> Vec<f64> {
        self.change
            .iter()
            .zip(self.reruns)
            .map(|(c, b)| c - b)
            .collect()
    }

    /// The gain as judged (negative is better): the mean paired difference once a pair ran,
    /// else the change's mean minus the best's.
    pub fn delta(&self) -> f64 {
        match self.differences() {
            d if d.is_empty() => mean(self.change) - mean(self.best),
            d => mean(&d),
        }
    }
}

/// Keep, discard, or run another pair side by side. Before any pair, the change's mean is
/// compared with the best's against the noise floor with the change's own runs pooled in; once
/// pairs ran, only the paired differences count, against their own spread.
pub fn judge(e: &Evidence) -> Verdict {
    if e.reruns.is_empty() {
        unpaired(e)
    } else {
        paired(&e.differences(), e.may_rerun)
    }
}

fn unpaired(e: &Evidence) -> Verdict {
    let (n, best_runs) = (e.change.len(), e.best.len());
    let delta = e.delta();
    let Some(noise) = e.noise.map(|n| n.with_runs(e.change)) else {
        return if delta < 0.0 {
            Verdict::Keep(format!(
                "improved by {:.6} (noise floor not measured)",
                -delta
            ))
        } else {
            Verdict::Discard("no improvement (noise floor not measured)".into())
        };
    };
    let (sigma, critical) = (noise.sigma, noise.critical());
    let threshold = threshold(noise, n, best_runs);
    let runs = match n {
        1 => format!("1 run against {best_runs}, sigma {sigma:.6}"),
        n => format!("mean of {n} runs against {best_runs}, sigma {sigma:.6}"),
    };
    if delta < -threshold {
        Verdict::Keep(format!(
            "clear win: delta {delta:+.6} < -{critical:.2} standard errors = {:.6} ({runs})",
            -threshold
        ))
    } else if delta >= 0.0 {
        Verdict::Discard(format!("no improvement: delta {delta:+.6} >= 0 ({runs})"))
    } else if e.may_rerun {
        Verdict::Pair(format!(
            "within the noise: delta {delta:+.6} > {:.6} ({runs}); running the best and the \
             change side by side",
            -threshold
        ))
    } else {
        Verdict::Discard(format!(
            "the re-run share of time is spent: delta {delta:+.6} > {:.6} ({runs})",
            -threshold
        ))
    }
}

/// Judges paired differences (change minus best) by a one-sample t test on their own spread:
/// drift in the machine's speed moves both runs of a pair alike and cancels.
fn paired(differences: &[f64], may_rerun: bool) -> Verdict {
    let n = differences.len();
    if n < MIN_PAIRS {
        return Verdict::Pair(format!("{n} of at least {MIN_PAIRS} pairs side by side"));
    }
    let delta = mean(differences);
    let spread = (squares(differences) / (n - 1) as f64).sqrt();
    let critical = t95(n - 1);
    let threshold = critical * spread / (n as f64).sqrt();
    let pairs = format!(
        "{n} pairs side by side, differences {}, spread {spread:.6}",
        differences
            .iter()
            .map(|d| format!("{d:+.4}"))
            .collect::<Vec<_>>()
            .join(" ")
    );
    if delta < -threshold {
        Verdict::Keep(format!(
            "paired win: mean difference {delta:+.6} < -{critical:.2} standard errors = {:.6} \
             ({pairs})",
            -threshold
        ))
    } else if delta >= 0.0 {
        Verdict::Discard(format!(
            "no improvement side by side: mean difference {delta:+.6} >= 0 ({pairs})"
        ))
    } else if n < MAX_PAIRS && may_rerun {
        Verdict::Pair(format!(
            "within the noise side by side: mean difference {delta:+.6} > {:.6} ({pairs}); \
             another pair",
            -threshold
        ))
    } else {
        let why = if n < MAX_PAIRS {
            "the re-run share of time is spent"
        } else {
            "still within the noise side by side"
        };
        Verdict::Discard(format!(
            "{why}: mean difference {delta:+.6} > {:.6} ({pairs})",
            -threshold
        ))
    }
}

/// The keep rule in words for the agent, with the numbers [`judge`] uses right now: the noise
/// floor in force and a best kept result measured over `best_runs` runs. The one place the rule
/// is told, so that it cannot drift from the code.
pub fn keep_rule(noise: Option<Noise>, best_runs: usize) -> String {
    let Some(noise) = noise else {
        return "The noise between runs is not measured: any gain over the best is kept.".into();
    };
    let critical = match noise.dof {
        Some(dof) => format!(
            "{:.2} standard errors (Student's t at 95% for a sigma from {dof} degrees of freedom)",
            noise.critical()
        ),
        None => format!("{:.2} standard errors", noise.critical()),
    };
    let t = threshold(noise, 1, best_runs);
    let pairs = (MIN_PAIRS..=MAX_PAIRS)
        .map(|n| format!("{:.2} for {n}", t95(n - 1)))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "Noise floor: sigma {:.6}, the standard deviation of val_bpb between runs of one program, \
         pooled over every program run more than once. A change's first run is kept at once when \
         it beats the best (the mean of {best_runs} run{}) by more than {critical}: {t:.6} \
         ({:.1} sigma); it is discarded when it is no better. A gain in between is settled side by \
         side while re-runs have time left: the best and the change run alternately with the same \
         seeds ({MIN_PAIRS} to {MAX_PAIRS} pairs), and the change is kept when the mean of the \
         paired differences beats t times their own standard error (t = {pairs} pairs). Any other \
         result is indistinguishable from luck and discarded.",
        noise.sigma,
        if best_runs == 1 { "" } else { "s" },
        t / noise.sigma,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A configured noise floor, taken as exact: gains must clear 2 standard errors.
    const SIGMA: Option<Noise> = Some(Noise {
        sigma: 0.001,
        dof: None,
    });
    const BEST3: &[f64] = &[1.0, 1.0, 1.0];

    /// The change's runs alone, before any pair.
    fn alone(best: &[f64], noise: Option<Noise>, change: &[f64], may_rerun: bool) -> Verdict {
        judge(&Evidence {
            best,
            noise,
            change,
            reruns: &[],
            may_rerun,
        })
    }

    /// The change beside re-runs of the best.
    fn side_by_side(change: &[f64], reruns: &[f64], may_rerun: bool) -> Verdict {
        judge(&Evidence {
            best: BEST3,
            noise: SIGMA,
            change,
            reruns,
            may_rerun,
        })
    }

    #[test]
    fn a_clear_win_is_kept_at_once_and_a_loss_discarded() {
        // One run against a best of three: 2 * sigma * sqrt(1 + 1/3) = 0.00231 needed.
        assert!(matches!(
            alone(BEST3, SIGMA, &[0.997], true),
            Verdict::Keep(_)
        ));
        assert!(matches!(
            alone(BEST3, SIGMA, &[0.998], true),
            Verdict::Pair(_)
        ));
        assert!(matches!(
            alone(BEST3, SIGMA, &[1.0005], true),
            Verdict::Discard(_)
        ));
        assert!(matches!(
            alone(BEST3, SIGMA, &[1.0], true),
            Verdict::Discard(_)
        ));
    }

    #[test]
    fn the_best_is_uncertain_too() {
        // Against a best measured once, the same gain is no longer clear.
        assert!(matches!(
            alone(&[1.0], SIGMA, &[0.9975], true),
            Verdict::Pair(_)
        ));
        assert!(matches!(
            alone(BEST3, SIGMA, &[0.9975], true),
            Verdict::Keep(_)
        ));
    }

    #[test]
    fn a_sigma_from_few_runs_asks_for_more() {
        // Measured from 3 seeds (2 dof), t = 4.303: a gain of 3 standard errors is paired.
        let few = Some(Noise {
            sigma: 0.001,
            dof: Some(2),
        });
        let se = 0.001 * (1.0f64 + 1.0 / 3.0).sqrt();
        assert!(matches!(
            alone(BEST3, SIGMA, &[1.0 - 3.0 * se], true),
            Verdict::Keep(_)
        ));
        assert!(matches!(
            alone(BEST3, few, &[1.0 - 3.0 * se], true),
            Verdict::Pair(_)
        ));
        assert!(matches!(
            alone(BEST3, few, &[1.0 - 4.5 * se], true),
            Verdict::Keep(_)
        ));
        // Seen on CPU: sigma 0.00815 from 3 seeds, a no-op's two runs 0.0246 better on average.
        // 2 sigma / sqrt(2) would have kept it; the t rule with both means uncertain does not.
        let cpu = Some(Noise {
            sigma: 0.00815,
            dof: Some(2),
        });
        assert!(matches!(
            alone(&[2.6065; 3], cpu, &[2.5922, 2.5716], true),
            Verdict::Pair(_)
        ));
        // Well measured, Student's t gives way to the plain 2.
        let many = Noise {
            sigma: 0.001,
            dof: Some(40),
        };
        assert_eq!(many.critical(), 2.0);
    }

    /// Measured on a loaded CPU (60 s budget): the baseline's three back-to-back seeds, and a
    /// change whose two runs lie 0.051 apart, which the old rule kept as a clear win against the
    /// baseline's sigma 0.0053 alone. Re-measured later, alternating with fresh seeds, the two
    /// programs were indistinguishable: how many steps fit moved the score more than the change.
    #[test]
    fn a_change_whose_own_runs_disagree_is_not_kept() {
        let baseline = [2.5536, 2.5558, 2.5457];
        let change = [2.5444, 2.4931];
        let noise = pooled_std_dev(&[baseline.to_vec()]);
        assert!((noise.unwrap().sigma - 0.0053).abs() < 1e-4, "{noise:?}");
        // The first run is within the noise: it is run side by side.
        assert!(matches!(
            alone(&baseline, noise, &change[..1], true),
            Verdict::Pair(_)
        ));
        // Both runs, their own spread pooled in: sigma 0.0214 over 3 dof, t 3.18, and a gain of
        // 0.033 is less than the 0.062 it would take.
        let pooled = noise.unwrap().with_runs(&change);
        assert!((pooled.sigma - 0.0214).abs() < 1e-4, "{pooled:?}");
        assert_eq!(pooled.dof, Some(3));
        let Verdict::Pair(why) = alone(&baseline, noise, &change, true) else {
            panic!("kept or discarded");
        };
        assert!(
            why.contains("-0.062125") && why.contains("sigma 0.021387"),
            "{why}"
        );
        let Verdict::Discard(why) = alone(&baseline, noise, &change, false) else {
            panic!("kept without time for a comparison");
        };
        assert!(why.contains("share"), "{why}");
        // Side by side with the re-measurement's baseline runs (alternating, seeds 100-102):
        // differences -0.044, -0.046, +0.015 are no gain beyond their spread.
        let reruns = [2.6081, 2.5190, 2.4771];
        let later = [2.5638, 2.4728, 2.4918];
        let evidence = |pairs: usize, may_rerun| Evidence {
            best: &baseline,
            noise,
            change: &later[..pairs],
            reruns: &reruns[..pairs],
            may_rerun,
        };
        // The first two pairs agree by chance; a spread of two would have kept the change.
        assert!(matches!(judge(&evidence(2, false)), Verdict::Pair(_)));
        assert!(matches!(judge(&evidence(3, true)), Verdict::Pair(_)));
        let Verdict::Discard(why) = judge(&evidence(3, false)) else {
            panic!("kept on three pairs");
        };
        assert!(
            why.contains("0.0860"),
            "t 4.30 * spread 0.0346 / sqrt 3: {why}"
        );
        assert!((evidence(3, true).delta() + 0.02527).abs() < 1e-4);
    }

    #[test]
    fn a_clear_real_gain_is_kept() {
        let baseline = [2.5536, 2.5558, 2.5457];
        let noise = pooled_std_dev(&[baseline.to_vec()]);
        // 0.05 on one run is over 8 sigma: kept at once.
        assert!(matches!(
            alone(&baseline, noise, &[2.50], true),
            Verdict::Keep(_)
        ));
        // Half hidden by a slow machine at first, but 0.03 better in each pair whatever the speed.
        let best = [2.58, 2.521, 2.49];
        let change = [2.55, 2.49, 2.461];
        let evidence = |pairs: usize| Evidence {
            best: &baseline,
            noise,
            change: &change[..pairs],
            reruns: &best[..pairs],
            may_rerun: true,
        };
        assert!(matches!(
            alone(&baseline, noise, &change[..1], true),
            Verdict::Pair(_)
        ));
        assert!(matches!(judge(&evidence(2)), Verdict::Pair(_)));
        let Verdict::Keep(why) = judge(&evidence(3)) else {
            panic!("three pairs 0.030, 0.031 and 0.029 better not kept");
        };
        assert!(why.contains("paired win"), "{why}");
    }

    #[test]
    fn an_ambiguous_gain_is_settled_side_by_side() {
        // A started comparison runs three pairs, share or not.
        assert!(matches!(
            side_by_side(&[0.998], &[1.0], false),
            Verdict::Pair(_)
        ));
        assert!(matches!(
            side_by_side(&[0.996, 0.995], &[1.0, 1.0], false),
            Verdict::Pair(_)
        ));
        // A third pair 0.0045 better: t = 4.30 * 0.0005 / sqrt 3 = 0.0012 < 0.0045: kept.
        assert!(matches!(
            side_by_side(&[0.996, 0.995, 0.995], &[1.0, 1.0, 0.9995], true),
            Verdict::Keep(_)
        ));
        // The best did as well side by side: luck, not progress.
        let Verdict::Discard(why) =
            side_by_side(&[0.998, 1.001, 0.999], &[0.999, 0.999, 0.999], true)
        else {
            panic!("kept");
        };
        assert!(why.contains("no improvement side by side"), "{why}");
        // Still ambiguous after the most pairs, or once the share is spent: discarded.
        let Verdict::Discard(why) =
            side_by_side(&[0.998, 0.995, 1.0, 0.999], &[1.0, 1.0, 0.998, 1.0], true)
        else {
            panic!("kept");
        };
        assert!(why.contains("still within the noise"), "{why}");
        let Verdict::Discard(why) = side_by_side(&[0.998, 0.995, 1.0], &[1.0, 1.0, 0.998], false)
        else {
            panic!("kept");
        };
        assert!(why.contains("share"), "{why}");
        // An incomplete pair does not count.
        let half = Evidence {
            best: BEST3,
            noise: SIGMA,
            change: &[0.998, 0.9],
            reruns: &[1.0],
            may_rerun: true,
        };
        assert_eq!(half.differences().len(), 1);
        assert!((half.delta() + 0.002).abs() < 1e-12);
    }

    #[test]
    fn the_agent_is_told_the_threshold_judge_applies() {
        // Three seeds (2 dof) against a 3-run baseline: t = 4.303, one run must gain
        // 4.303 * sqrt(1 + 1/3) = 4.97 sigma.
        let noise = Noise {
            sigma: 0.001,
            dof: Some(2),
        };
        let few = Some(noise);
        let rule = keep_rule(few, 3);
        assert!(rule.contains("4.30 standard errors"), "{rule}");
        assert!(rule.contains("0.004969 (5.0 sigma)"), "{rule}");
        assert!(rule.contains("t = 4.30 for 3, 3.18 for 4 pairs"), "{rule}");
        let edge = threshold(noise, 1, 3);
        assert!(matches!(
            alone(BEST3, few, &[1.0 - edge * 1.001], true),
            Verdict::Keep(_)
        ));
        assert!(matches!(
            alone(BEST3, few, &[1.0 - edge * 0.999], true),
            Verdict::Pair(_)
        ));
        assert!(keep_rule(None, 1).contains("any gain"));
    }

    #[test]
    fn without_a_noise_floor_any_gain_counts() {
        assert!(matches!(
            alone(&[1.0], None, &[0.9999], true),
            Verdict::Keep(_)
        ));
        assert!(matches!(
            alone(&[1.0], None, &[1.0], true),
            Verdict::Discard(_)
        ));
    }
}
