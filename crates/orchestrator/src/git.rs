//! The git side of the loop, through the `git` command line: one branch per tag, one commit per
//! experiment, discarded commits kept reachable under `refs/autoresearch/<tag>/discarded/<n>`.
//! The run's worktrees are detached: the branch marks the best and moves only with a keep.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::run_dir::RunDir;

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
        let out = self.run_raw(args)?;
        Ok(String::from_utf8_lossy(&out).trim().to_string())
    }

    /// `git ARGS`'s stdout as it is, bytes and trailing newline included (a patch).
    fn run_raw(&self, args: &[&str]) -> Result<Vec<u8>> {
        let out = self.output(args)?;
        if !out.status.success() {
            bail!(
                "git {} failed: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(out.stdout)
    }

    /// `git ARGS` run to its end, whatever its exit status.
    fn output(&self, args: &[&str]) -> Result<std::process::Output> {
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
        command
            .output()
            .with_context(|| format!("running git {}", args.join(" ")))
    }

    /// Whether `commit` is `descendant` or one of its ancestors.
    pub fn is_ancestor(&self, commit: &str, descendant: &str) -> Result<bool> {
        let out = self.output(&["merge-base", "--is-ancestor", commit, descendant])?;
        match out.status.code() {
            Some(0) => Ok(true),
            Some(1) => Ok(false),
            _ => bail!(
                "git merge-base --is-ancestor {commit} {descendant} failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        }
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

    /// The text of each `commit:path` in `specs`, None where there is no such file (one
    /// `git cat-file --batch` for them all: a run's history is hundreds of commits).
    pub fn show_files(&self, specs: &[String]) -> Result<Vec<Option<String>>> {
        use std::io::{BufRead, Read, Write};
        let mut child = Command::new("git")
            .arg("-C")
            .arg(&self.repo)
            .args(["cat-file", "--batch"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .context("running git cat-file")?;
        let mut stdin = child.stdin.take().context("git cat-file's stdin")?;
        let input = specs.join("\n") + "\n";
        // Written from a thread: git answers as it reads, and a full pipe would block both.
        let writer = std::thread::spawn(move || stdin.write_all(input.as_bytes()));
        let mut out = std::io::BufReader::new(child.stdout.take().context("git's stdout")?);
        let mut texts = Vec::new();
        for spec in specs {
            let mut header = String::new();
            out.read_line(&mut header)?;
            // `<sha> blob <size>`, or `<spec> missing`.
            let size = match header.split_whitespace().collect::<Vec<_>>()[..] {
                [_, "blob", size] => size.parse::<usize>().ok(),
                _ => None,
            };
            let Some(size) = size else {
                if header.is_empty() {
                    bail!("git cat-file stopped before {spec}");
                }
                texts.push(None);
                continue;
            };
            let mut blob = vec![0; size + 1]; // and its newline
            out.read_exact(&mut blob)?;
            blob.pop();
            texts.push(Some(String::from_utf8_lossy(&blob).into_owned()));
        }
        writer.join().ok();
        child.wait()?;
        Ok(texts)
    }

    /// The text of `path` at `commit`.
    pub fn file_at(&self, commit: &str, path: &str) -> Result<String> {
        let spec = format!("{commit}:{path}");
        self.show_files(std::slice::from_ref(&spec))?
            .pop()
            .flatten()
            .with_context(|| format!("{spec} does not exist"))
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

    /// Moves `branch` to `commit`, a new best. Every worktree of the run works detached, so the
    /// branch is only ever moved here. A best that `commit` does not descend from (a change that
    /// beat it from an older parent) stays reachable under `refs/autoresearch/<tag>/superseded/<n>`.
    pub fn keep(&self, branch: &str, tag: &str, n: u64, commit: &str) -> Result<()> {
        let branch = format!("refs/heads/{branch}");
        let previous = self.run(&["rev-parse", &branch])?;
        if self
            .run(&["merge-base", "--is-ancestor", &previous, commit])
            .is_err()
        {
            self.run(&[
                "update-ref",
                &format!("refs/autoresearch/{tag}/superseded/{n}"),
                &previous,
            ])?;
        }
        self.run(&["update-ref", &branch, commit])?;
        Ok(())
    }

    /// Keeps `commit` reachable, then puts the working tree back at `best`.
    pub fn discard(&self, tag: &str, n: u64, commit: &str, best: &str) -> Result<()> {
        self.run(&[
            "update-ref",
            &format!("refs/autoresearch/{tag}/discarded/{n}"),
            commit,
        ])?;
        self.reset_to(best)
    }

    /// The change from `parent` to `commit` (the trainer's directory only) applied onto `onto`
    /// and committed with `message`; None, and the working tree back at `onto`, when it does not
    /// apply. First as a three-way merge (lines that moved); then hunk by hunk without context
    /// lines, as a change to a line next to one the new best changed (two constants on
    /// neighbouring lines) conflicts in a merge, yet each line it replaces is still there as it was.
    pub fn reapply(
        &self,
        parent: &str,
        commit: &str,
        onto: &str,
        message: &str,
    ) -> Result<Option<String>> {
        let patch = RunDir::beside_worktree(&self.repo, "patch");
        let attempts: [(&str, &[&str]); 2] = [("-U3", &["--3way"]), ("-U0", &["--unidiff-zero"])];
        for (context, how) in attempts {
            self.reset_to(onto)?;
            let diff =
                self.run_raw(&["diff", "--binary", context, parent, commit, "--", EDITABLE])?;
            std::fs::write(&patch, diff).with_context(|| format!("writing {}", patch.display()))?;
            let path = patch.display().to_string();
            let applied = self.run(&[&["apply", "--index"], how, &[path.as_str()]].concat());
            std::fs::remove_file(&patch).ok();
            if applied.is_ok() {
                return self.commit_editable(message);
            }
        }
        self.reset_to(onto)?;
        Ok(None)
    }

    /// Hard reset to `commit`, also removing untracked files the agent left in its directory.
    pub fn reset_to(&self, commit: &str) -> Result<()> {
        self.run(&["reset", "--quiet", "--hard", commit])?;
        self.run(&["clean", "--quiet", "-fd", "--", EDITABLE])?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A repository whose trainer has three constants on neighbouring lines.
    fn repo() -> (tempfile::TempDir, Git) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join(EDITABLE)).unwrap();
        let git = Git::new(dir.path());
        git.run(&["init", "--quiet"]).unwrap();
        (dir, git)
    }

    fn commit(git: &Git, dir: &Path, text: &str) -> String {
        std::fs::write(dir.join(EDITABLE).join("main.rs"), text).unwrap();
        git.commit_editable(text).unwrap().unwrap()
    }

    #[test]
    fn a_change_to_a_neighbouring_line_is_reapplied_and_a_conflict_is_not() {
        let (dir, git) = repo();
        let parent = commit(
            &git,
            dir.path(),
            "const A: i64 = 1;\nconst B: i64 = 2;\nconst C: i64 = 3;\n",
        );
        let best = commit(
            &git,
            dir.path(),
            "const A: i64 = 10;\nconst B: i64 = 2;\nconst C: i64 = 3;\n",
        );
        git.reset_to(&parent).unwrap();
        let change = commit(
            &git,
            dir.path(),
            "const A: i64 = 1;\nconst B: i64 = 20;\nconst C: i64 = 3;\n",
        );
        let both = git
            .reapply(&parent, &change, &best, "B up")
            .unwrap()
            .unwrap();
        assert_eq!(
            git.run(&["show", &format!("{both}:{EDITABLE}/main.rs")])
                .unwrap(),
            "const A: i64 = 10;\nconst B: i64 = 20;\nconst C: i64 = 3;"
        );
        assert_eq!(git.run(&["rev-parse", &format!("{both}^")]).unwrap(), best);

        git.reset_to(&parent).unwrap();
        let rival = commit(
            &git,
            dir.path(),
            "const A: i64 = 5;\nconst B: i64 = 2;\nconst C: i64 = 3;\n",
        );
        assert_eq!(git.reapply(&parent, &rival, &best, "A to 5").unwrap(), None);
        assert!(git.is_ancestor(&best, &both).unwrap());
        assert!(!git.is_ancestor(&change, &both).unwrap());
        assert_eq!(git.head().unwrap(), best, "left at the best");
        assert!(git.dirty_tracked().unwrap().is_empty());
    }
}
