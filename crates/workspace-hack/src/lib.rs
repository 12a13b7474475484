//! No code: this crate exists for its manifest. It depends on every third-party crate that two
//! workspace members would otherwise build with different features, with the union of those
//! features, and every member depends on it. So `cargo test --workspace`, `cargo run -p
//! orchestrator` and the orchestrator's `cargo build -p train` resolve one feature set per crate
//! and share one build of each, instead of recompiling serde, tokio and libtorch's wrapper for
//! each selection of packages. `cargo hakari generate` rewrites the manifest (see
//! `.config/hakari.toml`).
