//! Trials and the decision: the built trainer runs through the executor, once or more where the
//! noise calls for it (the baseline's runs measure the noise), and `decide` judges the protected
//! scores. A first run within the noise is settled side by side: the best's kept trainer and the
//! change run alternately, pair by pair with the same seed, so that both see the machine in the
//! same state.

use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result};

use super::session::{Session, State, Turn, Worker};
use super::{Decision, Trials};
use crate::decide::{self, Evidence, Verdict};
use crate::early_stop;
use crate::executor::{Job, Outcome, Scored, StoppedRun, TrialFailure};
use crate::ledger::{self, Pending, Printed, Record, Status, Trial};

/// Seed of every experiment's first run; later runs count up from it, and the best's re-run in
/// a pair takes the seed of the change's run beside it.
const SEED: u64 = 42;
/// How far (relative) the best may move from where the noise was measured before it is
/// measured again.
const REMEASURE_SHIFT: f64 = 0.05;

/// The runs so far, before they decide.
#[derive(Default)]
struct Runs {
    scored: Vec<Scored>,
    best: Vec<Trial>,
    result: Option<Printed>,
    flags: Vec<String>,
    delta: Option<f64>,
    /// The best and the change are being compared side by side.
    paired: bool,
    /// The best they are judged against, see [`Trials::against`].
    against: Option<Record>,
    /// See [`Trials::revoked`].
    revoked: Option<u64>,
    /// Failed runs of an unchanged program that ran again, see [`execute_unchanged`].
    retried: usize,
    /// See [`Trials::stopped`].
    stopped: Option<StoppedRun>,
}

impl Runs {
    /// Runs of this experiment so far, in the order they ran: the next one's number.
    fn count(&self) -> usize {
        self.scored.len() + self.best.len() + self.retried
    }

    /// Training seconds of this experiment's re-runs (all but its first run), and of all.
    fn rerun_seconds(&self) -> (f64, f64) {
        let mine = self.scored.iter().map(|r| r.trial.run_seconds);
        let all: f64 =
            mine.clone().sum::<f64>() + self.best.iter().map(|t| t.run_seconds).sum::<f64>();
        (all - mine.take(1).sum::<f64>(), all)
    }
}

/// Which program runs next in a comparison side by side.
enum Next {
    Change,
    Best,
}

/// Runs `pending`'s `binary` on worker `w` until its runs decide it; None on Ctrl-C.
pub(super) async fn run(
    s: &Session,
    w: &mut Worker,
    pending: &Pending,
    binary: &Path,
) -> Result<Option<Trials>> {
    let started = Instant::now();
    let seq = pending.seq;
    let mut runs = Runs::default();
    let Some(decision) = until_decided(s, w, seq, binary, &mut runs).await? else {
        return Ok(None);
    };
    let beat_parent = match (&decision, &runs.against) {
        (Decision::Discard(_), Some(best)) if best.commit != pending.parent => {
            beat_parent(s, &w.turn, pending, &runs)
        }
        _ => None,
    };
    let mut measured_here = seq == 0;
    if matches!(decision, Decision::Keep(_)) {
        if remeasure_due(s, &w.turn, &runs.scored) {
            measured_here = remeasure(s, w, seq, binary, &mut runs).await?;
            if w.stop.requested() {
                return Ok(None);
            }
        }
        // Kept under the commit's name until the record is written, so that a kill in between
        // leaves the previous best's trainer in place for the ledger's previous best.
        let kept = s.cfg.run_dir.best_trainer(&pending.commit);
        prepare::atomic::copy(binary, &kept)
            .with_context(|| format!("keeping the best's trainer at {}", kept.display()))?;
    }
    let measured = measured_here
        .then(|| decide::pooled_std_dev(&[scores(&runs.scored)]))
        .flatten()
        .map(|n| n.sigma);
    if let (Some(new), Some(old)) = (measured, s.noise(&w.turn).filter(|_| seq > 0)) {
        let old = old.sigma;
        runs.flags.push(format!(
            "noise re-measured at this best: sigma {new:.6} from its runs alone (the floor \
             was {old:.6}; it pools them with the latest runs before them)"
        ));
    }
    Ok(Some(Trials {
        decision,
        runs: runs.scored,
        best_runs: runs.best,
        result: runs.result,
        flags: runs.flags,
        measured,
        delta: runs.delta,
        seconds: started.elapsed().as_secs_f64(),
        against: runs.against.map(|best| best.commit),
        beat_parent,
        revoked: runs.revoked,
        stopped: runs.stopped,
    }))
}

