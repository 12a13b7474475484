//! The noise floor: how much two runs of one program differ, pooled over every program the run
//! has run more than once, and the statistics the decisions rest on.

use crate::ledger::{Record, runs_by_program};

/// The noise floor: the standard deviation of val_bpb between runs of one program, and the
/// degrees of freedom it was estimated with (None when configured, taken as exact).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Noise {
    pub sigma: f64,
    pub dof: Option<usize>,
}

impl Noise {
    /// How many standard errors a gain must clear: Student's t for a two-sided 95% test while
    /// sigma rests on few runs (three seeds alone can be far off), never less than 2.
    pub fn critical(&self) -> f64 {
        self.dof.map_or(2.0, t95)
    }

    /// This floor with `runs` of one more program pooled in, so that a change's own spread
    /// enters the sigma that judges it. A configured floor is exact and stays as it is.
    pub fn with_runs(self, runs: &[f64]) -> Noise {
        let (Some(dof), true) = (self.dof, runs.len() >= 2) else {
            return self;
        };
        let squares = self.sigma.powi(2) * dof as f64 + squares(runs);
        let dof = dof + runs.len() - 1;
        Noise {
            sigma: (squares / dof as f64).sqrt(),
            dof: Some(dof),
        }
    }
}

/// Student's t for a two-sided 95% test with `dof` degrees of freedom; 2 from 11 on, where the
/// table's values are within 10% of it.
pub fn t95(dof: usize) -> f64 {
    const T95: [f64; 10] = [
        12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
    ];
    match dof {
        1..=10 => T95[dof - 1],
        _ => 2.0,
    }
}

/// The gain a change's mean over `runs` runs must show over the best kept result, the mean of
/// `best_runs` runs, to be kept without a paired comparison: `critical` standard errors of the
/// difference of the two means, which are both uncertain: sigma * sqrt(1/runs + 1/best_runs).
pub fn threshold(noise: Noise, runs: usize, best_runs: usize) -> f64 {
    noise.critical() * noise.sigma * (1.0 / runs as f64 + 1.0 / best_runs.max(1) as f64).sqrt()
}

pub fn mean(values: &[f64]) -> f64 {
    values.iter().sum::<f64>() / values.len() as f64
}

/// The sum of squared deviations from the mean.
pub(super) fn squares(values: &[f64]) -> f64 {
    let mean = mean(values);
    values.iter().map(|v| (v - mean).powi(2)).sum()
}

/// The standard deviation pooled over groups of runs of one program each (every group adds its
/// squared deviations from its own mean and its size less one to the degrees of freedom); None
/// without a group of two or more.
pub fn pooled_std_dev(groups: &[Vec<f64>]) -> Option<Noise> {
    let sum: f64 = groups
        .iter()
        .filter(|g| g.len() >= 2)
        .map(|g| squares(g))
        .sum();
    let dof = degrees_of_freedom(groups);
    (dof > 0).then(|| Noise {
        sigma: (sum / dof as f64).sqrt(),
        dof: Some(dof),
    })
}

/// The noise floor the decisions use: `configured` (autoresearch.toml's `noise_sigma`, taken as
/// exact) when set, else the one measured, see [`noise_floor`].
pub fn noise_in_force(records: &[Record], configured: Option<f64>) -> Option<Noise> {
    configured
        .map(|sigma| Noise { sigma, dof: None })
        .or_else(|| noise_floor(records))
}

/// Fewest degrees of freedom the measured noise floor rests on once the night has them. A
/// re-measurement at a new best is three runs, 2 degrees of freedom: alone, it would raise
/// Student's t from about 2 to 4.30 and, with one outlying run among the three, freeze the
/// night (seen on a loaded CPU: sigma 0.021 re-measured as 0.038 from 2.441, 2.446 and 2.510
/// raised the bar for a single run's win from about 0.05 to 0.19 bpb, and ten changes 0.06-0.15
/// better were discarded after it).
pub const MIN_DOF: usize = 10;

/// The noise floor measured by `records`: the standard deviation pooled over every program run
/// more than once since the noise was last measured (the measurement's seeds, the changes' own
/// runs, and each best's re-runs beside later changes, which see the machine hours later and so
/// bring its drift into the pool), reaching back to the latest programs run more than once
/// before it while it has fewer than [`MIN_DOF`] degrees of freedom; the latest recorded one
/// where no program ran twice.
pub fn noise_floor(records: &[Record]) -> Option<Noise> {
    let since = records.iter().rposition(|r| r.sigma_measured).unwrap_or(0);
    let mut pool: Vec<Vec<f64>> = runs_by_program(records)
        .into_iter()
        .map(|runs| runs.into_iter().filter_map(|t| t.val_bpb).collect())
        .collect();
    let earlier: Vec<Vec<f64>> = pool.drain(..since).rev().collect();
    for group in earlier {
        if degrees_of_freedom(&pool) >= MIN_DOF {
            break;
        }
        pool.push(group);
    }
    pooled_std_dev(&pool).or_else(|| {
        let sigma = records.iter().rev().find_map(|r| r.sigma)?;
        Some(Noise { sigma, dof: None })
    })
}

