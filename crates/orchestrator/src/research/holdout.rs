//! Holdout: every new best is scored once on the test split, which the agent never sees, as a
//! check against overfitting the validation split. After it, the experiment's exported models
//! are no longer needed.

use std::time::Instant;

use anyhow::{Result, bail};

use super::Decision;
use super::Trials;
use super::session::{Session, Worker};
use crate::scoring::ScoreError;

pub(super) struct Holdout {
    /// The protected score on the test split, of a new best only.
    pub test_bpb: Option<f64>,
    /// The protected evaluation's own time.
    pub eval_seconds: f64,
    /// Wall time of the phase.
    pub seconds: f64,
    /// Warnings for people.
    pub flags: Vec<String>,
}

pub(super) async fn score(s: &Session, w: &Worker, seq: u64, trials: &Trials) -> Result<Holdout> {
    let started = Instant::now();
    let mut holdout = Holdout {
        test_bpb: None,
        eval_seconds: 0.0,
        seconds: 0.0,
        flags: Vec::new(),
    };
    // A keep whose best has moved on meanwhile is re-applied rather than kept (see `record`).
    let best_now = s.best(&w.turn).map(|b| b.commit);
    let still_best = trials.against.is_none() || trials.against == best_now;
    if let (Decision::Keep(_), Some(first), true) =
        (&trials.decision, trials.runs.first(), still_best)
    {
        w.progress.phase("holdout");
        match s
            .executor
            .holdout(&first.model, s.limits(&w.turn).eval)
            .await
        {
            Ok(score) => {
                holdout.eval_seconds = score.seconds;
                holdout.test_bpb = score.bpb;
            }
            Err(ScoreError::Tampered(why)) => bail!(why),
            Err(ScoreError::Unscored(why)) => {
                holdout.flags.push(format!("holdout not scored: {why}"));
            }
        }
    }
    let previous = s.best(&w.turn).and_then(|b| b.test_bpb);
    if let (Some(test), Some(previous)) = (holdout.test_bpb, previous)
        && test > previous
    {
        holdout.flags.push(format!(
            "test split got worse: {test:.6} > {previous:.6} of the previous best"
        ));
    }
    for run in &trials.runs {
        std::fs::remove_file(&run.model).ok();
    }
    std::fs::remove_file(s.cfg.run_dir.beside(seq)).ok();
    holdout.seconds = started.elapsed().as_secs_f64();
    Ok(holdout)
}
