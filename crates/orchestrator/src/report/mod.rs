//! The morning report: `orchestrator report` prints a run's summary (text or `--json`) and draws
//! `runs/<tag>/progress.png` beside its records.

mod plot;
pub(crate) mod summary;

use std::path::Path;

use anyhow::{Context, Result};

use crate::config::ReportArgs;
use crate::confirm::records as confirmations;
use crate::ledger::{Record, read_run};
use crate::run_dir::RunDir;

/// The summary of run `tag`'s `records`, with the latest confirmation of its best (from `dir`).
pub fn summarize(tag: &str, dir: &RunDir, records: &[Record]) -> Result<summary::Summary> {
    let mut summary = summary::summarize(tag, records);
    if let Some(best) = crate::ledger::best(records) {
        let entries = confirmations::read(dir)?;
        summary.confirm = confirmations::latest(&entries, &best.commit).cloned();
    }
    Ok(summary)
}

/// `orchestrator report`: the summary on stdout (text or `--json`) and the plot beside the records.
pub fn run(args: &ReportArgs, repo: &Path) -> Result<()> {
    let tag = args.tag.clone().unwrap_or_else(crate::config::default_tag);
    let dir = RunDir::new(repo, &tag);
    let records = read_run(repo, &tag)?;
    let summary = summarize(&tag, &dir, &records)?;
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
