//! Data, tokenizer, loader and the fixed evaluation contract of autoresearch-rs.
//!
//! FIXED: nothing in this crate is editable by the research agent. It decides what the score
//! means (tokens, byte lengths, which bytes are scored, how losses become bits per byte), so
//! keeping it out of the agent's reach is what makes results comparable across experiments.

pub mod atomic;
pub mod contract;
#[cfg(feature = "pipeline")]
pub mod corpus;
pub mod data;
pub mod env;
pub mod eval;
pub mod loader;
#[cfg(feature = "pipeline")]
pub mod pipeline;
pub mod result;
pub mod rng;
pub mod split;
#[cfg(feature = "pipeline")]
pub mod tokenizer;

use std::path::PathBuf;

pub use contract::{Contract, Profile};
pub use data::{DATASET_FILES, Dataset, Split, ensure_files, scored_files, training_files};
pub use env::{DATA_ENV, DEVICE_ENV, EXPORT_ENV, SEED_ENV, TIME_BUDGET_ENV};
pub use eval::{BpbAccumulator, EvalBatch, EvalSet};
pub use loader::TrainLoader;
pub use result::{RESULT_SCHEMA, ResultLine, RunStatus};

/// The repository root, where `data/` lives: the nearest directory at or above the current one
/// that holds the workspace (`crates/prepare` beside a `Cargo.toml`), else the one this crate was
/// compiled in. Found at run time, because builds of copies of the workspace may share compiled
/// artifacts, and a compiled-in path could then name another copy.
pub fn workspace_root() -> PathBuf {
    let is_root = |dir: &std::path::Path| {
        dir.join("Cargo.toml").is_file() && dir.join("crates/prepare").is_dir()
    };
    let cwd = std::env::current_dir().unwrap_or_default();
    if let Some(root) = cwd.ancestors().find(|dir| is_root(dir)) {
        return root.to_path_buf();
    }
    let manifest_dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest_dir
        .ancestors()
        .nth(2)
        .expect("crates/prepare sits two levels down")
        .to_path_buf()
}

/// `$AUTORESEARCH_DATA` ([`DATA_ENV`]) when set, else `data/enwik8` in the repository.
pub fn default_data_dir() -> PathBuf {
    std::env::var_os(DATA_ENV)
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("data").join("enwik8"))
}
