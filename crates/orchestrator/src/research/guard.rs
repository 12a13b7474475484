//! Guard: nothing outside the trainer may change, and nothing that breaks the trainer's rules is
//! kept. What must not run, or could never be kept, is stopped before the build; a trainer that
//! wrote outside its directory while it ran is blamed after its run, not the next experiment,
//! whose build would be refused; a change about to be kept must pass the rule tests, so that the
//! branch never collects a trainer that fails them.

use anyhow::Result;

use super::Trials;
use super::session::{Session, Worker};
use super::{Decision, Experiment, Failure};
use crate::cargo_build::Rules;
use crate::decide;
use crate::ledger;

/// The end of an experiment that must not be built: a crash when it changed files outside the
/// trainer, a discard when it changed nothing that could be kept. None lets it build. Why it did
/// not run goes to its log.
pub(super) fn before_build(
    s: &Session,
    w: &Worker,
    experiment: &Experiment,
) -> Result<Option<Decision>> {
    let pending = &experiment.pending;
    let outside = w.changed_outside(&s.base)?;
    let decision = if let Some(why) = &experiment.unfinished {
        Some(Decision::Crash(Failure::Unfinished(why.clone())))
    } else if !outside.is_empty() {
        Some(Decision::Crash(Failure::Refused { outside }))
    } else if pending.seq > 0 {
        decide::cosmetic(&w.git.editable_changes(&pending.parent, &pending.commit)?)
            .map(|why| Decision::Discard(format!("{why}: never kept, not run")))
    } else {
        None
    };
    if let Some(decision) = &decision {
        let why = match decision {
            Decision::Crash(failure) => failure.to_string(),
            Decision::Keep(rule) | Decision::Discard(rule) | Decision::Stale(rule) => rule.clone(),
        };
        ledger::write_log(&s.cfg.run_dir, pending.seq, &format!("not run: {why}\n"))?;
    }
    Ok(decision)
}

/// `trials`, or a crash when files outside the trainer changed while it ran, or when a change that
/// would be kept breaks the rule tests (their report goes to the experiment's log).
pub(super) async fn after_run(
    s: &Session,
    w: &Worker,
    seq: u64,
    mut trials: Trials,
) -> Result<Trials> {
    let outside = w.changed_outside(&s.base)?;
    if !outside.is_empty() {
        trials.decision = Decision::Crash(Failure::Refused { outside });
    } else if matches!(trials.decision, Decision::Keep(_))
        && let Rules::Broken(report) = s.builder.rule_tests(&w.worktree, &s.cfg.target_dir).await?
    {
        ledger::append_log(
            &s.cfg.run_dir,
            seq,
            &format!("orchestrator: rule tests failed:\n{report}\n"),
        )?;
        trials.decision = Decision::Crash(Failure::Rules);
    }
    Ok(trials)
}
