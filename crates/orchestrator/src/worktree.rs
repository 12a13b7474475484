//! The experiments' own checkouts: git worktrees of the run, one per worker, at
//! `runs/<tag>/worktree` (the first) and `runs/<tag>/workers/<k>` (the others), each detached at
//! the commit its worker is on; the branch marks the best. The agents edit there, the guard checks
//! there, discards and resumes reset there; the person's checkout keeps its branch, its
//! `program.md` edits and any other work through the night. No jail binds the checkout's `.git`
//! (a worktree's `.git` is a file naming it), so no build or trainer can reach its hooks or its
//! config.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use crate::config::Config;
use crate::git::Git;
use crate::ledger::Ledger;
use crate::run_dir::RunDir;

/// The run's `workers` worktrees, ready at the best commit: new ones on a new branch from the
/// checkout's HEAD (or what `--from` names), or on `--resume` the existing ones (added where
/// missing).
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
    if checkout.branch_exists(&branch) || !ledger.records.is_empty() {
        bail!("{branch} already exists; continue it with --resume, or choose another --tag");
    }
    let start = match &cfg.settings.from {
        Some(reference) => start_commit(cfg, &checkout, reference)?,
        None => head_when_clean(&checkout)?,
    };
    if let Some(dir) = dirs.iter().find(|d| d.exists()) {
        bail!(
            "{} is left from an earlier start; remove it (git worktree remove --force {0}) or \
             choose another --tag",
            dir.display()
        );
    }
    checkout.run(&["branch", &branch, &start])?;
    for dir in &dirs {
        add(&checkout, dir, &branch)?;
    }
    Ok(dirs)
}

/// The checkout's HEAD, which a run without `--from` starts from.
fn head_when_clean(checkout: &Git) -> Result<String> {
    // program.md and memory.md are read from the checkout itself, as they are; any other
    // uncommitted change would silently not be part of the run, which starts from HEAD.
    let dirty: Vec<String> = checkout
        .dirty_tracked()?
        .into_iter()
        .filter(|line| !line.ends_with(" program.md") && !line.ends_with(" memory.md"))
        .collect();
    if !dirty.is_empty() {
        bail!(
            "the checkout has uncommitted changes to tracked files, which the run (starting from \
             HEAD) would not see; commit or stash them first:\n{}",
            dirty.join("\n")
        );
    }
    checkout.head()
}

/// The commit `--from REF` names: `TAG:SEQ`, experiment SEQ of run TAG (kept or discarded: its
/// commit stays reachable), else any commit or branch git knows.
fn start_commit(cfg: &Config, checkout: &Git, reference: &str) -> Result<String> {
    let commit = match reference.split_once(':') {
        Some((tag, seq)) if !seq.is_empty() && seq.bytes().all(|b| b.is_ascii_digit()) => {
            let run = RunDir::new(&cfg.repo, tag);
            if !run.experiments().exists() {
                bail!(
                    "--from {reference}: there is no run {tag} ({} does not exist); name a run \
                     under runs/, a commit or a branch",
                    run.experiments().display()
                );
            }
            let records = crate::ledger::read_records(&run)?;
            let seq: u64 = seq.parse().with_context(|| format!("--from {reference}"))?;
            let Some(record) = records.iter().find(|r| r.seq == seq) else {
                bail!(
                    "--from {reference}: run {tag} recorded no experiment {seq} (it has {} \
                     records; see runs/{tag}/results.tsv)",
                    records.len()
                );
            };
            record.commit.clone()
        }
        _ => reference.to_string(),
    };
    checkout
        .run(&[
            "rev-parse",
            "--verify",
            "--quiet",
            &format!("{commit}^{{commit}}"),
        ])
        .map_err(|_| {
            anyhow::anyhow!(
                "--from {reference}: {commit} is not a commit, branch or TAG:SEQ (an experiment \
                 of a run under runs/) in this repository"
            )
        })
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
