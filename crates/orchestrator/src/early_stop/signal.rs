//! The losses the rule compares: which loss of a curve's points ([`Signal`]), a curve smoothed
//! over a window of counted seconds, and the spread between runs of one program.

use crate::curve::Point;
use crate::ledger::Trial;

/// Which loss of a curve's points the rule compares.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum Signal {
    /// The probe's: the same fixed rows in every run, measured every few seconds.
    Probe,
    /// The latest training batch's, for curves recorded before the probe: the replay compares
    /// older nights on it, the loop does not judge on it ([`judging`](super::judging)).
    Training,
}

impl Signal {
    pub(super) fn of(self, point: &Point) -> Option<f64> {
        match self {
            Signal::Probe => point.probe,
            Signal::Training => point.loss,
        }
    }

    /// The probe when every one of `curves` carries it, else the training loss.
    pub(super) fn common(curves: &[&[Point]]) -> Signal {
        let probed = |c: &&[Point]| c.iter().any(|p| p.probe.is_some());
        if curves.iter().all(probed) {
            Signal::Probe
        } else {
            Signal::Training
        }
    }
}

/// The curves of `runs` that were scored.
pub(super) fn scored_curves(runs: Vec<&Trial>) -> Vec<&[Point]> {
    runs.into_iter()
        .filter(|t| t.val_bpb.is_some() && !t.curve.is_empty())
        .map(|t| t.curve.as_slice())
        .collect()
}

/// A curve's loss averaged over the window ending at each of its points, as (seconds, loss).
#[derive(Debug, Clone)]
pub(super) struct Smoothed(pub(super) Vec<(f64, f64)>);

impl Smoothed {
    pub(super) fn of(curve: &[Point], window: f64, signal: Signal) -> Smoothed {
        let losses: Vec<(f64, f64)> = curve
            .iter()
            .filter_map(|p| Some((p.seconds, signal.of(p)?)))
            .collect();
        let (mut first, mut sum) = (0, 0.0);
        let mut smoothed = Vec::with_capacity(losses.len());
        for (i, &(seconds, loss)) in losses.iter().enumerate() {
            sum += loss;
            while losses[first].0 <= seconds - window {
                sum -= losses[first].1;
                first += 1;
            }
            smoothed.push((seconds, sum / (i + 1 - first) as f64));
        }
        Smoothed(smoothed)
    }

    /// The smoothed loss at `t`, linear between the points around it (on the CPU a step may
    /// take longer than the window); None outside the curve.
    pub(super) fn at(&self, t: f64) -> Option<f64> {
        let after = self.0.iter().position(|&(s, _)| s >= t)?;
        let (s1, l1) = self.0[after];
        if s1 == t || after == 0 {
            return (s1 == t).then_some(l1);
        }
        let (s0, l0) = self.0[after - 1];
        Some(l0 + (l1 - l0) * (t - s0) / (s1 - s0))
    }
}

/// The mean loss of `curve`'s points in the `window` seconds up to `t`; None without one.
pub(super) fn window_mean(curve: &[Point], t: f64, window: f64, signal: Signal) -> Option<f64> {
    let losses: Vec<f64> = curve
        .iter()
        .filter(|p| p.seconds > t - window && p.seconds <= t)
        .filter_map(|p| signal.of(p))
        .collect();
    mean(&losses)
}

pub(super) fn mean(values: &[f64]) -> Option<f64> {
    (!values.is_empty()).then(|| values.iter().sum::<f64>() / values.len() as f64)
}

/// The standard deviation of the smoothed loss at `t` between runs of one program, pooled over
/// the programs run more than once; None without two runs of one program that reach `t`.
pub(super) fn pooled_spread(groups: &[Vec<Smoothed>], t: f64) -> Option<f64> {
    let (mut squares, mut dof) = (0.0, 0);
    for group in groups {
        let losses: Vec<f64> = group.iter().filter_map(|c| c.at(t)).collect();
        if let (Some(m), true) = (mean(&losses), losses.len() >= 2) {
            squares += losses.iter().map(|l| (l - m).powi(2)).sum::<f64>();
            dof += losses.len() - 1;
        }
    }
    (dof > 0).then(|| (squares / dof as f64).sqrt())
}