/// The rule by which the change beat its own parent, judged on its runs so far against the
/// parent's recorded ones (no runs side by side: the parent's trainer is no longer kept).
fn beat_parent(s: &Session, turn: &Turn, pending: &Pending, runs: &Runs) -> Option<String> {
    let parent = s.read(turn, |state| {
        let records = &state.ledger.records;
        let parent = records.iter().find(|r| r.commit == pending.parent);
        parent.filter(|r| r.status == Status::Keep).cloned()
    })?;
    let evidence = Evidence {
        best: &ledger::scores(&parent.trials),
        noise: s.noise(turn),
        change: &scores(&runs.scored),
        reruns: &[],
        may_rerun: false,
    };
    match decide::judge(&evidence) {
        Verdict::Keep(rule) => Some(format!("beat its parent #{}: {rule}", parent.seq)),
        Verdict::Discard(_) | Verdict::Pair(_) => None,
    }
}

/// Runs until a failure, or until the scores decide; None on Ctrl-C. The change runs first; the
/// best it is then judged against is the best as it is when that run's score comes back.
async fn until_decided(
    s: &Session,
    w: &mut Worker,
    seq: u64,
    binary: &Path,
    runs: &mut Runs,
) -> Result<Option<Decision>> {
    w.progress.phase("starting");
    if let ControlFlow::Break(end) = run_change(s, w, seq, binary, runs).await? {
        return Ok(end);
    }
    let Some(best) = s.best(&w.turn).filter(|b| b.val_bpb.is_some()) else {
        // The baseline: as many seeds as measure the noise.
        while runs.scored.len() < s.cfg.settings.noise_seeds() {
            w.progress.phase("noise");
            if let ControlFlow::Break(end) = run_change(s, w, seq, binary, runs).await? {
                return Ok(end);
            }
        }
        return Ok(Some(Decision::Keep("baseline".into())));
    };
    let best_binary = beside(s, seq, &best)?;
    let best = runs.against.insert(best).clone();
    loop {
        let step = match next_step(s, w, seq, &best, &best_binary, runs) {
            ControlFlow::Break(decision) => return Ok(Some(decision)),
            ControlFlow::Continue(step) => step,
        };
        let flow = match step {
            Next::Change => {
                w.progress.phase("re-running");
                run_change(s, w, seq, binary, runs).await?
            }
            Next::Best => {
                w.progress.phase("running the best beside it");
                run_best(s, w, seq, &best, &best_binary, runs).await?
            }
        };
        if let ControlFlow::Break(end) = flow {
            return Ok(end);
        }
    }
}

/// Which program runs next in a comparison side by side, or the decision the runs so far
/// support.
fn next_step(
    s: &Session,
    w: &mut Worker,
    seq: u64,
    best: &Record,
    best_binary: &Path,
    runs: &mut Runs,
) -> ControlFlow<Decision, Next> {
    match (runs.scored.len(), runs.best.len()) {
        (c, b) if c > b && runs.paired => return ControlFlow::Continue(Next::Best),
        (c, b) if b > c => return ControlFlow::Continue(Next::Change),
        _ => {}
    }
    if let Some(decision) = judge(s, w, seq, best, runs) {
        return ControlFlow::Break(decision);
    }
    if !runs.paired && !best_binary.exists() {
        return ControlFlow::Break(Decision::Discard(format!(
            "within the noise, and the best's trainer is not at {} to run beside it",
            best_binary.display()
        )));
    }
    runs.paired = true;
    // Pairs alternate which program runs first (change-best, best-change, ...), so that a steady
    // drift favours neither.
    ControlFlow::Continue(
        match (runs.scored.len() > runs.best.len(), runs.best.len() % 2) {
            (true, _) => Next::Best,
            (false, 0) => Next::Change,
            (false, _) => Next::Best,
        },
    )
}

