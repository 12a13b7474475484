//! Who proposes the changes: the built-in offline search, or an LLM (later).

mod offline;

pub use offline::OfflineAgent;

/// One proposed change, already applied to the working tree.
pub struct Proposal {
    /// One line for the logs and the commit message.
    pub description: String,
    /// LLM tokens spent on it.
    pub tokens: u64,
}
