//! The evaluation contract: the fixed facts every score depends on (tokenizer, context length,
//! scored bytes, time budget). FIXED: the agent never edits this crate, and results are only ever
//! compared between runs that carry the same contract hash.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Bumped whenever the meaning of a contract field or of the data files changes, so that a
/// `data/` directory written by an older prepare is refused instead of silently misread.
pub const CONTRACT_SCHEMA: u32 = 1;

/// Id of `<|reserved_0|>`, the token that starts every document.
pub const BOS_ID: u32 = 0;

/// Number of reserved special tokens at the start of the vocabulary (`<|reserved_0..3|>`).
pub const NUM_SPECIAL: u32 = 4;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Contract {
    pub schema: u32,
    /// Corpus name, e.g. `enwik8`.
    pub corpus: String,
    /// sha256 of the raw corpus bytes (all splits), so a different corpus gives a new hash.
    pub corpus_sha256: String,
    /// sha256 of `tokenizer.json`.
    pub tokenizer_sha256: String,
    pub vocab_size: usize,
    pub bos_id: u32,
    /// `gpu` or `cpu`: which default figures below were chosen.
    pub profile: String,
    /// Context length of the evaluation rows.
    pub seq_len: usize,
    /// Training seconds each experiment gets.
    pub time_budget_s: f64,
    /// Bytes from the start of the validation split that were asked to be scored.
    pub eval_bytes: u64,
    /// Bytes actually scored: `eval_bytes` rounded up to the next token boundary (or the whole
    /// split when it is shorter). Equals the sum of the scored targets' byte lengths.
    pub scored_bytes: u64,
}

impl Contract {
    /// Short hex digest of the contract's canonical JSON; every result carries it.
    pub fn hash(&self) -> String {
        let canonical = serde_json::to_vec(self).expect("a contract always serialises");
        hex::encode(&Sha256::digest(&canonical)[..8])
    }

    /// Steps at the start of training that the time budget does not count. On a GPU they absorb
    /// start-up work (kernel selection, allocator growth) that is not training speed; on a CPU
    /// the first step only allocates, and every uncounted step is training outside the budget.
    /// Part of the contract, not the trainer's to choose: more uncounted steps buy untimed
    /// training.
    pub fn uncounted_steps(&self) -> usize {
        if self.profile == Profile::Gpu.name() {
            11
        } else {
            1
        }
    }
}

/// Default figures per machine kind (docs/contract.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Profile {
    /// One NVIDIA GPU: long context, the whole validation split scored.
    Gpu,
    /// A CPU-only machine: a shorter context and a validation prefix, so that evaluation stays a
    /// small fraction of a 5-minute budget on 2 cores.
    Cpu,
}

impl Profile {
    /// `Gpu` when an NVIDIA GPU is visible to this machine, else `Cpu`.
    pub fn detect() -> Profile {
        if std::path::Path::new("/dev/nvidia0").exists() {
            Profile::Gpu
        } else {
            Profile::Cpu
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Profile::Gpu => "gpu",
            Profile::Cpu => "cpu",
        }
    }

    /// The device a trainer uses on such a machine, as `AUTORESEARCH_DEVICE` names it.
    pub fn device(self) -> &'static str {
        match self {
            Profile::Gpu => "cuda",
            Profile::Cpu => "cpu",
        }
    }

    /// The profile whose [`Profile::device`] is `device`.
    pub fn of_device(device: &str) -> Option<Profile> {
        [Profile::Gpu, Profile::Cpu]
            .into_iter()
            .find(|p| p.device() == device)
    }

    pub fn seq_len(self) -> usize {
        match self {
            Profile::Gpu => 2048,
            Profile::Cpu => 512,
        }
    }

    pub fn eval_bytes(self) -> u64 {
        match self {
            Profile::Gpu => 5_000_000,
            Profile::Cpu => 1_000_000,
        }
    }
}

impl std::str::FromStr for Profile {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "gpu" => Ok(Profile::Gpu),
            "cpu" => Ok(Profile::Cpu),
            _ => Err(format!("unknown profile {s:?}: use `gpu` or `cpu`")),
        }
    }
}