/// The trainer of `best` linked under experiment `seq`'s name, so that it outlives the best: a
/// new best from another worker prunes the old best's trainer while this comparison may still
/// need it. Removed with the experiment's models (see `holdout`). Where the best's trainer was
/// never kept, nothing is linked, and the comparison says so.
fn beside(s: &Session, seq: u64, best: &Record) -> Result<PathBuf> {
    let (kept, link) = (
        s.cfg.run_dir.best_trainer(&best.commit),
        s.cfg.run_dir.beside(seq),
    );
    std::fs::remove_file(&link).ok();
    if kept.exists() {
        std::fs::hard_link(&kept, &link)
            .or_else(|_| std::fs::copy(&kept, &link).map(drop))
            .with_context(|| format!("linking {} to {}", kept.display(), link.display()))?;
    }
    Ok(link)
}

/// Runs the change once more. Breaks with the crash that ends the experiment, or with None on
/// Ctrl-C.
async fn run_change(
    s: &Session,
    w: &mut Worker,
    seq: u64,
    binary: &Path,
    runs: &mut Runs,
) -> Result<ControlFlow<Option<Decision>>> {
    let seed = SEED + runs.scored.len() as u64;
    let outcome = if seq == 0 {
        execute_unchanged(s, w, seq, seed, binary, runs).await?
    } else {
        execute(s, w, seq, runs.count(), seed, binary).await?
    };
    match outcome {
        Outcome::Interrupted => Ok(ControlFlow::Break(None)),
        Outcome::Failed {
            failure: TrialFailure::Stopped(run),
            ..
        } => {
            let rule = run.stopped.to_string();
            runs.stopped = Some(*run);
            Ok(ControlFlow::Break(Some(Decision::Discard(rule))))
        }
        Outcome::Failed { failure, result } => {
            runs.result = runs.result.take().or(result);
            if let TrialFailure::NonCausal { max_diff: diff } = failure {
                runs.flags.push(format!(
                    "causality probe: logits at or before a position changed by {diff:.3e} when only later tokens changed"
                ));
            }
            Ok(ControlFlow::Break(Some(Decision::Crash(failure.into()))))
        }
        Outcome::Scored(scored) => {
            runs.flags.extend(printed_score(&scored.trial));
            runs.result
                .get_or_insert_with(|| Printed::Line(scored.result.clone()));
            runs.scored.push(scored);
            Ok(ControlFlow::Continue(()))
        }
    }
}

/// Runs the best's kept trainer beside the change, with the seed of the change's run in the
/// same pair. Breaks with a discard when it fails (there is then nothing to compare with), or
/// with None on Ctrl-C; a best judged non-causal now loses its keep as well.
async fn run_best(
    s: &Session,
    w: &mut Worker,
    seq: u64,
    best: &Record,
    best_binary: &Path,
    runs: &mut Runs,
) -> Result<ControlFlow<Option<Decision>>> {
    let seed = SEED + runs.best.len() as u64;
    match execute_unchanged(s, w, seq, seed, best_binary, runs).await? {
        Outcome::Interrupted => Ok(ControlFlow::Break(None)),
        Outcome::Failed {
            failure: TrialFailure::NonCausal { max_diff: diff },
            ..
        } => {
            runs.revoked = Some(best.seq);
            runs.flags.push(format!(
                "the best #{}'s re-run beside it was judged non-causal (logits at or before a \
                 position changed by {diff:.3e} when only later tokens changed): its keep is revoked",
                best.seq
            ));
            Ok(ControlFlow::Break(Some(Decision::Discard(format!(
                "not judged: the best #{} it ran beside was judged non-causal on a re-run; #{} is \
                 no longer kept",
                best.seq, best.seq
            )))))
        }
        Outcome::Failed { failure, .. } => {
            let why = format!("the best's re-run beside it failed ({failure})");
            runs.flags.push(why.clone());
            Ok(ControlFlow::Break(Some(Decision::Discard(format!(
                "within the noise, and {why}: no comparison side by side"
            )))))
        }
        Outcome::Scored(scored) => {
            // Only the change's models are scored on the test split.
            std::fs::remove_file(&scored.model).ok();
            runs.best.push(scored.trial);
            Ok(ControlFlow::Continue(()))
        }
    }
}

/// A warning when the trainer printed a val_bpb of its own: it cannot read the validation text,
/// so its number is no score, and one that claims to be is worth a look.
fn printed_score(trial: &Trial) -> Option<String> {
    let own = trial.trainer_val_bpb?;
    Some(format!(
        "the trainer printed val_bpb {own:.6} of its own; the protected score is {}",
        trial.val_bpb.map_or("none".into(), |v| format!("{v:.6}"))
    ))
}

fn scores(runs: &[Scored]) -> Vec<f64> {
    runs.iter().filter_map(|r| r.trial.val_bpb).collect()
}

