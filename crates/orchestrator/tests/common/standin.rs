//! A stand-in trainer for driving the real loop quickly: a git repository holding a copy of
//! `tests/fixtures/standin`, a tiny Cargo workspace laid out like this one (`crates/train` with the
//! bins `train` and `evaluate`, its rule tests in `rules.rs`, `program.md`) but with no dependency
//! at all, so a build takes about a second and `cargo fetch` needs no network, plus `prepare`'s
//! tiny dataset. Everything else is the real thing: git, the sandboxed cargo builds, the executor,
//! the evaluator protocol (`--result-fd`), the ledger and the decisions.
//!
//! The stand-in trainer keeps the real trainer's contract (its environment, the result line, the
//! export) without a model: it "trains" by sleeping exactly its time budget and exports a file
//! holding a scripted score, a smooth function of its numeric `const`s (which the offline agent
//! tunes) with an optimum away from where they start, plus noise fixed by the constants and the
//! seed. The stand-in evaluator reads that score back and writes the verdict to the descriptor it
//! is given. Too deep a model runs "out of memory" (a crash), too high a learning rate diverges
//! (a crash with a result line); the fixture's `main.rs` says where.
//!
//! Used from test files as `mod common; #[path = "common/standin.rs"] mod standin;`.

#![allow(dead_code)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

use crate::common::git;

/// The stand-in workspace, copied file by file into each test's repository.
const FIXTURE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/standin");

/// The stand-in trainer's source as shipped.
pub fn trainer() -> String {
    std::fs::read_to_string(Path::new(FIXTURE).join("crates/train/src/main.rs")).unwrap()
}

/// The knob lines of the other configuration (`const GPU_...`): on a CPU run the offline agent
/// must leave them as they are.
pub fn gpu_knobs() -> Vec<String> {
    trainer()
        .lines()
        .filter(|line| line.starts_with("const GPU_"))
        .map(str::to_string)
        .collect()
}

pub struct Standin {
    dir: tempfile::TempDir,
    pub repo: PathBuf,
    pub data: PathBuf,
    /// The cargo target directory of the evaluator and the trainers.
    pub target: PathBuf,
    /// An empty directory passed as `LIBTORCH`: the stand-in links no libtorch, but the loop
    /// sets one up (and the sandbox binds it) all the same.
    pub libtorch: PathBuf,
}

impl Standin {
    /// The stand-in workspace, committed on `main`, and the tiny dataset.
    pub fn new() -> Standin {
        let dir = tempfile::tempdir().unwrap();
        let repo = dir.path().join("repo");
        copy_tree(Path::new(FIXTURE), &repo);
        // The lock file as this cargo writes it: the sandboxed builds run offline in a read-only
        // checkout, where cargo could not update it.
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let out = Command::new(cargo)
            .args(["generate-lockfile", "--offline"])
            .current_dir(&repo)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "cargo generate-lockfile: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        for args in [
            &["init", "--quiet", "-b", "main"][..],
            &["add", "--all"],
            &["commit", "--quiet", "-m", "stand-in workspace"],
        ] {
            git(&repo, args);
        }
        let data = fixtures::tiny_dataset(dir.path()).unwrap();
        let libtorch = dir.path().join("libtorch");
        std::fs::create_dir_all(libtorch.join("lib")).unwrap();
        Standin {
            target: dir.path().join("target"),
            repo,
            data,
            libtorch,
            dir,
        }
    }

    /// The temporary directory holding everything (the repository, the data, the target).
    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    /// Commits `settings` as the repository's autoresearch.toml.
    pub fn settings(&self, settings: &str) {
        crate::common::commit_settings(&self.repo, settings);
    }

    /// The orchestrator with `args`, on the stand-in, on the CPU configuration.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_orchestrator"));
        command
            .args(args)
            .current_dir(&self.repo)
            .env(prepare::DATA_ENV, &self.data)
            .env(prepare::DEVICE_ENV, "cpu")
            .env("CARGO_TARGET_DIR", &self.target)
            .env("LIBTORCH", &self.libtorch)
            .env_remove("AUTORESEARCH_WORKERS")
            .env_remove("AUTORESEARCH_MODEL")
            .env_remove("OPENAI_BASE_URL")
            .env_remove("OPENAI_API_KEY");
        command
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().unwrap()
    }

    /// Started in the background, its stderr to `runs/<stderr_name>` beside the run (so a test
    /// can read it after a kill).
    pub fn spawn(&self, args: &[&str], stderr: &Path) -> Child {
        let log = std::fs::File::create(stderr).unwrap();
        self.command(args)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap()
    }

    pub fn run_dir(&self, tag: &str) -> PathBuf {
        self.repo.join("runs").join(tag)
    }

    pub fn records(&self, tag: &str) -> Vec<serde_json::Value> {
        std::fs::read_to_string(self.run_dir(tag).join("experiments.jsonl"))
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    /// The experiments recorded as pending: `pending.json` (one at a time) and `pending/<seq>.json`
    /// (several, with workers).
    pub fn pending(&self, tag: &str) -> BTreeSet<u64> {
        let dir = self.run_dir(tag);
        let mut seqs = BTreeSet::new();
        if let Ok(text) = std::fs::read_to_string(dir.join("pending.json")) {
            let pending: serde_json::Value = serde_json::from_str(&text).unwrap();
            seqs.insert(pending["seq"].as_u64().unwrap());
        }
        for entry in std::fs::read_dir(dir.join("pending")).into_iter().flatten() {
            let name = entry.unwrap().file_name().to_string_lossy().into_owned();
            if let Some(seq) = name.strip_suffix(".json").and_then(|s| s.parse().ok()) {
                seqs.insert(seq);
            }
        }
        seqs
    }

    /// Trainers running now: their export directories (`export-<seq>.<k>`), which exist from
    /// just before a trainer starts until it has finished, wherever under the run they are.
    pub fn in_flight(&self, tag: &str) -> Vec<String> {
        let mut found = Vec::new();
        let mut dirs = vec![(self.run_dir(tag), 0)];
        while let Some((dir, depth)) = dirs.pop() {
            for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                if !entry.file_type().is_ok_and(|t| t.is_dir()) || name == ".git" {
                    continue;
                }
                if name.starts_with("export-") {
                    found.push(name);
                } else if depth < 3 && name != "logs" && name != "crates" {
                    dirs.push((entry.path(), depth + 1));
                }
            }
        }
        found.sort();
        found
    }

    /// Processes still running that name a path of this stand-in (the loop's jails, trainers,
    /// builds and git), with their command lines.
    pub fn processes(&self) -> Vec<String> {
        let root = self.root().to_string_lossy().into_owned();
        let mut found = Vec::new();
        for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.parse::<u32>().is_err() {
                continue;
            }
            let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
                continue;
            };
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            if cmdline.contains(&root) {
                found.push(format!("{name}: {cmdline}"));
            }
        }
        found
    }

    pub fn git(&self, args: &[&str]) -> String {
        git(&self.repo, args)
    }

    /// The run's own checkout (with one worker), where its experiments are made.
    pub fn worktree(&self, tag: &str) -> PathBuf {
        self.run_dir(tag).join("worktree")
    }

    /// The trainer's source at `commit`.
    pub fn trainer_at(&self, commit: &str) -> String {
        self.git(&["show", &format!("{commit}:crates/train/src/main.rs")])
    }
}

/// Copies the files under `from` to `to`, directories included.
fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}
