//! Stopping doomed runs early. While a change's first run trains, its curve (the trainer's
//! progress lines, see [`crate::curve`]) is compared with the best's runs at the same counted
//! second of the budget; a run clearly worse there is stopped and recorded as a discard, with the
//! point it was stopped at and its curve. Such a run is never scored, so it can never be kept:
//! stopping only ever saves time, and a trainer that misreports its loss can at most avoid being
//! stopped.
//!
//! "Clearly worse" is calibrated on this run's own recorded curves: the loss averaged over a
//! window ending at the run's latest point must exceed the best's runs' average over the same
//! window by more than [`Rule::spreads`] times the spread between runs of one program there (the
//! baseline's noise seeds, later re-runs of the best and the re-runs of changes, pooled), and by
//! at least [`Rule::margin`]. The loss is the probe's, the model's loss on the same fixed rows in
//! every run ([`Signal`]); a batch's training loss depends on where in the data the batch comes
//! from, which a change of step speed or batch size moves to another second of the budget. Only
//! the part of the budget before the warm-down is judged: before it the curves of different
//! programs keep their order, after it a change of schedule can overtake, and the time left to
//! save shrinks. docs/early-stop.md has the measurements the figures come from (`cargo bench -p
//! orchestrator --bench early_stop`).

use std::sync::Arc;

mod signal;

use crate::curve::{Curve, Point};
use crate::ledger::{self, Printed, Record, Stopped};
use signal::{Signal, Smoothed, mean, pooled_spread, scored_curves, window_mean};

/// When and by how much a run must trail the best's to be stopped.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rule {
    /// The share of the budget before which a run is not judged: its first steps say little.
    pub from: f64,
    /// The share of the budget after which a run is no longer judged.
    pub until: f64,
    /// The window the loss is averaged over, as a share of the budget: one step's loss is noisy.
    pub window: f64,
    /// How many spreads between runs of one program the gap must exceed.
    pub spreads: f64,
    /// The smallest gap that stops a run, in the loss's units (nats per token).
    pub margin: f64,
}

impl Default for Rule {
    /// The rule as measured on the recorded corpus (docs/early-stop.md).
    fn default() -> Rule {
        Rule {
            from: 0.2,
            until: 0.5,
            window: 0.1,
            spreads: 4.0,
            margin: 0.05,
        }
    }
}

/// What the runs of one night are judged against: the best's curves, and the curves of every
/// program run more than once (for the spread), all with the same budget, each smoothed.
#[derive(Debug)]
pub struct Reference {
    budget: f64,
    rule: Rule,
    signal: Signal,
    best: Vec<Smoothed>,
    groups: Vec<Vec<Smoothed>>,
}

impl Reference {
    /// The reference `records` offer for runs of `budget` seconds, or None where they cannot
    /// calibrate the rule: no best with a curve, or no program run twice with curves.
    pub fn of(records: &[Record], budget: f64, rule: Rule) -> Option<Reference> {
        let best_record = ledger::best(records)?;
        let same_budget = |r: &Record| {
            r.result
                .as_ref()
                .and_then(Printed::line)
                .and_then(|line| line.time_budget_s)
                .is_some_and(|b| (b - budget).abs() < 1e-6)
        };
        let programs: Vec<(u64, Vec<&[Point]>)> = records
            .iter()
            .zip(ledger::runs_by_program(records))
            .filter(|(record, _)| same_budget(record))
            .map(|(record, runs)| (record.seq, scored_curves(runs)))
            .collect();
        let best_curves = &programs.iter().find(|(seq, _)| *seq == best_record.seq)?.1;
        let signal = Signal::common(best_curves);
        let window = rule.window * budget;
        let smoothed = |curves: &[&[Point]]| -> Vec<Smoothed> {
            curves
                .iter()
                .map(|c| Smoothed::of(c, window, signal))
                .filter(|s| !s.0.is_empty())
                .collect()
        };
        let best = smoothed(best_curves);
        let groups: Vec<Vec<Smoothed>> = programs
            .iter()
            .map(|(_, curves)| smoothed(curves))
            .filter(|runs| runs.len() >= 2)
            .collect();
        (!best.is_empty() && !groups.is_empty()).then_some(Reference {
            budget,
            rule,
            signal,
            best,
            groups,
        })
    }

