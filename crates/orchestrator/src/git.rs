//! The git side of the loop, through the `git` command line: one branch per tag, one commit per
//! experiment, discarded commits kept reachable under `refs/autoresearch/<tag>/discarded/<n>`.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

/// The only directory the agent may change.
pub const EDITABLE: &str = "crates/train/src";

pub struct Git {
    repo: PathBuf,
    /// A stand-in identity for commits on a machine where git has none configured.
    fallback_identity: bool,
}

impl Git {
    pub fn new(repo: &Path) -> Git {
        let mut git = Git {
            repo: repo.to_path_buf(),
            fallback_identity: false,
        };
        git.fallback_identity = git.run(&["config", "user.email"]).is_err();
        git
    }

    /// The top of the repository holding `dir`.
    pub fn toplevel(dir: &Path) -> Result<PathBuf> {
        let out = Command::new("git")
            .arg("-C")
            .arg(dir)
            .args(["rev-parse", "--show-toplevel"])
            .output()
            .context("running git; is it installed?")?;
        if !out.status.success() {
            bail!(
                "{} is not inside a git repository; run the orchestrator from the project's checkout",
                dir.display()
            );
        }
        Ok(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
    }

    pub fn run(&self, args: &[&str]) -> Result<String> {
        let mut command = Command::new("git");
        // No hooks: the loop's commits and resets run nothing a file in the repository names.
        command
            .arg("-C")
            .arg(&self.repo)
            .args(["-c", "core.hooksPath=/dev/null"])
            .args(args);
        if self.fallback_identity {
            for (var, value) in [
                ("GIT_AUTHOR_NAME", "autoresearch"),
                ("GIT_AUTHOR_EMAIL", "autoresearch@localhost"),
                ("GIT_COMMITTER_NAME", "autoresearch"),
                ("GIT_COMMITTER_EMAIL", "autoresearch@localhost"),
            ] {
                command.env(var, value);
            }
        }
        let out = command
            .output()
            .with_context(|| format!("running git {}", args.join(" ")))?;
        if !out.status.success() {
            bail!(
                "git {} failed: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    pub fn head(&self) -> Result<String> {
        self.run(&["rev-parse", "HEAD"])
    }

    pub fn branch_exists(&self, branch: &str) -> bool {
        self.run(&[
            "rev-parse",
            "--verify",
            "--quiet",
            &format!("refs/heads/{branch}"),
        ])
        .is_ok()
    }

    /// Tracked files with changes, as `git status --porcelain` lines.
    pub fn dirty_tracked(&self) -> Result<Vec<String>> {
        Ok(self
            .run(&["status", "--porcelain", "--untracked-files=no"])?
            .lines()
            .map(String::from)
            .collect())
    }

    /// Files outside the editable directory that differ from `base` (program.md, the human's
    /// file, excepted): changes to tracked files, and files added where the build would see them.
    pub fn changed_outside_editable(&self, base: &str) -> Result<Vec<String>> {
        let tracked = self.run(&["diff", "--name-only", base, "--"])?;
        let untracked = self.run(&[
            "ls-files",
            "--others",
            "--exclude-standard",
            "--",
            "crates",
            ".cargo",
            "build.rs",
        ])?;
        let mut outside: Vec<String> = tracked
            .lines()
            .chain(untracked.lines())
            .filter(|f| !f.starts_with(&format!("{EDITABLE}/")) && *f != "program.md")
            .map(String::from)
            .collect();
        outside.sort();
        outside.dedup();
        Ok(outside)
    }

    /// The old and new text of each file under the editable directory that differs between two
    /// commits (empty for a side where the file does not exist).
    pub fn editable_changes(&self, from: &str, to: &str) -> Result<Vec<(String, String)>> {
        let names = self.run(&["diff", "--name-only", from, to, "--", EDITABLE])?;
        let show = |commit: &str, file: &str| {
            self.run(&["show", &format!("{commit}:{file}")])
                .unwrap_or_default()
        };
        Ok(names
            .lines()
            .map(|f| (show(from, f), show(to, f)))
            .collect())
    }

    /// Commits everything under the editable directory; None when nothing changed.
    pub fn commit_editable(&self, message: &str) -> Result<Option<String>> {
        self.run(&["add", "--all", "--", EDITABLE])?;
        if self.run(&["diff", "--cached", "--quiet"]).is_ok() {
            return Ok(None);
        }
        self.run(&["commit", "--quiet", "--no-verify", "-m", message])?;
        self.head().map(Some)
    }

    /// Keeps `commit` reachable, then puts the branch and the working tree back at `best`.
    pub fn discard(&self, tag: &str, n: u64, commit: &str, best: &str) -> Result<()> {
        self.run(&[
            "update-ref",
            &format!("refs/autoresearch/{tag}/discarded/{n}"),
            commit,
        ])?;
        self.reset_to(best)
    }

    /// Hard reset to `commit`, also removing untracked files the agent left in its directory.
    pub fn reset_to(&self, commit: &str) -> Result<()> {
        self.run(&["reset", "--quiet", "--hard", commit])?;
        self.run(&["clean", "--quiet", "-fd", "--", EDITABLE])?;
        Ok(())
    }
}
