//! `cargo run --release -p prepare`: obtains the corpus (enwik8 by default), trains the tokenizer,
//! writes the tokenised splits and the evaluation contract to `data/<name>/`. Idempotent: finished
//! steps are skipped, so re-running only rewrites the contract (e.g. with another `--profile`).

use std::path::PathBuf;

use anyhow::Result;
use clap::Parser;
use prepare::Profile;
use prepare::pipeline::{self, Options, Source};

#[derive(Parser)]
#[command(about = "Prepare data, tokenizer and the fixed evaluation contract")]
struct Args {
    /// Your own corpus instead of enwik8: .txt files (a document each), .jsonl files (a `text`
    /// field per line), or folders of them. Cut 90/5/5% by bytes into train/validation/test.
    #[arg(long, num_args = 1..)]
    input: Vec<PathBuf>,
    /// Dataset name, the folder under data/ (default: enwik8, or `custom` with --input).
    #[arg(long)]
    name: Option<String>,
    /// Write the dataset here instead of data/<name>.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Vocabulary size, including the 4 reserved special tokens.
    #[arg(long, default_value_t = 8192)]
    vocab_size: usize,
    /// `gpu` or `cpu` (default: gpu when an NVIDIA GPU is visible).
    #[arg(long)]
    profile: Option<Profile>,
    /// Context length of evaluation rows (default: from the profile, 2048 or 512).
    #[arg(long)]
    seq_len: Option<usize>,
    /// Validation bytes scored (default: from the profile, 5,000,000 or 1,000,000).
    #[arg(long)]
    eval_bytes: Option<u64>,
    /// Training seconds per experiment.
    #[arg(long, default_value_t = 300.0)]
    time_budget: f64,
}

fn main() -> Result<()> {
    let args = Args::parse();
    let data = prepare::workspace_root().join("data");
    let (name, source) = if args.input.is_empty() {
        let name = args.name.unwrap_or_else(|| "enwik8".into());
        (
            name,
            Source::Enwik8 {
                download_dir: data.join("download"),
            },
        )
    } else {
        let name = args.name.unwrap_or_else(|| "custom".into());
        (
            name.clone(),
            Source::Files {
                name,
                inputs: args.input,
            },
        )
    };
    let summary = pipeline::run(&Options {
        source,
        data_dir: args.data_dir.unwrap_or_else(|| data.join(&name)),
        vocab_size: args.vocab_size,
        profile: args.profile.unwrap_or_else(Profile::detect),
        seq_len: args.seq_len,
        eval_bytes: args.eval_bytes,
        time_budget_s: args.time_budget,
    })?;
    eprintln!("{summary}");
    Ok(())
}
