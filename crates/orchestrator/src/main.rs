//! `cargo run --release -p orchestrator [-- --tag T --time-budget S --max-experiments N --resume]`
//! `cargo run --release -p orchestrator -- report [--tag T] [--json]`
//! `cargo run --release -p orchestrator -- confirm [--tag T] [--seeds N] [--budget S] [--ablate]`
//! `cargo run --release -p orchestrator -- finalize [--tag T]`
//! `cargo run --release -p orchestrator -- dashboard [--tag T] [--addr 127.0.0.1:8080] [--public]`

use anyhow::Result;
use clap::Parser;
use orchestrator::config::{Cli, Command, Config};
use orchestrator::git::Git;

#[tokio::main]
async fn main() -> Result<()> {
    let cli = Cli::parse();
    let repo = Git::toplevel(&std::env::current_dir()?)?;
    match cli.command {
        Some(Command::Report(args)) => orchestrator::report::run(&args, &repo),
        Some(Command::Confirm(args)) => orchestrator::confirm::run(args, &repo).await,
        Some(Command::Finalize(args)) => orchestrator::finalize::run(args, &repo),
        Some(Command::Dashboard(args)) => orchestrator::dashboard::serve(&args, &repo).await,
        Some(Command::Run(args)) => {
            orchestrator::research::run(Config::resolve(*args, &repo)?).await
        }
        None => orchestrator::research::run(Config::resolve(cli.run, &repo)?).await,
    }
}
