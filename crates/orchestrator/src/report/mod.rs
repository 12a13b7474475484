//! The morning report: `orchestrator report` prints a run's summary (text or `--json`) and draws
//! `runs/<tag>/progress.png` beside its records.

mod plot;
mod summary;

use std::fs;
use std::path::Path;

use anyhow::{Context, Result, bail};

use crate::config::ReportArgs;
use crate::ledger::read_records;
use crate::run_dir::RunDir;

/// `orchestrator report`: the summary on stdout (text or `--json`) and the plot beside the records.
pub fn run(args: &ReportArgs, repo: &Path) -> Result<()> {
    let tag = args.tag.clone().unwrap_or_else(crate::config::default_tag);
    let dir = RunDir::new(repo, &tag);
    let records = read_records(&dir)?;
    if records.is_empty() {
        let known = known_runs(repo);
        bail!(
            "no experiments in {}: start a run with `cargo run --release -p orchestrator -- --tag {tag}`{}",
            dir.experiments().display(),
            if known.is_empty() {
                String::new()
            } else {
                format!("; runs with experiments there: {}", known.join(", "))
            }
        );
    }
    let summary = summary::summarize(&tag, &records);
    let png = dir.progress_plot();
    plot::draw(&records, &summary, &png).with_context(|| format!("drawing {}", png.display()))?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        print!("{}", summary.text());
    }
    eprintln!("plot: {}", png.display());
    Ok(())
}

/// The tags of `repo` that have records.
fn known_runs(repo: &Path) -> Vec<String> {
    let mut tags: Vec<String> = fs::read_dir(RunDir::all(repo))
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| RunDir::at(&e.path()).experiments().is_file())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    tags.sort();
    tags
}
