//! Trials and the decision: the built trainer runs through the executor, once or with more seeds
//! where the noise calls for them (the baseline's runs measure the noise), and `decide` judges
//! the mean of the protected scores against the best.

use std::path::Path;
use std::time::Instant;

use anyhow::Result;
use serde_json::Value;

use super::Decision;
use super::session::Session;
use crate::Stop;
use crate::decide::{self, Verdict};
use crate::executor::{Job, Outcome, Scored, TrialFailure};
use crate::ledger::{self, Trial};

/// Seed of every experiment's first run; re-runs and the baseline's noise runs count up from it.
const SEED: u64 = 42;
/// How far (relative) the best may move from where the noise was measured before it is
/// measured again.
const REMEASURE_SHIFT: f64 = 0.05;
/// Largest difference between the trainer's own val_bpb and the protected score that is still
/// numerics (batching, kernels), not a different number.
const MISMATCH_TOLERANCE: f64 = 1e-3;

/// The runs of one experiment and what they decided.
pub(super) struct Trials {
    pub decision: Decision,
    /// The scored runs, in order.
    pub runs: Vec<Scored>,
    /// The first run's result line, also when that run then failed.
    pub result: Option<Value>,
    /// Warnings for people.
    pub flags: Vec<String>,
    /// The noise floor these runs measured: the baseline's, or a new best's far from where the
    /// noise was last measured.
    pub measured: Option<f64>,
    /// Wall time of the runs, scoring included.
    pub seconds: f64,
}

impl Trials {
    /// An experiment that ended before any run.
    pub fn not_run(decision: Decision) -> Trials {
        Trials {
            decision,
            runs: Vec::new(),
            result: None,
            flags: Vec::new(),
            measured: None,
            seconds: 0.0,
        }
    }

    /// The mean protected score, unless the experiment crashed.
    pub fn val_bpb(&self) -> Option<f64> {
        let scores = scores(&self.runs);
        let decided = !matches!(self.decision, Decision::Crash(_));
        (decided && !scores.is_empty()).then(|| decide::mean(&scores))
    }
}

/// The runs so far, before they decide.
#[derive(Default)]
struct Runs {
    scored: Vec<Scored>,
    result: Option<Value>,
    flags: Vec<String>,
}

/// Runs experiment `seq`'s `binary` until its runs decide it; None on Ctrl-C.
pub(super) async fn run(
    s: &Session,
    seq: u64,
    binary: &Path,
    stop: &mut Stop,
) -> Result<Option<Trials>> {
    let started = Instant::now();
    let mut runs = Runs::default();
    let Some(decision) = until_decided(s, seq, binary, stop, &mut runs).await? else {
        return Ok(None);
    };
    let mut measured_here = seq == 0;
    if matches!(decision, Decision::Keep(_)) && remeasure_due(s, &runs.scored) {
        measured_here = remeasure(s, seq, binary, stop, &mut runs).await?;
        if stop.requested() {
            return Ok(None);
        }
    }
    let measured = measured_here
        .then(|| decide::pooled_std_dev(&[scores(&runs.scored)]))
        .flatten()
        .map(|n| n.sigma);
    if let (Some(new), Some(old)) = (measured, s.noise().filter(|_| seq > 0)) {
        let old = old.sigma;
        runs.flags.push(format!(
            "noise floor re-measured: sigma {old:.6} -> {new:.6}"
        ));
    }
    Ok(Some(Trials {
        decision,
        runs: runs.scored,
        result: runs.result,
        flags: runs.flags,
        measured,
        seconds: started.elapsed().as_secs_f64(),
    }))
}

