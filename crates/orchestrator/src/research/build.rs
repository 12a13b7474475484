//! Build with repairs: cargo builds the trainer; compiler errors go back to the agent for a
//! bounded number of repair rounds, each committed. A build that still fails leaves the
//! compiler's errors in the experiment's log, where the agent's brief quotes them.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Result, bail};

use super::session::{Session, Worker};
use super::{Experiment, Failure};
use crate::cargo_build::Build;
use crate::ledger;
use crate::text::tail;

/// Lines of compiler errors shown on the console per failed build.
const CONSOLE_LINES: usize = 20;

pub(super) enum Built {
    /// The trainer cargo built.
    Binary(PathBuf),
    Failed(Failure),
}

pub(super) async fn with_repairs(
    s: &Session,
    w: &mut Worker,
    experiment: &mut Experiment,
) -> Result<Built> {
    let started = Instant::now();
    let pending = &mut experiment.pending;
    w.progress.phase("building");
    let mut build = s.builder.trainer(&w.worktree, &s.cfg.target_dir).await?;
    let mut repairs = 0;
    while let Build::Failed { diagnostics } = &build {
        if pending.seq == 0 {
            bail!("the unmodified trainer does not build; fix it before a run:\n{diagnostics}");
        }
        w.progress.println(&format!(
            "{}#{} build failed:\n{}",
            w.name,
            pending.seq,
            tail(diagnostics, CONSOLE_LINES)
        ));
        if repairs == s.cfg.settings.max_repairs() {
            break;
        }
        let Some(repaired) = w.agent.repair(diagnostics, &w.ws).await else {
            break;
        };
        let tokens = repaired?.tokens;
        pending.agent_tokens += tokens.total();
        pending.agent_usage += tokens;
        s.spend(tokens);
        repairs += 1;
        let message = format!("{} (repair {repairs})", pending.description);
        if let Some(commit) = w.git.commit_editable(&message)? {
            pending.commit = commit;
            s.pendings.write(pending)?;
        }
        w.progress.phase("building");
        build = s.builder.trainer(&w.worktree, &s.cfg.target_dir).await?;
    }
    experiment.build_seconds = started.elapsed().as_secs_f64();
    Ok(match build {
        Build::Built { binary } => Built::Binary(binary),
        Build::Failed { diagnostics } => {
            ledger::write_log(
                &s.cfg.run_dir,
                experiment.pending.seq,
                &format!("build failed after {repairs} repair rounds:\n\n{diagnostics}\n"),
            )?;
            Built::Failed(Failure::Build { repairs })
        }
    })
}
