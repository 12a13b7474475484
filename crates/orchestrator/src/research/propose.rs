//! Propose: the experiment to run next, committed on the run's branch. An interrupted one is
//! picked up again; the first is the unmodified baseline; every other is the agent's change.

use std::time::Instant;

use anyhow::{Context, Result, bail};

use super::Experiment;
use super::session::Session;
use crate::agent::{self, Proposal, Rules};
use crate::ledger::Pending;

/// Proposals in a row that changed nothing before the run stops: the agent is stuck.
const MAX_EMPTY_PROPOSALS: u32 = 5;

/// Experiment `seq`, recorded as pending; None when the agent's proposal changed nothing.
pub(super) async fn next(s: &mut Session, seq: u64) -> Result<Option<Experiment>> {
    let (program, program_changed) = s.program.read();
    if program_changed {
        s.progress
            .println("program.md changed; this experiment uses the new text");
    }
    let pending = match s.ledger.pending()? {
        Some(p) if p.seq == seq => {
            s.progress.println(&format!(
                "re-running interrupted experiment {seq}: {}",
                p.description
            ));
            s.git.reset_to(&p.commit)?;
            p
        }
        _ if seq == 0 => {
            let head = s.git.head()?;
            Pending {
                seq,
                commit: head.clone(),
                parent: head,
                description: "baseline".into(),
                think_seconds: 0.0,
                agent_tokens: 0,
            }
        }
        _ => match ask_agent(s, seq, &program).await? {
            Some(pending) => pending,
            None => return Ok(None),
        },
    };
    s.ledger.set_pending(Some(&pending))?;
    Ok(Some(Experiment {
        pending,
        program_changed,
        build_seconds: 0.0,
    }))
}

/// The agent's change on top of the best commit, committed; None when it changed nothing.
async fn ask_agent(s: &mut Session, seq: u64, program: &str) -> Result<Option<Pending>> {
    s.progress.phase("thinking");
    let started = Instant::now();
    let parent = s
        .ledger
        .best()
        .map(|b| b.commit.clone())
        .context("no kept baseline")?;
    let rules = Rules {
        budget: s.budget,
        noise: s.noise(),
        device: s.cfg.device,
    };
    let Proposal {
        description,
        tokens,
    } = s
        .agent
        .propose(|| agent::brief(program, &rules, &s.ledger, &s.ws), &s.ws)
        .await?;
    let Some(commit) = s.git.commit_editable(&description)? else {
        s.empty_proposals += 1;
        if s.empty_proposals == MAX_EMPTY_PROPOSALS {
            bail!(
                "the agent proposed no change {MAX_EMPTY_PROPOSALS} times in a row; see program.md and the agent's settings"
            );
        }
        s.progress.println("the proposal changed nothing; not run");
        return Ok(None);
    };
    s.empty_proposals = 0;
    Ok(Some(Pending {
        seq,
        commit,
        parent,
        description,
        think_seconds: started.elapsed().as_secs_f64(),
        agent_tokens: tokens,
    }))
}