/// Each group of runs of one program brings its size less one.
fn degrees_of_freedom(groups: &[Vec<f64>]) -> usize {
    groups.iter().map(|g| g.len().saturating_sub(1)).sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::{Ledger, Status, Trial};
    use crate::run_dir::RunDir;

    #[test]
    fn the_noise_floor_pools_every_repeated_program() {
        assert_eq!(pooled_std_dev(&[vec![1.0], vec![]]), None);
        let one = pooled_std_dev(&[vec![1.0, 1.002, 1.004], vec![2.0]]).unwrap();
        assert!((one.sigma - 0.002).abs() < 1e-12, "{one:?}");
        assert_eq!(one.dof, Some(2));
        // Squares 8e-6 over 2 dof and 1.8e-5 over 1 dof: sqrt(2.6e-5 / 3).
        let pooled = pooled_std_dev(&[vec![1.0, 1.002, 1.004], vec![2.0, 2.006]]).unwrap();
        assert!(
            (pooled.sigma - (2.6e-5f64 / 3.0).sqrt()).abs() < 1e-12,
            "{pooled:?}"
        );
        assert_eq!(pooled.dof, Some(3));
    }

    fn trials(scores: &[f64]) -> Vec<Trial> {
        scores
            .iter()
            .map(|&v| Trial {
                seed: 42,
                val_bpb: Some(v),
                trainer_val_bpb: None,
                training_seconds: 1.0,
                run_seconds: 1.0,
                eval_seconds: 0.0,
                num_steps: Some(60),
                curve: Vec::new(),
            })
            .collect()
    }

    #[test]
    fn the_noise_floor_pools_runs_since_it_was_measured() {
        let runs = |seq, scores: &[f64], measured| Record {
            trials: trials(scores),
            sigma: Some(0.5),
            sigma_measured: measured,
            ..Record::sample(seq, Status::Discard, None)
        };
        // Before any program ran twice: the one the decisions used.
        let configured = noise_floor(&[runs(0, &[2.0], false)]).unwrap();
        assert_eq!((configured.sigma, configured.dof), (0.5, None));
        let old = runs(0, &[3.0, 2.0], true);
        let baseline = runs(1, &[1.0, 1.002, 1.004], true);
        let rerun = runs(2, &[1.1, 1.106], false);
        let once = runs(3, &[0.9], false);
        // Fewer than MIN_DOF since the measurement: the runs before it are pooled too.
        let floor = noise_floor(&[old.clone(), baseline.clone(), rerun.clone(), once]).unwrap();
        let all = pooled_std_dev(&[vec![3.0, 2.0], vec![1.0, 1.002, 1.004], vec![1.1, 1.106]]);
        assert_eq!(Some(floor), all);
        assert_eq!(floor.dof, Some(4));
        // With MIN_DOF since it, they are not.
        let later: Vec<Record> = (4..14).map(|seq| runs(seq, &[1.0, 1.001], false)).collect();
        let records = [vec![old, baseline, rerun], later].concat();
        let floor = noise_floor(&records).unwrap();
        assert_eq!(floor.dof, Some(MIN_DOF + 3));
        assert!(floor.sigma < 0.01, "{floor:?}");
    }

    /// The night that froze (CPU, 60 s budget): sigma 0.021 over the night's re-runs, then a new
    /// best re-measured from three runs, one of them far off. Its 2 degrees of freedom alone put
    /// the bar for a single run's win at 0.19 bpb; pooled with the latest runs before it, the
    /// bar stays near where it was.
    #[test]
    fn one_outlying_re_measurement_does_not_freeze_the_night() {
        let measured = |seq, scores: &[f64]| Record {
            trials: trials(scores),
            sigma_measured: true,
            ..Record::sample(seq, Status::Keep, Some(mean(scores)))
        };
        let before: Vec<Record> = (1..=8)
            .map(|seq| Record {
                trials: trials(&[2.5, 2.5 + 0.021 * 2f64.sqrt()]),
                ..Record::sample(seq, Status::Discard, None)
            })
            .collect();
        let baseline = measured(0, &[2.55, 2.571, 2.529]);
        let remeasured = measured(9, &[2.441, 2.446, 2.510]);
        let night = [vec![baseline], before, vec![remeasured]].concat();
        let alone = pooled_std_dev(&[vec![2.441, 2.446, 2.510]]).unwrap();
        assert!(threshold(alone, 1, 3) > 0.18, "{alone:?}");
        let floor = noise_floor(&night).unwrap();
        assert!(floor.dof.unwrap() >= MIN_DOF, "{floor:?}");
        assert!(threshold(floor, 1, 3) < 0.07, "{floor:?}");
    }

    #[test]
    fn the_best_re_run_beside_a_change_joins_the_best_and_counts_as_a_re_run() {
        let keep = |seq, scores: &[f64]| Record {
            trials: trials(scores),
            sigma_measured: seq == 0,
            ..Record::sample(seq, Status::Keep, Some(mean(scores)))
        };
        let baseline = keep(0, &[1.0, 1.002, 1.004]);
        // Beside change 1 the baseline ran again, 1.010 and 1.012: its group is five runs.
        let paired = Record {
            trials: trials(&[1.0, 1.003]),
            best_trials: trials(&[1.010, 1.012]),
            ..Record::sample(1, Status::Discard, Some(1.0015))
        };
        let floor = noise_floor(&[baseline.clone(), paired.clone()]).unwrap();
        let group = [1.0, 1.002, 1.004, 1.010, 1.012];
        let expected = (pooled_std_dev(&[group.to_vec(), vec![1.0, 1.003]]))
            .unwrap()
            .sigma;
        assert!((floor.sigma - expected).abs() < 1e-12, "{floor:?}");
        assert_eq!(floor.dof, Some(5));
        let dir = tempfile::tempdir().unwrap();
        let mut ledger = Ledger::open(&RunDir::at(dir.path())).unwrap();
        ledger.append(baseline).unwrap();
        ledger.append(paired).unwrap();
        // The baseline's three seeds are no re-runs; change 1's second run and the two of the
        // best are.
        assert_eq!(ledger.rerun_seconds(), (3.0, 7.0));
    }
}
