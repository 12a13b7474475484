//! The morning report: `orchestrator report` prints a run's summary (text or `--json`) and draws
//! `runs/<tag>/progress.png` beside its records.

mod plot;
mod summary;

use std::fs;
use std::path::Path;

use anyhow::{Context, Result, anyhow};

use crate::config::ReportArgs;
use crate::ledger::read_records;

/// `orchestrator report`: the summary on stdout (text or `--json`) and the plot beside the records.
pub fn run(args: &ReportArgs, repo: &Path) -> Result<()> {
    let tag = args.tag.clone().unwrap_or_else(crate::config::default_tag);
    let dir = repo.join("runs").join(&tag);
    let records = read_records(&dir)?;
    if records.is_empty() {
        return Err(no_run(repo, &tag));
    }
    let mut summary = summary::summarize(&tag, &records);
    if let Some(best) = crate::ledger::best(&records) {
        let entries = crate::confirm::records::read(&dir)?;
        summary.confirm = crate::confirm::records::latest(&entries, &best.commit).cloned();
    }
    let png = dir.join("progress.png");
    plot::draw(&records, &summary, &png).with_context(|| format!("drawing {}", png.display()))?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        print!("{}", summary.text());
    }
    eprintln!("plot: {}", png.display());
    Ok(())
}

/// Run `tag` has no experiments: what to do, and the runs that have some.
pub fn no_run(repo: &Path, tag: &str) -> anyhow::Error {
    let known = known_runs(&repo.join("runs"));
    anyhow!(
        "no experiments in {}: start a run with `cargo run --release -p orchestrator -- --tag {tag}`{}",
        repo.join("runs")
            .join(tag)
            .join("experiments.jsonl")
            .display(),
        if known.is_empty() {
            String::new()
        } else {
            format!("; runs with experiments there: {}", known.join(", "))
        }
    )
}

fn known_runs(runs: &Path) -> Vec<String> {
    let mut tags: Vec<String> = fs::read_dir(runs)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.path().join("experiments.jsonl").is_file())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    tags.sort();
    tags
}
