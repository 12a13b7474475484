//! The autonomous research loop of autoresearch-rs: an agent edits `crates/train/src`, the loop
//! builds and runs the trainer under a hard time limit and keeps the change on the run's branch
//! only if validation bits per byte improved. One module per concern, listed in the order data
//! flows through them in one experiment (docs/orchestrator.md has the same list).

/// Flags, environment and `autoresearch.toml`, resolved into one `Config`.
pub mod config;

/// The layout of `runs/<tag>/`, one method per file.
pub mod run_dir;

/// What a fresh machine lacks, done once: libtorch and the prepared data.
pub mod setup;

/// The loop and its phases: start or resume, propose, guard, build, trials, holdout, record.
pub mod research;

/// The human's `program.md`, re-read before every experiment.
pub mod program;

/// Who proposes a change (an LLM, the offline search or both), and what it is told.
pub mod agent;

/// `memory.md`: what earlier runs found, for the agents and for people.
pub mod memory;

/// The agent's tools on the working tree; writes only under `crates/train/src`.
pub mod tools;

/// The run's branch and its commits; discarded ones stay reachable.
pub mod git;

/// The experiments' own git worktree, apart from the person's checkout.
pub mod worktree;

/// The sandbox for everything that runs the agent's code, and its allow-listed environment.
pub mod sandbox;

/// `cargo build` of the trainer and the evaluator in the sandbox, with the compiler's errors.
pub mod cargo_build;

/// The trainer's fixed rule tests: which must pass, and what may not hide them.
pub mod rules;

/// Where a trial runs: the seam between the loop and the machines.
pub mod executor;

/// Child processes under a hard limit, in their own process group.
pub mod process;

/// The protected evaluator, hash-checked, whose score is the one recorded.
pub mod scoring;

/// A run's learning curve, from the trainer's progress lines.
pub mod curve;

/// Stopping a change's run that is clearly worse than the best's runs were at the same point.
pub mod early_stop;

/// Keep, re-run or discard against the measured noise; the keep rule in words.
pub mod decide;

/// The records under `runs/<tag>/`, the source of truth for `--resume`.
pub mod ledger;

/// The morning report: the summary and `progress.png`.
pub mod report;

/// What the LLM costs: tokens, prices, the night's cap.
pub mod cost;

/// Alerts: a command told of a new best, a crash streak, a stall, the cap, the end.
pub mod notify;

/// The machinery the night and `confirm` share: sandbox, builder, evaluator, executor.
pub mod rig;

/// Before merging: the baseline and the best re-trained with fresh seeds, the gain's interval.
pub mod confirm;

/// The kept changes that held up, as a branch of clean commits for review.
pub mod finalize;

/// The live dashboard: a web page and its JSON, read from the run's records.
pub mod dashboard;

/// The status line on stderr.
pub mod progress;

/// Ctrl-C.
pub mod stop;

/// Tails and one-line forms of text.
pub mod text;

pub use stop::Stop;