/// Runs until a failure, or until the scores decide; None on Ctrl-C.
async fn until_decided(
    s: &Session,
    seq: u64,
    binary: &Path,
    stop: &mut Stop,
    runs: &mut Runs,
) -> Result<Option<Decision>> {
    loop {
        let index = runs.scored.len();
        s.progress
            .phase(if index == 0 { "starting" } else { "re-running" });
        match execute(s, seq, index, binary, stop).await? {
            Outcome::Interrupted => return Ok(None),
            Outcome::Failed { failure, result } => {
                runs.result = runs.result.take().or(result);
                if let TrialFailure::NonCausal(diff) = failure {
                    runs.flags.push(format!(
                        "causality probe: logits at or before a position changed by {diff:.3e} when only later tokens changed"
                    ));
                }
                return Ok(Some(Decision::Crash(failure.into())));
            }
            Outcome::Scored(scored) => {
                runs.flags.extend(mismatch(&scored.trial));
                runs.result.get_or_insert_with(|| scored.result.clone());
                runs.scored.push(scored);
            }
        }
        if let Some(decision) = judge(s, seq, &runs.scored) {
            return Ok(Some(decision));
        }
    }
}

/// A warning when the trainer's own val_bpb is not the protected score.
fn mismatch(trial: &Trial) -> Option<String> {
    let bpb = trial.val_bpb?;
    match trial.trainer_val_bpb {
        Some(own) if (own - bpb).abs() <= MISMATCH_TOLERANCE => None,
        own => Some(format!(
            "the trainer printed val_bpb {} but the protected score is {bpb:.6}",
            own.map_or("none".into(), |v| format!("{v:.6}"))
        )),
    }
}

fn scores(runs: &[Scored]) -> Vec<f64> {
    runs.iter().filter_map(|r| r.trial.val_bpb).collect()
}

/// The decision the scores so far support, or None for one more run with the next seed.
fn judge(s: &Session, seq: u64, runs: &[Scored]) -> Option<Decision> {
    let best = s.ledger.best();
    let Some(best_bpb) = best.and_then(|b| b.val_bpb) else {
        // The baseline: as many seeds as measure the noise.
        let enough = runs.len() >= s.cfg.noise_seeds;
        return enough.then(|| Decision::Keep("baseline".into()));
    };
    let best_runs = best.map_or(1, |b| ledger::scores(&b.trials).len());
    let (reruns, all) = s.ledger.rerun_seconds();
    let may_rerun = reruns <= s.cfg.rerun_share * all;
    match decide::judge(best_bpb, best_runs, s.noise(), &scores(runs), may_rerun) {
        Verdict::Rerun(why) => {
            s.progress.println(&format!("#{seq} {why}"));
            None
        }
        Verdict::Keep(rule) => Some(Decision::Keep(rule)),
        Verdict::Discard(rule) => Some(Decision::Discard(rule)),
    }
}

/// A new best far from where the noise was measured: better models tend to be less noisy, so
/// the noise is measured again there.
fn remeasure_due(s: &Session, runs: &[Scored]) -> bool {
    let mean = decide::mean(&scores(runs));
    s.cfg.noise_sigma.is_none()
        && s.ledger
            .sigma_measured_at()
            .is_some_and(|at| (at - mean).abs() > REMEASURE_SHIFT * at)
}

/// Runs the kept change up to `noise_seeds` times in all; whether every run scored.
async fn remeasure(
    s: &Session,
    seq: u64,
    binary: &Path,
    stop: &mut Stop,
    runs: &mut Runs,
) -> Result<bool> {
    while runs.scored.len() < s.cfg.noise_seeds {
        s.progress.phase("noise");
        match execute(s, seq, runs.scored.len(), binary, stop).await? {
            Outcome::Interrupted => return Ok(false),
            Outcome::Failed { failure, .. } => {
                runs.flags
                    .push(format!("a noise measurement run crashed: {failure}"));
                return Ok(false);
            }
            Outcome::Scored(scored) => runs.scored.push(scored),
        }
    }
    Ok(true)
}

/// Run `index` of experiment `seq`, with seed `SEED + index`, through the session's executor.
async fn execute(
    s: &Session,
    seq: u64,
    index: usize,
    binary: &Path,
    stop: &mut Stop,
) -> Result<Outcome> {
    let job = Job {
        binary: binary.to_path_buf(),
        seq,
        index,
        seed: SEED + index as u64,
        budget: s.budget,
        limits: s.limits,
        log: s.ledger.trial_log_path(seq, index),
    };
    s.executor.run(&job, stop, &s.progress).await
}
