//! The hard limits of a run, and what counts as over budget. The trainer counts its own training
//! time (the runtime's clock), but that count runs in the agent's process, so the orchestrator
//! times every run from outside too: once the unmodified baseline has measured how long a run
//! takes beyond its budget (start-up, the uncounted steps, the last step's overshoot, the
//! export), a run that
//! takes longer than the budget plus that measurement, with room for a loaded machine, trained
//! past its budget: it is killed and recorded as a crash, never scored. The baseline's
//! evaluations bound the protected evaluation the same way. docs/trust.md explains the numbers.

use std::time::Duration;

use crate::decide::mean;
use crate::ledger::Trial;

/// How much slower than the baseline's measurement a loaded machine may make the part of a run
/// that lies outside its budget (and an evaluation), before a run counts as over budget. Measured
/// on 2 cores already loaded by other work (`scripts/bench/load.sh`, passive OpenMP threads): one
/// or two busy processes beside a 10 s run left its wall time at 20.5-21.7 s (21.3 s without),
/// two trainers at once took 1.55 times one's; 3 leaves about twice that.
pub const LOAD_FACTOR: f64 = 3.0;
/// The share of the budget the last step may overshoot by on a loaded machine: the clock stops
/// training only once a step ends past the budget.
pub const OVERSHOOT: f64 = 0.05;
/// Seconds added to every measured limit, for the jitter of a process start that a few seconds'
/// measurement does not show.
pub const SLACK_SECONDS: f64 = 5.0;
/// A protected evaluation's limit before the baseline measured one: the evaluator's speed is
/// known only once measured, and a loaded machine must not end the night at its first run (an
/// evaluation of 8 s took 32 s beside one busy process, and 299 s with spinning threads).
pub const UNMEASURED_EVAL_SECONDS: f64 = 300.0;

/// Hard wall-clock limits, enforced from outside the process.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limits {
    /// The trainer: its budget plus its start-up and export.
    pub train: Duration,
    /// One protected evaluation.
    pub eval: Duration,
    /// What `train` was measured from, once the baseline ran.
    pub measured: Option<Measured>,
}

/// The baseline's runs beyond their budget, and its protected evaluations.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Measured {
    pub budget: f64,
    /// Seconds of a run beyond its budget: mean and standard deviation over the baseline's runs.
    pub overhead: Spread,
    pub eval: Spread,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Spread {
    pub mean: f64,
    pub std_dev: f64,
}

impl Spread {
    /// Mean and standard deviation of `values` (0 for a single one); None for none.
    pub fn of(values: &[f64]) -> Option<Spread> {
        if values.is_empty() {
            return None;
        }
        let mean = mean(values);
        let squares: f64 = values.iter().map(|v| (v - mean).powi(2)).sum();
        let std_dev = (squares / (values.len() - 1).max(1) as f64).sqrt();
        Some(Spread { mean, std_dev })
    }

    /// What a loaded machine may make of it: LOAD_FACTOR times its high end, plus the slack.
    fn allowance(&self) -> f64 {
        LOAD_FACTOR * (self.mean + 2.0 * self.std_dev) + SLACK_SECONDS
    }
}

impl Limits {
    /// Before anything is measured: the trainer gets its budget plus `grace`, at most 2x budget +
    /// 60 s; an evaluation UNMEASURED_EVAL_SECONDS.
    pub fn unmeasured(budget: f64, grace: f64) -> Limits {
        let train = (budget + grace).min(2.0 * budget + 60.0);
        Limits {
            train: Duration::from_secs_f64(train),
            eval: Duration::from_secs_f64(UNMEASURED_EVAL_SECONDS),
            measured: None,
        }
    }

    /// Once the baseline's runs are recorded: a trainer may run the `budget` plus OVERSHOOT, plus
    /// the allowance of the measured overhead (never longer than the unmeasured rule); an
    /// evaluation the allowance of the measured evaluations. Unmeasured without a baseline run.
    /// A baseline run's overhead is its wall time beyond the budget, or beyond its counted
    /// training where that was shorter (a `--resume` with a longer budget than it ran with).
    pub fn measured(budget: f64, grace: f64, baseline: &[Trial]) -> Limits {
        let unmeasured = Limits::unmeasured(budget, grace);
        let overheads: Vec<f64> = baseline
            .iter()
            .map(|t| (t.run_seconds - t.training_seconds.min(budget)).max(0.0))
            .collect();
        let evals: Vec<f64> = baseline.iter().map(|t| t.eval_seconds).collect();
        let (Some(overhead), Some(eval)) = (Spread::of(&overheads), Spread::of(&evals)) else {
            return unmeasured;
        };
        let measured = Measured {
            budget,
            overhead,
            eval,
        };
        Limits {
            train: unmeasured
                .train
                .min(Duration::from_secs_f64(measured.wall_limit())),
            eval: Duration::from_secs_f64(eval.allowance()),
            measured: Some(measured),
        }
    }
}

