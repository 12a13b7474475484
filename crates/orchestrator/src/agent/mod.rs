//! Who proposes the changes: an LLM behind any OpenAI-compatible endpoint, or the built-in
//! offline search. Both edit the working tree through `tools::Workspace`.

mod brief;
mod calls;
mod endpoint;
mod offline;
mod openai;

pub use brief::{Rules, brief, history};
pub use endpoint::{Endpoint, EndpointError};
pub use offline::OfflineAgent;
pub use openai::OpenAiAgent;

use std::sync::{Arc, Mutex};

use anyhow::Result;
use prepare::Profile;

use crate::cargo_build::Builder;
use crate::config::{AgentKind, Config};
use crate::cost::Tokens;
use crate::tools::Workspace;

/// One proposed change, already applied to the working tree.
pub struct Proposal {
    /// One line for the logs and the commit message; why, when it is not finished.
    pub description: String,
    /// LLM tokens spent on it.
    pub tokens: Tokens,
    /// The agent called it done. An unfinished one (the LLM stopped calling tools, ran out of
    /// rounds or time, or its endpoint failed) is recorded as such and not run.
    pub finished: bool,
}

pub enum Agent {
    /// A conversation of its own per worker.
    OpenAi(Box<OpenAiAgent>),
    /// One memory for every worker: no setting is proposed twice, nor while it runs.
    Offline(Arc<Mutex<OfflineAgent>>),
}

impl Agent {
    /// The agent `cfg` asks for; an LLM's `check` tool builds with `builder`.
    pub fn new(cfg: &Config, builder: &Builder) -> Result<Agent> {
        Ok(match cfg.agent {
            AgentKind::Offline => Agent::Offline(Arc::new(Mutex::new(OfflineAgent::new(
                cfg.run_dir.offline_agent(),
                cfg.settings.seed(),
                cfg.device,
            )?))),
            AgentKind::Openai => Agent::OpenAi(Box::new(OpenAiAgent::new(cfg, builder.clone()))),
        })
    }

    /// Ready to propose: an LLM's endpoint checked and its context learned (see
    /// `OpenAiAgent::connect`).
    pub async fn connect(&mut self) -> Result<()> {
        match self {
            Agent::OpenAi(agent) => agent.connect().await,
            Agent::Offline(_) => Ok(()),
        }
    }

    /// The agent of one more worker.
    pub fn for_another_worker(&self) -> Agent {
        match self {
            Agent::OpenAi(agent) => Agent::OpenAi(agent.clone()),
            Agent::Offline(agent) => Agent::Offline(agent.clone()),
        }
    }

    /// A change for experiment `seq`, made in `ws`; `brief(max_bytes)` is what an LLM is told.
    pub async fn propose(
        &mut self,
        seq: u64,
        brief: &dyn Fn(usize) -> String,
        ws: &Workspace,
    ) -> Result<Proposal> {
        match self {
            Agent::OpenAi(agent) => agent.propose(brief, ws).await,
            Agent::Offline(agent) => offline(agent).propose(seq, ws),
        }
    }

    /// A chance to fix compiler errors; None when this agent does not repair.
    pub async fn repair(&mut self, diagnostics: &str, ws: &Workspace) -> Option<Result<Proposal>> {
        match self {
            Agent::OpenAi(agent) => Some(agent.repair(diagnostics, ws).await),
            Agent::Offline(_) => None,
        }
    }

    /// Experiment `seq`'s outcome: bpb gained over the best it was compared with (negative if
    /// worse).
    pub fn observe(&mut self, seq: u64, gain: f64) -> Result<()> {
        match self {
            Agent::OpenAi(_) => Ok(()),
            Agent::Offline(agent) => offline(agent).observe(seq, gain),
        }
    }

    /// A trainer it did not propose is about to run (a change re-applied onto a newer best):
    /// the offline search will not propose its setting. An LLM sees it in its brief.
    pub fn note(&mut self, source: &str) -> Result<()> {
        match self {
            Agent::OpenAi(_) => Ok(()),
            Agent::Offline(agent) => offline(agent).note(source),
        }
    }
}

/// The offline search, whose calls are brief and never await.
fn offline(agent: &Mutex<OfflineAgent>) -> std::sync::MutexGuard<'_, OfflineAgent> {
    agent.lock().unwrap_or_else(|e| e.into_inner())
}

/// The prefixes of the trainer's per-device constants (`GPU_DEPTH`, `CPU_DEPTH`, ...): those the
/// trainer uses on `device`, and those that do nothing there.
fn device_prefixes(device: Profile) -> (&'static str, &'static str) {
    match device {
        Profile::Gpu => ("GPU_", "CPU_"),
        Profile::Cpu => ("CPU_", "GPU_"),
    }
}
