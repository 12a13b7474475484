//! Record: the branch moves to a kept change and the worktree goes back to the best for any other
//! (the change kept aside under `refs/autoresearch/<tag>/discarded/<n>`), a change that lost the
//! race to a newer best is re-applied onto it, a best judged non-causal on a re-run loses its keep
//! (the branch goes back to the keep before it, the old head kept under
//! `refs/autoresearch/<tag>/superseded/<n>`), the ledger gets the record, and the agent learns the
//! outcome.

use anyhow::{Result, bail};

use super::Trials;
use super::holdout::Holdout;
use super::session::{Session, Worker};
use super::{Decision, Experiment, Failure};
use crate::agent::search::history::SOURCE;
use crate::decide::Noise;
use crate::git::EDITABLE;
use crate::ledger::{self, Pending, Printed, Record, Status};

pub(super) async fn append(
    s: &Session,
    w: &mut Worker,
    experiment: Experiment,
    trials: Trials,
    holdout: Holdout,
) -> Result<()> {
    // Runs the executor started for this experiment that its decision did not need (a comparison
    // decided differently after a resume) are let go of first.
    for handle in s.pendings.handles(experiment.pending.seq)? {
        s.executor.abandon(&handle).await?;
    }
    // Nothing awaits from here on: the decision, the branch and the ledger change together,
    // against the best as it is now.
    let record = decide(s, w, experiment, trials, holdout)?;
    let record = s.update(&mut w.turn, |state| state.record(&s.pendings, record))?;
    s.read(&w.turn, |state| s.alert_on_record(&state.ledger.records));
    let source = w.git.file_at(&record.commit, SOURCE)?;
    w.agent.observe(&record, &source)?;
    w.progress
        .println(&format!("{}{}", w.name, record.summary()));
    if let Some(runs) = record.runs() {
        w.progress.println(&format!("  {runs}"));
    }
    for flag in &record.flags {
        w.progress.println(&format!("  warning: {flag}"));
    }
    s.recorded();
    Ok(())
}

/// The experiment's record, once the decision is settled against the best now and the branch
/// follows it.
fn decide(
    s: &Session,
    w: &mut Worker,
    experiment: Experiment,
    trials: Trials,
    holdout: Holdout,
) -> Result<Record> {
    let seq = experiment.pending.seq;
    if let (Decision::Crash(failure), 0) = (&trials.decision, seq) {
        let again = match failure {
            Failure::Trial(_) => ", and again when it ran once more",
            _ => "",
        };
        bail!(
            "the unmodified baseline failed ({failure}){again}; see {}. Fix it (or what loads \
             the machine), then continue with --resume",
            s.cfg.run_dir.log(0, 0).display()
        );
    }
    // A best judged non-causal beside this change is the best no longer: the keep before it is.
    let (best, first) = s.read(&w.turn, |state| {
        let records = &state.ledger.records;
        let best = ledger::best_without(records, trials.revoked).cloned();
        (best, records.is_empty())
    });
    let best_commit = best
        .as_ref()
        .map_or(experiment.pending.parent.clone(), |b| b.commit.clone());
    let noise = s.noise(&w.turn);
    let pending = experiment.pending.clone();
    let mut record = record_of(experiment, &trials, holdout, best.as_ref(), noise);
    record.pins = first.then(|| s.pins.clone());
    record.start = first.then(|| s.started());
    let late = Late {
        against: trials.against,
        beat_parent: trials.beat_parent,
    };
    let decision = settle(s, w, &pending, trials.decision, late, best.as_ref())?;
    let (status, reason, rule) = decision.into_parts();
    if status == Status::Keep {
        w.git
            .keep(&s.cfg.branch(), &s.cfg.tag, seq, &pending.commit)?;
    } else {
        reset(s, w, seq, &pending.commit, &best_commit)?;
        if record.revoked.is_some() {
            w.git.keep(&s.cfg.branch(), &s.cfg.tag, seq, &best_commit)?;
        }
    }
    record.test_bpb = record.test_bpb.filter(|_| status == Status::Keep);
    Ok(Record {
        status,
        reason,
        rule,
        cost_usd: s.cfg.costs.of(record.agent_usage),
        budget: Some(s.budget),
        ..record
    })
}

/// The record of `experiment` as its `trials` and `holdout` measured it, before the decision is
/// settled (its status, reason and rule are the trials' own until then).
fn record_of(
    experiment: Experiment,
    trials: &Trials,
    holdout: Holdout,
    best: Option<&Record>,
    noise: Option<Noise>,
) -> Record {
    let Experiment {
        pending,
        program_changed,
        build_seconds,
        ..
    } = experiment;
    let val_bpb = trials.val_bpb();
    // The gain as judged: side by side, the difference of two programs on one machine state.
    let best_bpb = best.and_then(|b| b.val_bpb);
    let delta = val_bpb.and(trials.delta.or(val_bpb.zip(best_bpb).map(|(v, b)| v - b)));
    let sigma = trials.measured.or(noise.map(|n| n.sigma));
    let mut flags = trials.flags.clone();
    flags.extend(holdout.flags);
    let stopped = trials.stopped.iter().map(|run| run.trial.clone());
    let runs: Vec<_> = trials
        .runs
        .iter()
        .map(|r| r.trial.clone())
        .chain(stopped)
        .collect();
    let result = trials.result.clone();
    Record {
        commit: pending.commit,
        parent: pending.parent,
        description: pending.description,
        val_bpb,
        peak_memory_mb: result
            .as_ref()
            .and_then(Printed::line)
            .map(|line| line.peak_memory_mb),
        result,
        think_seconds: pending.think_seconds,
        build_seconds,
        run_seconds: trials.seconds + holdout.seconds,
        agent_tokens: pending.agent_tokens,
        agent_usage: pending.agent_usage,
        program_changed,
        finished_at: chrono::Local::now().to_rfc3339(),
        delta,
        sigma,
        sigma_measured: trials.measured.is_some(),
        test_bpb: holdout.test_bpb,
        flags,
        eval_seconds: runs.iter().map(|t| t.eval_seconds).sum::<f64>() + holdout.eval_seconds,
        trials: runs,
        best_trials: trials.best_runs.clone(),
        revoked: trials.revoked,
        stopped: trials.stopped.as_ref().map(|run| run.stopped),
        ..Record::new(pending.seq, Status::Crash)
    }
}

/// The decision as it stands against the best now. A keep judged against a best that has since
/// moved on, or a change that beat its own parent but not the best that came after it, is
/// re-applied onto the best now as a new experiment, so that gains found by different workers
/// add up; where its change no longer applies it is stale.
fn settle(
    s: &Session,
    w: &mut Worker,
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
    let max = s.cfg.settings.max_experiments;
    let Some(seq) = s.update(&mut w.turn, |state| state.allocate(max)) else {
        return Ok(Decision::Discard(format!(
            "{beat}; not re-applied onto it: the run's last experiment number is given out"
        )));
    };
    let description = format!("{} (re-applied onto #{})", pending.description, best.seq);
    let Some(commit) =
        w.git
            .reapply(&pending.parent, &pending.commit, &best.commit, &description)?
    else {
        s.update(&mut w.turn, |state| state.release(seq));
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
        agent_usage: Default::default(),
    };
    // Pending before this experiment is recorded: a kill in between loses neither.
    s.pendings.write(&reapplied)?;
    s.update(&mut w.turn, |state| state.enqueue(reapplied));
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
