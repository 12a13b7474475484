//! Who proposes the changes: an LLM behind any OpenAI-compatible endpoint, the built-in
//! model-based search over the trainer's constants, or both (the LLM's structural changes, and
//! the search tuning the best's constants between them, `tune_share` of the experiments). All
//! edit the working tree through `tools::Workspace`.

mod brief;
mod calls;
mod conversation;
mod endpoint;
mod offline;
mod openai;
pub mod search;
mod stream;

pub use brief::{Rules, brief, history};
pub use endpoint::{Endpoint, EndpointError, Wait, http_client};
pub use offline::OfflineAgent;
pub use openai::OpenAiAgent;

use std::sync::{Arc, Mutex};

use anyhow::Result;
use prepare::Profile;

use crate::cargo_build::Builder;
use crate::config::{AgentKind, Config};
use crate::cost::Tokens;
use crate::ledger::Record;
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

pub struct Agent {
    /// A conversation of its own per worker, when an LLM is configured.
    llm: Option<Box<OpenAiAgent>>,
    /// One memory for every worker: no setting is proposed twice, nor while it runs. None
    /// when an LLM proposes every change (`tune_share = 0`).
    search: Option<Arc<Mutex<OfflineAgent>>>,
    /// With an LLM: the share of the experiments the search proposes.
    tune_share: f64,
    /// The latest proposal was the LLM's: only its changes are repaired.
    llm_proposed: bool,
}

impl Agent {
    /// The LLM `cfg` asks for, if any, ready to propose: its endpoint checked and its context
    /// learned (see `OpenAiAgent::connect`). A night's first step: a wrong key or model stops it
    /// before anything is built. Its `check` tool builds with `builder`.
    pub async fn connect(cfg: &Config, builder: &Builder) -> Result<Option<Box<OpenAiAgent>>> {
        if cfg.agent != AgentKind::Openai {
            return Ok(None);
        }
        let mut llm = Box::new(OpenAiAgent::new(cfg, builder.clone()));
        llm.connect().await?;
        Ok(Some(llm))
    }

    /// The agent `cfg` asks for, with its `llm` from [`Agent::connect`]. The search starts
    /// knowing `trials`, what the records of this run and the remembered ones hold.
    pub fn new(
        cfg: &Config,
        llm: Option<Box<OpenAiAgent>>,
        trials: Vec<search::Trial>,
    ) -> Result<Agent> {
        let searches = llm.is_none() || cfg.settings.tune_share() > 0.0;
        let search = match searches {
            true => Some(Arc::new(Mutex::new(OfflineAgent::new(
                cfg.run_dir.offline_agent(),
                cfg.settings.seed(),
                cfg.device,
                trials,
            )?))),
            false => None,
        };
        Ok(Agent {
            llm,
            search,
            tune_share: cfg.settings.tune_share(),
            llm_proposed: false,
        })
    }

    /// The agent of one more worker.
    pub fn for_another_worker(&self) -> Agent {
        Agent {
            llm: self.llm.clone(),
            search: self.search.clone(),
            tune_share: self.tune_share,
            llm_proposed: false,
        }
    }

    /// A change for experiment `seq`, made in `ws`; `brief(max_bytes)` is what an LLM is told.
    pub async fn propose(
        &mut self,
        seq: u64,
        brief: &dyn Fn(usize) -> String,
        ws: &Workspace,
    ) -> Result<Proposal> {
        let tunes =
            self.search.is_some() && (self.llm.is_none() || tuning_turn(seq, self.tune_share));
        self.llm_proposed = !tunes;
        match (&mut self.llm, &self.search) {
            (_, Some(search)) if tunes => locked(search).propose(ws),
            (Some(llm), _) => llm.propose(brief, ws).await,
            (None, _) => unreachable!("an agent without an LLM always has the search"),
        }
    }

    /// A chance to fix compiler errors; None when the latest proposal was the search's, which
    /// does not repair.
    pub async fn repair(&mut self, diagnostics: &str, ws: &Workspace) -> Option<Result<Proposal>> {
        match &mut self.llm {
            Some(llm) if self.llm_proposed => Some(llm.repair(diagnostics, ws).await),
            _ => None,
        }
    }

    /// `record` is recorded; `source` is its trainer. The search learns from every record,
    /// the LLM's changes too (it sees them in its brief).
    pub fn observe(&mut self, record: &Record, source: &str) -> Result<()> {
        match &self.search {
            Some(search) => locked(search).observe(record, source),
            None => Ok(()),
        }
    }

    /// A trainer it did not propose is about to run (a change re-applied onto a newer best):
    /// the search will not propose its setting. An LLM sees it in its brief.
    pub fn note(&mut self, source: &str) -> Result<()> {
        match &self.search {
            Some(search) => locked(search).note(source),
            None => Ok(()),
        }
    }
}

/// Whether the search, not the LLM, proposes experiment `seq`: `share` of the experiments,
/// spread evenly and the same on `--resume` (with 0.3: #4, #7, #10, #14, ...).
fn tuning_turn(seq: u64, share: f64) -> bool {
    let turns = |n: u64| (n as f64 * share + 1e-9).floor();
    seq > 0 && turns(seq) > turns(seq - 1)
}

/// The search, whose calls are brief and never await.
fn locked(agent: &Mutex<OfflineAgent>) -> std::sync::MutexGuard<'_, OfflineAgent> {
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

#[cfg(test)]
mod tests {
    use super::tuning_turn;

    #[test]
    fn the_search_takes_its_share_of_the_turns_evenly() {
        let turns = |share| {
            (1..=20)
                .filter(|&s| tuning_turn(s, share))
                .collect::<Vec<_>>()
        };
        assert_eq!(turns(0.3), [4, 7, 10, 14, 17, 20]);
        assert_eq!(turns(0.0), Vec::<u64>::new());
        assert_eq!(turns(1.0), (1..=20).collect::<Vec<_>>());
        assert_eq!(turns(0.5), [2, 4, 6, 8, 10, 12, 14, 16, 18, 20]);
    }
}