    /// Where `curve`, a run's curve so far, shows it clearly worse than the best's runs, judged
    /// at its latest point; None while it is not (or cannot be told).
    pub fn judge(&self, curve: &[Point]) -> Option<Stopped> {
        let latest = curve.last()?;
        let (t, progress) = (latest.seconds, latest.seconds / self.budget);
        if progress < self.rule.from || progress > self.rule.until {
            return None;
        }
        let loss = window_mean(curve, t, self.rule.window * self.budget, self.signal)?;
        let best: Vec<f64> = self.best.iter().filter_map(|c| c.at(t)).collect();
        let best_loss = mean(&best)?;
        let spread = pooled_spread(&self.groups, t)?;
        let threshold = (self.rule.spreads * spread).max(self.rule.margin);
        (loss - best_loss > threshold).then_some(Stopped {
            seconds: t,
            step: latest.step,
            progress,
            loss,
            best_loss,
            threshold,
            probe: self.signal == Signal::Probe,
        })
    }
}

/// What run `index` of experiment `seq` is judged against, when it may be stopped early: only a
/// change's first run, with `enabled` and `records` to calibrate on. The baseline and the best
/// are the reference, and a change runs again only when its first run came within the noise.
/// Only curves with the probe are judged: on the training loss the rule stopped changes that
/// were kept (docs/early-stop.md), so the records of a night from before the probe are not.
pub fn judging(
    enabled: bool,
    seq: u64,
    index: usize,
    records: &[Record],
    budget: f64,
) -> Option<Arc<Reference>> {
    let judged = enabled && seq > 0 && index == 0;
    judged
        .then(|| Reference::of(records, budget, Rule::default()))
        .flatten()
        .filter(|reference| reference.signal == Signal::Probe)
        .map(Arc::new)
}

/// Follows one run's progress lines as they come: its curve, and whether the rule stops it.
pub struct Follower {
    curve: Curve,
    reference: Option<Arc<Reference>>,
    stopped: bool,
}

impl Follower {
    /// A run judged against `reference`, or only followed without one.
    pub fn new(reference: Option<Arc<Reference>>) -> Follower {
        Follower {
            curve: Curve::default(),
            reference,
            stopped: false,
        }
    }

    /// Takes in a line of the trainer's output; where and why, when the run is to be stopped
    /// now (once).
    pub fn line(&mut self, line: &str) -> Option<Stopped> {
        if !self.curve.push_line(line) || self.stopped {
            return None;
        }
        let stopped = self.reference.as_ref()?.judge(self.curve.points())?;
        self.stopped = true;
        Some(stopped)
    }