impl Measured {
    /// The longest an honest run of the budget takes, loaded machine included.
    pub fn wall_limit(&self) -> f64 {
        self.budget * (1.0 + OVERSHOOT) + self.overhead.allowance()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::executor::Crash;

    /// The baseline's runs as (training, run, eval) seconds.
    fn baseline(runs: &[(f64, f64, f64)]) -> Vec<Trial> {
        runs.iter()
            .map(|&(training_seconds, run_seconds, eval_seconds)| Trial {
                seed: 42,
                val_bpb: Some(2.5),
                trainer_val_bpb: None,
                training_seconds,
                run_seconds,
                eval_seconds,
                num_steps: Some(9),
                curve: Vec::new(),
            })
            .collect()
    }

    #[test]
    fn before_the_baseline_the_old_rule_holds() {
        let limits = Limits::unmeasured(300.0, 120.0);
        assert_eq!(limits.train, Duration::from_secs(420));
        assert_eq!(
            Limits::unmeasured(10.0, 120.0).train,
            Duration::from_secs(80)
        );
        assert_eq!(limits.eval, Duration::from_secs(300));
        assert_eq!(
            Limits::measured(10.0, 120.0, &[]),
            Limits::unmeasured(10.0, 120.0)
        );
        assert!(
            Crash::killed(&limits)
                .to_string()
                .starts_with("timed out after 420 s")
        );
    }

    /// Measured on this 2-core machine at a 10 s budget: the baseline ran 13.5-14.0 s (steps of
    /// about 1.1 s, so about 10.5 s counted) and its evaluation 8 s; a trainer that counted a
    /// quarter of its time ran 43.2 s.
    #[test]
    fn a_trainer_that_undercounts_its_time_is_over_budget_and_a_loaded_honest_one_is_not() {
        let runs = [(10.5, 13.5, 8.0), (10.6, 14.0, 8.2), (10.4, 13.8, 7.9)];
        let limits = Limits::measured(10.0, 120.0, &baseline(&runs));
        let train = limits.train.as_secs_f64();
        assert!(train < 43.2, "{train}");
        // An honest run whose start-up and export took 2.2 times the baseline's (another trainer
        // beside it) and whose last step overshot by a whole step three times slower than idle.
        assert!(10.0 + 2.2 * 3.3 + 3.3 < train, "{train}");
        // The evaluation follows its measurement, not the budget.
        let eval = limits.eval.as_secs_f64();
        assert!(eval > 2.2 * 8.2 && eval < 60.0, "{eval}");
        let why = Crash::killed(&limits).to_string();
        assert!(why.starts_with("over budget: still running after"), "{why}");
        assert!(
            why.contains("budget 10 s + measured start-up and export 3.8 s"),
            "{why}"
        );
    }

    #[test]
    fn a_quarter_over_a_300_second_budget_is_over_budget() {
        // A CPU run's start-up, one uncounted step, overshoot and export take about 6 s.
        let runs = [
            (301.0, 305.5, 9.0),
            (301.2, 306.0, 9.0),
            (300.9, 306.4, 9.5),
        ];
        let limits = Limits::measured(300.0, 120.0, &baseline(&runs));
        let train = limits.train.as_secs_f64();
        assert!(train < 1.25 * 300.0 + 6.0, "{train}");
        assert!(train > 300.0 * (1.0 + OVERSHOOT) + 2.0 * 6.0, "{train}");
        // Never longer than the rule before the measurement.
        let slow = Limits::measured(10.0, 120.0, &baseline(&[(10.0, 60.0, 8.0)]));
        assert_eq!(slow.train, Duration::from_secs(80));
        // Measured at a 2 s budget, resumed at 300 s: the overhead still holds.
        let resumed = Limits::measured(300.0, 120.0, &baseline(&[(2.1, 5.0, 1.0)]));
        assert!(resumed.train.as_secs_f64() > 315.0, "{resumed:?}");
    }
}
