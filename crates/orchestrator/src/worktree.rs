//! The experiments' own checkout: a git worktree of the run's branch at `runs/<tag>/worktree`.
//! The agent edits there, the guard checks there, discards and resumes reset there; the person's
//! checkout keeps its branch, its `program.md` edits and any other work through the night. No
//! jail binds the checkout's `.git` (the worktree's `.git` is a file naming it), so no build or
//! trainer can reach its hooks or its config.

use std::path::{Path, PathBuf};

use anyhow::{Result, bail};

use crate::config::Config;
use crate::git::Git;
use crate::ledger::Ledger;

/// The run's worktree, ready: a new one on a new branch from the checkout's HEAD, or on
/// `--resume` the existing one (added again if it was removed) at the best commit.
pub fn open(cfg: &Config, ledger: &Ledger) -> Result<PathBuf> {
    let checkout = Git::new(&cfg.repo);
    let branch = cfg.branch();
    let dir = cfg.run_dir().join("worktree");
    if cfg.resume {
        if !checkout.branch_exists(&branch) {
            bail!("there is no branch {branch} to resume; start it without --resume");
        }
        checkout.run(&["worktree", "prune"])?;
        if !dir.join(".git").exists() {
            add(&checkout, &dir, &branch)?;
        }
        let git = Git::new(&dir);
        git.run(&["checkout", "--quiet", "--force", &branch])?;
        if let Some(best) = ledger.best() {
            git.reset_to(&best.commit)?;
        }
        return Ok(dir);
    }
    // program.md is read from the checkout itself, as it is; any other uncommitted change would
    // silently not be part of the run, which starts from HEAD.
    let dirty: Vec<String> = checkout
        .dirty_tracked()?
        .into_iter()
        .filter(|line| !line.ends_with(" program.md"))
        .collect();
    if !dirty.is_empty() {
        bail!(
            "the checkout has uncommitted changes to tracked files, which the run (starting from \
             HEAD) would not see; commit or stash them first:\n{}",
            dirty.join("\n")
        );
    }
    if checkout.branch_exists(&branch) || !ledger.records.is_empty() {
        bail!("{branch} already exists; continue it with --resume, or choose another --tag");
    }
    if dir.exists() {
        bail!(
            "{} is left from an earlier start; remove it (git worktree remove --force {0}) or \
             choose another --tag",
            dir.display()
        );
    }
    checkout.run(&["branch", &branch, "HEAD"])?;
    add(&checkout, &dir, &branch)?;
    Ok(dir)
}

fn add(checkout: &Git, dir: &Path, branch: &str) -> Result<()> {
    checkout.run(&[
        "worktree",
        "add",
        "--quiet",
        &dir.display().to_string(),
        branch,
    ])?;
    Ok(())
}
