//! Record: the branch keeps a kept change and goes back to the best for any other (the change
//! kept aside under `refs/autoresearch/<tag>/discarded/<n>`), the ledger gets the record, and the
//! agent learns the outcome.

use anyhow::{Result, bail};

use super::holdout::Holdout;
use super::session::Session;
use super::trials::Trials;
use super::{Decision, Experiment};
use crate::git::EDITABLE;
use crate::ledger::{Record, Status};

pub(super) fn append(
    s: &mut Session,
    experiment: Experiment,
    trials: Trials,
    holdout: Holdout,
) -> Result<()> {
    let Experiment {
        pending,
        program_changed,
        build_seconds,
    } = experiment;
    let seq = pending.seq;
    if let (Decision::Crash(failure), 0) = (&trials.decision, seq) {
        bail!(
            "the unmodified baseline failed ({failure}); see {}. Fix it, then continue with --resume",
            s.ledger.log_path(0).display()
        );
    }
    let best = s.ledger.best();
    let best_bpb = best.and_then(|b| b.val_bpb);
    let best_commit = best.map_or(pending.parent.clone(), |b| b.commit.clone());
    let val_bpb = trials.val_bpb();
    // The gain as judged: side by side, the difference of two programs on one machine state.
    let delta = val_bpb.and(trials.delta.or(val_bpb.zip(best_bpb).map(|(v, b)| v - b)));
    let sigma = trials.measured.or(s.noise().map(|n| n.sigma));
    let Trials {
        decision,
        runs,
        best_runs,
        result,
        mut flags,
        measured,
        seconds,
        ..
    } = trials;
    let (status, reason, rule) = decision.into_parts();
    if status != Status::Keep {
        reset(s, seq, &pending.commit, &best_commit)?;
    }
    flags.extend(holdout.flags);
    let trials: Vec<_> = runs.into_iter().map(|r| r.trial).collect();
    let record = Record {
        seq,
        commit: pending.commit,
        parent: pending.parent,
        status,
        reason,
        description: pending.description,
        val_bpb,
        peak_memory_mb: result.as_ref().and_then(|r| r["peak_memory_mb"].as_f64()),
        result,
        think_seconds: pending.think_seconds,
        build_seconds,
        run_seconds: seconds + holdout.seconds,
        agent_tokens: pending.agent_tokens,
        program_changed,
        finished_at: chrono::Local::now().to_rfc3339(),
        delta,
        sigma,
        sigma_measured: measured.is_some(),
        rule,
        test_bpb: holdout.test_bpb,
        flags,
        eval_seconds: trials.iter().map(|t| t.eval_seconds).sum::<f64>() + holdout.eval_seconds,
        trials,
        best_trials: best_runs,
        pins: s.ledger.records.is_empty().then(|| s.pins.clone()),
    };
    s.ledger.append(record)?;
    s.ledger.set_pending(None)?;
    s.ledger.prune_best_binaries()?;
    if seq > 0 {
        s.agent.observe(delta.map_or(-0.1, |d| -d))?;
    }
    let record = s.ledger.records.last().expect("just appended");
    s.progress.println(&record.summary());
    if let Some(runs) = record.runs() {
        s.progress.println(&format!("  {runs}"));
    }
    for flag in &record.flags {
        s.progress.println(&format!("  warning: {flag}"));
    }
    Ok(())
}

/// Keeps `commit` aside and puts the branch and the working tree back at `best`, where nothing
/// outside the trainer may differ from the base commit.
fn reset(s: &Session, seq: u64, commit: &str, best: &str) -> Result<()> {
    s.git.discard(&s.cfg.tag, seq, commit, best)?;
    let left = s.changed_outside()?;
    if !left.is_empty() {
        bail!(
            "files outside {EDITABLE} are not the run's base commit's even after a reset: {}. \
             Remove or restore them (git checkout {} -- FILE), then continue with --resume",
            left.join(", "),
            s.base
        );
    }
    Ok(())
}
