//! The morning report: a summary of a run's experiments and `runs/<tag>/progress.png`.

use std::path::Path;

use anyhow::Result;

use crate::config::ReportArgs;

pub fn run(_args: &ReportArgs, _repo: &Path) -> Result<()> {
    anyhow::bail!("report: not written yet")
}
