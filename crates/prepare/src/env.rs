//! The environment by which the orchestrator tells the trainer and the protected evaluator what
//! to do. Named once here, the crate both of them and the orchestrator depend on, so that the
//! three cannot drift apart.

/// The prepared data directory (default `data/enwik8` in the repository).
pub const DATA_ENV: &str = "AUTORESEARCH_DATA";

/// Training seconds, counted as the contract counts them. The orchestrator resolves the budget
/// once (its `--time-budget`, else the contract's) and always sets it.
pub const TIME_BUDGET_ENV: &str = "AUTORESEARCH_TIME_BUDGET";

/// The trainer's seed (default 42); re-runs of one change differ only in it.
pub const SEED_ENV: &str = "AUTORESEARCH_SEED";

/// `cuda` or `cpu`: the device the orchestrator found on this machine ([`crate::Profile::detect`]),
/// so that the trainer runs the configuration the agent was told about.
pub const DEVICE_ENV: &str = "AUTORESEARCH_DEVICE";

/// Names the file where the trainer saves its trained model for the protected evaluator, which
/// computes the score that is recorded. The file is TorchScript that maps token ids, int64 of
/// shape (1, seq_len), to logits, float of shape (1, seq_len, vocab_size).
pub const EXPORT_ENV: &str = "AUTORESEARCH_EXPORT";