    /// The curve followed.
    pub fn into_curve(self) -> Vec<Point> {
        self.curve.into_points()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::{Status, Trial};

    const BUDGET: f64 = 100.0;

    /// A curve of a run `above` the common one, a point a second.
    fn curve(above: f64) -> Vec<Point> {
        (1..=100)
            .map(|s| Point {
                seconds: s as f64,
                step: s,
                loss: Some(3.0 + 5.0 / s as f64 + above),
                probe: None,
            })
            .collect()
    }

    fn trial(above: f64) -> Trial {
        Trial {
            seed: 42,
            val_bpb: Some(2.0 + above),
            trainer_val_bpb: None,
            training_seconds: BUDGET,
            run_seconds: BUDGET,
            eval_seconds: 0.0,
            num_steps: Some(100),
            curve: curve(above),
        }
    }

    /// A kept record of runs `above` the common curve, with `budget`'s result line.
    fn keep(seq: u64, runs: &[f64], budget: f64) -> Record {
        let line = serde_json::json!({
            "schema": 1, "status": "ok", "training_seconds": budget, "total_seconds": budget,
            "peak_memory_mb": 1.0, "num_steps": 100, "num_params": 1, "train_tokens": 1,
            "tokens_per_second": 1.0, "mfu_percent": null, "device": "cpu", "contract": "c",
            "time_budget_s": budget,
        });
        Record {
            trials: runs.iter().map(|&a| trial(a)).collect(),
            result: Some(Printed::Line(serde_json::from_value(line).unwrap())),
            ..Record::sample(seq, Status::Keep, Some(2.0))
        }
    }

    /// The baseline's three seeds, spread 0.01 apart.
    fn baseline() -> Record {
        keep(0, &[-0.01, 0.0, 0.01], BUDGET)
    }

    fn reference(records: &[Record]) -> Reference {
        Reference::of(records, BUDGET, Rule::default()).expect("a reference")
    }

    /// The run's curve up to `seconds`.
    fn until(curve: &[Point], seconds: f64) -> &[Point] {
        let n = curve.iter().take_while(|p| p.seconds <= seconds).count();
        &curve[..n]
    }

    #[test]
    fn a_run_clearly_worse_is_stopped_only_within_the_judged_part_of_the_budget() {
        let reference = reference(&[baseline()]);
        let doomed = curve(0.3);
        assert_eq!(reference.judge(until(&doomed, 19.0)), None, "too early");
        let stopped = reference.judge(until(&doomed, 20.0)).expect("stopped");
        assert_eq!((stopped.seconds, stopped.step), (20.0, 20));
        assert!((stopped.progress - 0.2).abs() < 1e-9);
        assert!((stopped.loss - stopped.best_loss - 0.3).abs() < 1e-9);
        // The spread is 0.01: four of them are below the margin, which decides.
        assert_eq!(stopped.threshold, Rule::default().margin);
        assert!(reference.judge(until(&doomed, 50.0)).is_some());
        assert_eq!(reference.judge(until(&doomed, 51.0)), None, "too late");
    }

    #[test]
    fn a_run_within_the_spread_or_the_margin_goes_on() {
        let noisy = reference(&[keep(0, &[-0.05, 0.0, 0.05], BUDGET)]);
        // 4 spreads of 0.05 is 0.2: a run 0.15 worse is not clearly worse here.
        for above in [-0.2, 0.0, 0.04, 0.15] {
            let run = curve(above);
            for at in 20..=50 {
                assert_eq!(noisy.judge(until(&run, at as f64)), None, "{above} at {at}");
            }
        }
        assert!(noisy.judge(until(&curve(0.25), 30.0)).is_some());
        // With a tight spread, the margin still holds a run just behind the best.
        let tight = reference(&[keep(0, &[0.0, 0.001, 0.002], BUDGET)]);
        assert_eq!(tight.judge(until(&curve(0.04), 30.0)), None);
        assert!(tight.judge(until(&curve(0.06), 30.0)).is_some());
    }

    #[test]
    fn the_latest_best_is_the_level_and_every_program_run_twice_the_spread() {
        let better = keep(1, &[-0.5], BUDGET);
        let reference = reference(&[baseline(), better]);
        // Level with the baseline, far behind the new best.
        let stopped = reference.judge(until(&curve(0.0), 30.0)).expect("stopped");
        assert!((stopped.loss - stopped.best_loss - 0.5).abs() < 1e-9);
        assert_eq!(reference.judge(until(&curve(-0.48), 30.0)), None);
    }

    #[test]
    fn sparse_curves_are_compared_between_their_points() {
        // A step every 7 s (a loaded CPU): no window holds a point of every curve.
        let sparse = |above: f64, offset: f64| -> Vec<Point> {
            (0..15)
                .map(|i| {
                    let seconds = offset + 7.0 * i as f64;
                    Point {
                        seconds,
                        step: i,
                        loss: Some(3.0 + 5.0 / (1.0 + seconds) + above),
                        probe: None,
                    }
                })
                .collect()
        };
        let mut baseline = keep(0, &[-0.01, 0.0, 0.01], BUDGET);
        for (trial, offset) in baseline.trials.iter_mut().zip([0.5, 2.0, 4.5]) {
            trial.curve = sparse(0.0, offset);
        }
        let reference = reference(&[baseline]);
        let doomed = sparse(0.5, 1.0);
        let stopped = reference
            .judge(until(&doomed, 22.0))
            .expect("stopped at 22 s");
        assert_eq!(stopped.seconds, 22.0);
        assert_eq!(reference.judge(until(&sparse(0.02, 1.0), 22.0)), None);
    }

    /// `curve(above)` with a probe every 4 s `probe_above` the common curve, and a training loss
    /// that jumps by a nat at `jump_at` seconds (the batches reach harder text there).
    fn probed(above: f64, probe_above: f64, jump_at: f64) -> Vec<Point> {
        curve(above)
            .into_iter()
            .map(|p| Point {
                loss: p
                    .loss
                    .map(|l| l + if p.seconds >= jump_at { 1.0 } else { 0.0 }),
                probe: (p.step % 4 == 0).then(|| 2.0 + 5.0 / p.seconds + probe_above),
                ..p
            })
            .collect()
    }

    #[test]
    fn curves_with_probes_are_compared_on_the_probe() {
        let mut baseline = baseline();
        for (trial, above) in baseline.trials.iter_mut().zip([-0.01, 0.0, 0.01]) {
            trial.curve = probed(above, above, 30.0);
        }
        let reference = reference(&[baseline.clone()]);
        assert_eq!(reference.signal, Signal::Probe);
        // Faster steps reach the harder text at 22 s: its training loss looks a nat worse from
        // there, its probe does not.
        let faster = probed(0.0, 0.0, 22.0);
        for at in 20..=50 {
            assert_eq!(reference.judge(until(&faster, at as f64)), None, "at {at}");
        }
        let doomed = probed(0.0, 0.3, 30.0);
        let stopped = reference.judge(until(&doomed, 24.0)).expect("stopped");
        assert!(stopped.probe);
        assert!((stopped.loss - stopped.best_loss - 0.3).abs() < 1e-9);
        assert!(stopped.to_string().contains("probe loss"));
        // A run without probes (its trainer stopped calling them) cannot be judged.
        assert_eq!(reference.judge(until(&curve(0.3), 30.0)), None);
        // Best curves without probes (recorded before them) are compared on the training loss
        // in the replay, and not judged in the loop.
        let unprobed = [super::tests::baseline()];
        assert_eq!(super::tests::reference(&unprobed).signal, Signal::Training);
        assert!(judging(true, 1, 0, &unprobed, BUDGET).is_none());
        let probed = [baseline];
        assert!(judging(true, 1, 0, &probed, BUDGET).is_some());
        assert!(judging(true, 1, 1, &probed, BUDGET).is_none(), "a re-run");
        assert!(
            judging(false, 1, 0, &probed, BUDGET).is_none(),
            "early_stop = false"
        );
    }

    #[test]
    fn without_curves_to_calibrate_on_nothing_is_judged() {
        // No program run twice: no spread.
        assert!(Reference::of(&[keep(0, &[0.0], BUDGET)], BUDGET, Rule::default()).is_none());
        // Records of another budget (a resumed run with a longer one) do not count.
        assert!(Reference::of(&[keep(0, &[0.0, 0.01], 60.0)], BUDGET, Rule::default()).is_none());
        // Records from before curves were kept.
        let mut old = baseline();
        old.trials.iter_mut().for_each(|t| t.curve.clear());
        assert!(Reference::of(&[old], BUDGET, Rule::default()).is_none());
        assert!(Reference::of(&[], BUDGET, Rule::default()).is_none());
    }

    #[test]
    fn a_follower_stops_a_run_once_and_keeps_its_whole_curve() {
        let mut follower = Follower::new(Some(Arc::new(reference(&[baseline()]))));
        let mut stops = Vec::new();
        for point in curve(0.3) {
            follower.line("step | loss");
            let line = format!(
                "{}{}",
                crate::curve::MARK,
                serde_json::to_string(&point).unwrap()
            );
            stops.extend(follower.line(&line));
        }
        assert_eq!(stops.len(), 1);
        assert_eq!(stops[0].seconds, 20.0);
        assert!(
            stops[0]
                .to_string()
                .starts_with("stopped early at 20% of the budget (step 20)")
        );
        let followed = follower.into_curve();
        assert_eq!(followed.len(), 100);
        for (seen, sent) in followed.iter().zip(curve(0.3)) {
            assert_eq!(seen.step, sent.step);
            assert!((seen.loss.unwrap() - sent.loss.unwrap()).abs() < 1e-12);
        }
        // Without a reference a run is only followed.
        let mut follower = Follower::new(None);
        let line = format!(
            "{}{}",
            crate::curve::MARK,
            r#"{"seconds":30.0,"step":3,"loss":99.0}"#
        );
        assert_eq!(follower.line(&line), None);
        assert_eq!(follower.into_curve().len(), 1);
    }
}