/// The decision the runs so far support against `best`, or None for more runs side by side.
fn judge(
    s: &Session,
    w: &mut Worker,
    seq: u64,
    best: &Record,
    runs: &mut Runs,
) -> Option<Decision> {
    let (reruns, all) = s.update(&mut w.turn, |state| {
        let (mut reruns, mut all) = state.ledger.rerun_seconds();
        state.run_seconds.insert(seq, runs.rerun_seconds());
        for (their_reruns, their_all) in state.run_seconds.values() {
            reruns += their_reruns;
            all += their_all;
        }
        (reruns, all)
    });
    let may_rerun = reruns <= s.cfg.settings.rerun_share() * all;
    let (best_scores, change, reruns) = (
        ledger::scores(&best.trials),
        scores(&runs.scored),
        ledger::scores(&runs.best),
    );
    let evidence = Evidence {
        best: &best_scores,
        noise: s.noise(&w.turn),
        change: &change,
        reruns: &reruns,
        may_rerun,
    };
    runs.delta = Some(evidence.delta());
    match decide::judge(&evidence) {
        Verdict::Pair(why) => {
            w.progress.println(&format!("{}#{seq} {why}", w.name));
            None
        }
        Verdict::Keep(rule) => Some(Decision::Keep(rule)),
        Verdict::Discard(rule) => Some(Decision::Discard(rule)),
    }
}

/// A new best far from where the noise was measured: better models tend to be less noisy, so
/// the noise is measured again there.
fn remeasure_due(s: &Session, turn: &Turn, runs: &[Scored]) -> bool {
    let mean = decide::mean(&scores(runs));
    s.cfg.settings.noise_sigma.is_none()
        && s.read(turn, |state| state.ledger.sigma_measured_at())
            .is_some_and(|at| (at - mean).abs() > REMEASURE_SHIFT * at)
}

/// Runs the kept change up to `noise_seeds` times in all; whether every run scored.
async fn remeasure(
    s: &Session,
    w: &mut Worker,
    seq: u64,
    binary: &Path,
    runs: &mut Runs,
) -> Result<bool> {
    while runs.scored.len() < s.cfg.settings.noise_seeds() {
        w.progress.phase("noise");
        let seed = SEED + runs.scored.len() as u64;
        match execute(s, w, seq, runs.count(), seed, binary).await? {
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

/// Runs a program that is not the agent's change (the unmodified baseline, the best's kept
/// trainer) once more when a run of it fails: it ran well before, so a failure is more likely the
/// machine's (a load that slowed it past a limit) than its own. Its second failure counts.
async fn execute_unchanged(
    s: &Session,
    w: &mut Worker,
    seq: u64,
    seed: u64,
    binary: &Path,
    runs: &mut Runs,
) -> Result<Outcome> {
    let outcome = execute(s, w, seq, runs.count(), seed, binary).await?;
    match &outcome {
        Outcome::Failed { failure, .. } if !matches!(failure, TrialFailure::NonCausal { .. }) => {
            let program = if seq == 0 { "the baseline" } else { "the best" };
            let why = format!("a run of {program} failed ({failure}); it ran once more");
            w.progress.println(&format!("{}#{seq} {why}", w.name));
            runs.flags.push(why);
            runs.retried += 1;
            execute(s, w, seq, runs.count(), seed, binary).await
        }
        _ => Ok(outcome),
    }
}

/// Run `index` of experiment `seq` (counted in the order they ran), with `seed`, through the
/// session's executor, on worker `w`'s GPU.
async fn execute(
    s: &Session,
    w: &mut Worker,
    seq: u64,
    index: usize,
    seed: u64,
    binary: &Path,
) -> Result<Outcome> {
    let records = |state: &State| {
        let (enabled, budget) = (s.cfg.settings.early_stop(), s.budget);
        early_stop::judging(enabled, seq, index, &state.ledger.records, budget)
    };
    let job = Job {
        early_stop: s.read(&w.turn, records),
        binary: binary.to_path_buf(),
        seq,
        index,
        seed,
        budget: s.budget,
        limits: s.limits(&w.turn),
        log: s.cfg.run_dir.log(seq, index),
        gpu: w.gpu.clone(),
        handle: s.cfg.run_dir.handle(seq, index),
    };
    s.executor.run(&job, &mut w.stop, &w.progress).await
}
