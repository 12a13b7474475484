//! Record: the branch moves to a kept change and the worktree goes back to the best for any other
//! (the change kept aside under `refs/autoresearch/<tag>/discarded/<n>`), a change that lost the
//! race to a newer best is re-applied onto it, a best judged non-causal on a re-run loses its keep
//! (the branch goes back to the keep before it, the old head kept under
//! `refs/autoresearch/<tag>/superseded/<n>`), the ledger gets the record, and the agent learns the
//! outcome.

use anyhow::{Result, bail};

use super::holdout::Holdout;
use super::session::{Session, State, Worker};
use super::trials::Trials;
use super::{Decision, Experiment, Failure};
use crate::agent::search::history::SOURCE;
use crate::git::EDITABLE;
use crate::ledger::{self, Pending, Printed, Record, Status};

pub(super) async fn append(
    s: &Session,
    w: &mut Worker,
    experiment: Experiment,
    trials: Trials,
    holdout: Holdout,
) -> Result<()> {
    let seq = experiment.pending.seq;
    // Runs the executor started for this experiment that its decision did not need (a comparison
    // decided differently after a resume) are let go of first.
    let handles = s.ledger().handles(seq)?;
    for handle in handles {
        s.executor.abandon(&handle).await?;
    }
    // From here on nothing awaits: the decision, the branch and the ledger change together,
    // against the best as it is now.
    let mut state = s.state();
    let Experiment {
        pending,
        program_changed,
        build_seconds,
        ..
    } = experiment;
    if let (Decision::Crash(failure), 0) = (&trials.decision, seq) {
        let again = match failure {
            Failure::Trial(_) => ", and again when it ran once more",
            _ => "",
        };
        bail!(
            "the unmodified baseline failed ({failure}){again}; see {}. Fix it (or what loads \
             the machine), then continue with --resume",
            state.ledger.log_path(0).display()
        );
    }
    // A best judged non-causal beside this change is the best no longer: the keep before it is.
    let best = ledger::best_without(&state.ledger.records, trials.revoked).cloned();
    let best_bpb = best.as_ref().and_then(|b| b.val_bpb);
    let best_commit = best
        .as_ref()
        .map_or(pending.parent.clone(), |b| b.commit.clone());
    let val_bpb = trials.val_bpb();
    // The gain as judged: side by side, the difference of two programs on one machine state.
    let delta = val_bpb.and(trials.delta.or(val_bpb.zip(best_bpb).map(|(v, b)| v - b)));
    let noise = ledger::noise_in_force(&state.ledger.records, s.cfg.noise_sigma);
    let sigma = trials.measured.or(noise.map(|n| n.sigma));
    let Trials {
        decision,
        runs,
        best_runs,
        result,
        mut flags,
        measured,
        seconds,
        against,
        beat_parent,
        revoked,
        ..
    } = trials;
    let late = Late {
        against,
        beat_parent,
    };
    let decision = settle(s, w, &mut state, &pending, decision, late, best.as_ref())?;
    let (status, reason, rule) = decision.into_parts();
    if status == Status::Keep {
        w.git
            .keep(&s.cfg.branch(), &s.cfg.tag, seq, &pending.commit)?;
    } else {
        reset(s, w, seq, &pending.commit, &best_commit)?;
        if revoked.is_some() {
            w.git.keep(&s.cfg.branch(), &s.cfg.tag, seq, &best_commit)?;
        }
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
        peak_memory_mb: result
            .as_ref()
            .and_then(Printed::line)
            .map(|line| line.peak_memory_mb),
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
        test_bpb: holdout.test_bpb.filter(|_| status == Status::Keep),
        flags,
        eval_seconds: trials.iter().map(|t| t.eval_seconds).sum::<f64>() + holdout.eval_seconds,
        trials,
        best_trials: best_runs,
        pins: state.ledger.records.is_empty().then(|| s.pins.clone()),
        revoked,
        start: state.ledger.records.is_empty().then(|| s.start.clone()),
    };
    state.ledger.append(record)?;
    state.ledger.clear_pending(seq)?;
    state.ledger.prune_best_binaries()?;
    state.running.remove(&seq);
    state.run_seconds.remove(&seq);
    let record = state.ledger.records.last().expect("just appended");
    let source = w.git.file_at(&record.commit, SOURCE)?;
    w.agent.observe(record, &source)?;
    w.progress
        .println(&format!("{}{}", w.name, record.summary()));
    if let Some(runs) = record.runs() {
        w.progress.println(&format!("  {runs}"));
    }
    for flag in &record.flags {
        w.progress.println(&format!("  warning: {flag}"));
    }
    drop(state);
    s.recorded();
    Ok(())
}

/// The decision as it stands against the best now. A keep judged against a best that has since
/// moved on, or a change that beat its own parent but not the best that came after it, is
/// re-applied onto the best now as a new experiment, so that gains found by different workers
/// add up; where its change no longer applies it is stale.
fn settle(
    s: &Session,
    w: &mut Worker,
    state: &mut State,
    pending: &Pending,
    decision: Decision,
    late: Late,
    best: Option<&Record>,
) -> Result<Decision> {
    let (Some(best), Some(against)) = (best, late.against) else {
        return Ok(decision);
    };
    let beat = match (&decision, late.beat_parent) {
        (Decision::Keep(rule), _) if against != best.commit => {
            format!("{rule}, but #{} became the best meanwhile", best.seq)
        }
        (Decision::Discard(rule), Some(beat)) => {
            format!(
                "{rule}; it {beat}, and #{} became the best meanwhile",
                best.seq
            )
        }
        _ => return Ok(decision),
    };
    let Some(seq) = state.allocate(s.cfg.max_experiments) else {
        return Ok(Decision::Discard(format!(
            "{beat}; not re-applied onto it: the run's last experiment number is given out"
        )));
    };
    let description = format!("{} (re-applied onto #{})", pending.description, best.seq);
    let Some(commit) =
        w.git
            .reapply(&pending.parent, &pending.commit, &best.commit, &description)?
    else {
        state.release(seq);
        return Ok(Decision::Stale(format!(
            "{beat}; its change does not apply onto #{}",
            best.seq
        )));
    };
    let source = std::fs::read_to_string(w.worktree.join(SOURCE)).unwrap_or_default();
    w.agent.note(&source)?;
    let reapplied = Pending {
        seq,
        commit,
        parent: best.commit.clone(),
        description,
        think_seconds: 0.0,
        agent_tokens: 0,
    };
    // Pending before this experiment is recorded: a kill in between loses neither.
    state.ledger.write_pending(&reapplied)?;
    state.running.insert(seq, reapplied.description.clone());
    state.enqueue(reapplied);
    Ok(Decision::Discard(format!(
        "{beat}; re-applied onto it as #{seq}"
    )))
}
/// What the trials knew of a best that moved on, see [`Trials::against`].
struct Late {
    against: Option<String>,
    beat_parent: Option<String>,
}

/// Keeps `commit` aside and puts the worker's worktree back at `best`, where nothing outside the
/// trainer may differ from the base commit.
fn reset(s: &Session, w: &Worker, seq: u64, commit: &str, best: &str) -> Result<()> {
    w.git.discard(&s.cfg.tag, seq, commit, best)?;
    let left = w.changed_outside(&s.base)?;
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
