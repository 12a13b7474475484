//! Propose: the experiment to run next, committed in the worker's worktree. An interrupted or a
//! re-applied one runs as committed; the first is the unmodified baseline; every other is the
//! agent's change on top of the best as it is when the agent starts.

use std::time::Instant;

use anyhow::{Context, Result, bail};

use super::Experiment;
use super::session::{Next, Session, Worker};
use crate::agent::{self, Proposal, Rules};
use crate::ledger::Pending;

/// Proposals in a row that changed nothing before the run stops: the agent is stuck.
const MAX_EMPTY_PROPOSALS: u32 = 5;

/// The experiment `next` names, committed and recorded as pending; None when the agent's
/// proposal changed nothing.
pub(super) async fn next(s: &Session, w: &mut Worker, next: &Next) -> Result<Option<Experiment>> {
    let (program, program_changed) = s.update(&mut w.turn, |state| state.program.read());
    if program_changed {
        w.progress
            .println("program.md changed; this experiment uses the new text");
    }
    let mut unfinished = None;
    let pending = match next {
        Next::Resume(p) | Next::Reapplied(p) => {
            let what = match next {
                Next::Resume(_) => "re-running interrupted experiment",
                _ => "running re-applied experiment",
            };
            w.progress
                .println(&format!("{}{what} {}: {}", w.name, p.seq, p.description));
            w.git.reset_to(&p.commit)?;
            p.clone()
        }
        Next::Baseline => {
            let head = w.git.head()?;
            Pending {
                seq: 0,
                commit: head.clone(),
                parent: head,
                description: "baseline".into(),
                think_seconds: 0.0,
                agent_tokens: 0,
                agent_usage: Default::default(),
            }
        }
        Next::Propose(seq) => match ask_agent(s, w, *seq, &program).await? {
            Some((pending, why)) => {
                unfinished = why;
                pending
            }
            None => return Ok(None),
        },
    };
    s.pendings.write(&pending)?;
    let context = s.update(&mut w.turn, |state| {
        let running = &mut state.running;
        running.insert(pending.seq, pending.description.clone());
        s.context(state, pending.seq, &w.name)
    });
    w.progress.set_context(context);
    Ok(Some(Experiment {
        pending,
        program_changed,
        build_seconds: 0.0,
        unfinished,
    }))
}

/// What the agent is told of experiment `seq`: the budget, the noise, the machine, and what the
/// other workers are running now.
fn rules(s: &Session, w: &Worker, seq: u64) -> Rules {
    Rules {
        experiment: seq,
        budget: s.budget,
        noise: s.noise(&w.turn),
        device: s.cfg.device,
        memory: s.memory.clone(),
        running: s.read(&w.turn, |state| {
            let running = state.running.iter();
            running
                .map(|(seq, what)| format!("#{seq} {what}"))
                .collect()
        }),
    }
}

/// The agent's change on top of the best commit as it is now, committed; None when it changed
/// nothing. An unfinished proposal comes with why, and its pending is the parent itself.
async fn ask_agent(
    s: &Session,
    w: &mut Worker,
    seq: u64,
    program: &str,
) -> Result<Option<(Pending, Option<String>)>> {
    w.progress.phase("thinking");
    let started = Instant::now();
    let parent = s.best(&w.turn).context("no kept baseline")?.commit;
    w.git.reset_to(&parent)?;
    let rules = rules(s, w, seq);
    let brief = |max_bytes| {
        s.read(&w.turn, |state| {
            agent::brief(program, &rules, &state.ledger, &w.ws, max_bytes)
        })
    };
    let Proposal {
        description,
        tokens,
        finished,
    } = w.agent.propose(seq, &brief, &w.ws).await?;
    s.spend(tokens);
    let pending = |commit: String, description: String| Pending {
        seq,
        commit,
        parent: parent.clone(),
        description,
        think_seconds: started.elapsed().as_secs_f64(),
        agent_tokens: tokens.total(),
        agent_usage: tokens,
    };
    if !finished {
        // Recorded, not run: the night goes on, and the record says why.
        w.progress
            .println(&format!("{}#{seq} not run: {description}", w.name));
        w.git.reset_to(&parent)?;
        return Ok(Some((
            pending(parent.clone(), description.clone()),
            Some(description),
        )));
    }
    let Some(commit) = w.git.commit_editable(&description)? else {
        let empty = s.update(&mut w.turn, |state| {
            state.empty_proposals += 1;
            state.empty_proposals
        });
        if empty == MAX_EMPTY_PROPOSALS {
            bail!(
                "the agent proposed no change {MAX_EMPTY_PROPOSALS} times in a row; see program.md and the agent's settings"
            );
        }
        w.progress.println("the proposal changed nothing; not run");
        return Ok(None);
    };
    s.update(&mut w.turn, |state| state.empty_proposals = 0);
    Ok(Some((pending(commit, description), None)))
}
