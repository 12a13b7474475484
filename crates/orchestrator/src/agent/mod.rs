//! Who proposes the changes: an LLM behind any OpenAI-compatible endpoint, or the built-in
//! offline search. Both edit the working tree through `tools::Workspace`.

mod offline;
mod openai;

pub use offline::OfflineAgent;
pub use openai::OpenAiAgent;

use anyhow::Result;

use crate::ledger::{Ledger, Status};
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

/// Experiments in the brief: the best kept ones and the most recent ones.
const BRIEF_BEST: usize = 5;
const BRIEF_RECENT: usize = 10;
/// Log lines quoted for each recent failure.
const BRIEF_LOG_TAIL: usize = 15;

/// The LLM's view of the run: the human's program, the rules, a bounded history, the source.
pub fn brief(program: &str, budget: f64, ledger: &Ledger, ws: &Workspace) -> String {
    let line = |r: &crate::ledger::Record| format!("- {}", r.summary());
    let mut kept: Vec<_> = ledger
        .records
        .iter()
        .filter(|r| r.status == Status::Keep)
        .collect();
    kept.sort_by(|a, b| {
        a.val_bpb
            .unwrap_or(f64::MAX)
            .total_cmp(&b.val_bpb.unwrap_or(f64::MAX))
    });
    let best: Vec<String> = kept.iter().take(BRIEF_BEST).map(|r| line(r)).collect();
    let recent: Vec<String> = ledger
        .records
        .iter()
        .rev()
        .take(BRIEF_RECENT)
        .rev()
        .map(line)
        .collect();
    let failures: Vec<String> = ledger
        .records
        .iter()
        .rev()
        .filter(|r| r.status == Status::Crash)
        .take(3)
        .map(|r| {
            let log = std::fs::read_to_string(ledger.log_path(r.seq)).unwrap_or_default();
            let lines: Vec<&str> = log.lines().collect();
            format!(
                "#{}:\n{}",
                r.seq,
                lines[lines.len().saturating_sub(BRIEF_LOG_TAIL)..].join("\n")
            )
        })
        .collect();
    let source = ws.read_file("crates/train/src/main.rs").unwrap_or_default();
    let keep_rule = ledger
        .noise()
        .map(|n| n.sigma)
        .map_or("beats the best".into(), |sigma| {
            format!(
                "beats the best by more than the noise between runs (sigma {sigma:.6}: a gain over \
             about 2 sigma is kept, a smaller one is re-run and judged on the mean)"
            )
        });
    format!(
        "# Research program\n\n{program}\n\n# Rules\n\nTraining budget: {budget} s of wall-clock training per \
         experiment. Metric: val_bpb from the protected evaluation of the model your trainer exports, lower is \
         better; a change is kept only if it {keep_rule}. Changing only the seed or comments is never kept. \
         Edit only crates/train/src/.\n\n# Best experiments\n\n{}\n\n# Recent experiments\n\n{}\n\n\
         # Recent failures (log tails)\n\n{}\n\n# The current best trainer: crates/train/src/main.rs\n\n```rust\n{source}\n```\n",
        best.join("\n"),
        recent.join("\n"),
        if failures.is_empty() {
            "none".into()
        } else {
            failures.join("\n\n")
        },
    )
}
