//! The experiments' own checkouts: git worktrees of the run, one per worker, at
//! `runs/<tag>/worktree` (the first) and `runs/<tag>/workers/<k>` (the others), each detached at
//! the commit its worker is on; the branch marks the best. The agents edit there, the guard checks
//! there, discards and resumes reset there; the person's checkout keeps its branch, its
//! `program.md` edits and any other work through the night. No jail binds the checkout's `.git`
//! (a worktree's `.git` is a file naming it), so no build or trainer can reach its hooks or its
//! config.

use std::path::{Path, PathBuf};

use anyhow::{Result, bail};

use crate::config::Config;
use crate::git::Git;
use crate::ledger::Ledger;

/// The run's `workers` worktrees, ready at the best commit: new ones on a new branch from the
/// checkout's HEAD, or on `--resume` the existing ones (added where missing).
pub fn open(cfg: &Config, ledger: &Ledger, workers: usize) -> Result<Vec<PathBuf>> {
    let checkout = Git::new(&cfg.repo);
    let branch = cfg.branch();
    let dirs: Vec<PathBuf> = (0..workers).map(|k| cfg.run_dir.worktree(k)).collect();
    if cfg.settings.resume {
        if !checkout.branch_exists(&branch) {
            bail!("there is no branch {branch} to resume; start it without --resume");
        }
        checkout.run(&["worktree", "prune"])?;
        let best = ledger.best().map_or(branch.clone(), |b| b.commit.clone());
        for dir in &dirs {
            if !dir.join(".git").exists() {
                add(&checkout, dir, &branch)?;
            }
            // A run from before workers has its branch checked out here: detached from now on.
            let git = Git::new(dir);
            git.run(&["checkout", "--quiet", "--force", "--detach", &branch])?;
            git.reset_to(&best)?;
        }
        return Ok(dirs);
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
    if let Some(dir) = dirs.iter().find(|d| d.exists()) {
        bail!(
            "{} is left from an earlier start; remove it (git worktree remove --force {0}) or \
             choose another --tag",
            dir.display()
        );
    }
    checkout.run(&["branch", &branch, "HEAD"])?;
    for dir in &dirs {
        add(&checkout, dir, &branch)?;
    }
    Ok(dirs)
}

fn add(checkout: &Git, dir: &Path, branch: &str) -> Result<()> {
    checkout.run(&[
        "worktree",
        "add",
        "--quiet",
        "--detach",
        &dir.display().to_string(),
        branch,
    ])?;
    Ok(())
}
