//! `cargo run --release -p orchestrator [-- --tag T --time-budget S --max-experiments N --resume]`

use anyhow::Result;
use clap::Parser;
use orchestrator::config::{Cli, Command, Config};
use orchestrator::git::Git;

#[tokio::main]
async fn main() -> Result<()> {
    let cli = Cli::parse();
    let args = match cli.command {
        Some(Command::Run(args)) => args,
        None => cli.run,
    };
    let repo = Git::toplevel(&std::env::current_dir()?)?;
    orchestrator::research::run(Config::resolve(args, &repo)?).await
}
