//! Who proposes the changes: an LLM behind any OpenAI-compatible endpoint, or the built-in
//! offline search. Both edit the working tree through `tools::Workspace`.

mod brief;
mod offline;
mod openai;

pub use brief::{Rules, brief, history};
pub use offline::OfflineAgent;
pub use openai::OpenAiAgent;

use anyhow::Result;
use prepare::Profile;

use crate::cargo_build::Builder;
use crate::config::{AgentKind, Config};
use crate::tools::Workspace;

/// One proposed change, already applied to the working tree.
pub struct Proposal {
    /// One line for the logs and the commit message.
    pub description: String,
    /// LLM tokens spent on it.
    pub tokens: u64,
}

pub enum Agent {
    OpenAi(OpenAiAgent),
    Offline(OfflineAgent),
}

impl Agent {
    /// The agent `cfg` asks for; an LLM's `check` tool builds with `builder`.
    pub fn new(cfg: &Config, builder: &Builder) -> Result<Agent> {
        Ok(match cfg.agent {
            AgentKind::Offline => Agent::Offline(OfflineAgent::new(
                cfg.run_dir().join("offline_agent.json"),
                cfg.seed,
                cfg.device,
            )?),
            AgentKind::Openai => Agent::OpenAi(OpenAiAgent::new(cfg, builder.clone())),
        })
    }

    pub async fn propose(
        &mut self,
        brief: impl FnOnce() -> String,
        ws: &Workspace,
    ) -> Result<Proposal> {
        match self {
            Agent::OpenAi(agent) => agent.propose(brief(), ws).await,
            Agent::Offline(agent) => agent.propose(ws),
        }
    }

    /// A chance to fix compiler errors; None when this agent does not repair.
    pub async fn repair(&mut self, diagnostics: &str, ws: &Workspace) -> Option<Result<Proposal>> {
        match self {
            Agent::OpenAi(agent) => Some(agent.repair(diagnostics, ws).await),
            Agent::Offline(_) => None,
        }
    }

    /// The last proposal's outcome: bpb gained over the best before it (negative if worse).
    pub fn observe(&mut self, gain: f64) -> Result<()> {
        match self {
            Agent::OpenAi(_) => Ok(()),
            Agent::Offline(agent) => agent.observe(gain),
        }
    }
}

/// The prefixes of the trainer's per-device constants (`GPU_DEPTH`, `CPU_DEPTH`, ...): those the
/// trainer uses on `device`, and those that do nothing there.
fn device_prefixes(device: Profile) -> (&'static str, &'static str) {
    match device {
        Profile::Gpu => ("GPU_", "CPU_"),
        Profile::Cpu => ("CPU_", "GPU_"),
    }
}
