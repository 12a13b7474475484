//! `cargo run --release -p orchestrator [-- --tag T --time-budget S --max-experiments N --resume]`
//! `cargo run --release -p orchestrator -- report [--tag T] [--json]`

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
        Some(Command::Run(args)) => {
            orchestrator::research::run(Config::resolve(*args, &repo)?).await
        }
        None => orchestrator::research::run(Config::resolve(cli.run, &repo)?).await,
    }
}
