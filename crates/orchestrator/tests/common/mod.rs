//! A sandbox for end-to-end runs: a git repository holding a copy of this workspace's tracked
//! files, `prepare`'s tiny dataset, and a cargo target directory shared by all such copies (not
//! the workspace's own, whose `train` binary the copies would overwrite, but seeded from it: see
//! [`sandbox_target`]).

#![allow(dead_code)]

pub mod llm;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

pub struct Sandbox {
    _dir: tempfile::TempDir,
    pub repo: PathBuf,
    pub data: PathBuf,
}

/// The trainer's CPU learning-rate line as shipped, and crippled: a baseline with the crippled one
/// leaves restoring it as a clear gain for a scripted agent to make.
pub const GOOD: &str = "const CPU_LR_SCALE: f64 = 0.25;";
pub const CRIPPLED: &str = "const CPU_LR_SCALE: f64 = 0.0001;";

/// The runs share one target directory and so must not overlap.
pub static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

impl Sandbox {
    pub fn new() -> Sandbox {
        let dir = tempfile::tempdir().unwrap();
        // Reachable by `nobody`, whom the jails run as where the tests run as root.
        std::fs::set_permissions(
            dir.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .unwrap();
        let root = prepare::workspace_root();
        let repo = dir.path().join("repo");
        fixtures::copy_workspace(&repo).unwrap();
        std::os::unix::fs::symlink(
            root.join(".libtorch").canonicalize().unwrap(),
            repo.join(".libtorch"),
        )
        .unwrap();
        for args in [
            &["init", "--quiet", "-b", "main"][..],
            &["add", "--all"],
            &["commit", "--quiet", "-m", "workspace"],
        ] {
            git(&repo, args);
        }
        let data = fixtures::tiny_dataset(dir.path()).unwrap();
        Sandbox {
            _dir: dir,
            repo,
            data,
        }
    }

    /// Commits a baseline whose trainer has the [`CRIPPLED`] learning rate, with `settings` as
    /// its autoresearch.toml.
    pub fn crippled_baseline(&self, settings: &str) {
        let main_rs = self.repo.join("crates/train/src/main.rs");
        let source = std::fs::read_to_string(&main_rs).unwrap();
        assert!(source.contains(GOOD), "the tests edit {GOOD:?}");
        std::fs::write(&main_rs, source.replace(GOOD, CRIPPLED)).unwrap();
        std::fs::write(self.repo.join("autoresearch.toml"), settings).unwrap();
        self.git(&["commit", "--quiet", "-am", "crippled baseline"]);
    }

    /// Commits `settings` as the repository's autoresearch.toml.
    pub fn settings(&self, settings: &str) {
        commit_settings(&self.repo, settings);
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_orchestrator"));
        command
            .args(args)
            .current_dir(&self.repo)
            .env(prepare::DATA_ENV, &self.data)
            .env("CARGO_TARGET_DIR", sandbox_target())
            .env("LIBTORCH", libtorch())
            .env_remove("OPENAI_BASE_URL")
            .env_remove("OPENAI_API_KEY");
        command
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().unwrap()
    }

    pub fn spawn(&self, args: &[&str]) -> Child {
        self.command(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    }

    pub fn records(&self, tag: &str) -> Vec<serde_json::Value> {
        let path = self.repo.join("runs").join(tag).join("experiments.jsonl");
        std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    pub fn git(&self, args: &[&str]) -> String {
        git(&self.repo, args)
    }

    /// The run's own checkout, where its experiments are made.
    pub fn worktree(&self, tag: &str) -> PathBuf {
        self.repo.join("runs").join(tag).join("worktree")
    }
}

/// The target directory the sandboxes' builds share, `target/sandbox-target`, or the one under
/// `target/` that `AUTORESEARCH_SANDBOX_TARGET` names: a suite run beside the others
/// (scripts/test.sh runs the Slurm suite so) needs one of its own, since runs that share one must
/// not overlap (see [`SERIAL`]). The first test to use it seeds it from the tests' own
/// `target/release`, which holds tch and every other dependency built already: their units are
/// the same (one feature set each, see crates/workspace-hack), so the sandboxes compile only the
/// workspace's own crates rather than minutes of C++ and Rust again. Cargo still judges every unit
/// by its fingerprint, so the seed can only save work: a copied unit that does not match is
/// rebuilt.
pub fn sandbox_target() -> PathBuf {
    static TARGET: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    TARGET
        .get_or_init(|| {
            let exe = std::env::current_exe().unwrap();
            let release = exe.ancestors().nth(2).unwrap();
            let name = std::env::var("AUTORESEARCH_SANDBOX_TARGET");
            let target = release
                .parent()
                .unwrap()
                .join(name.as_deref().unwrap_or("sandbox-target"));
            if !target.exists() {
                seed(release, &target);
            }
            target
        })
        .clone()
}

/// The libtorch the tests' own build used (as `LIBTORCH` says, from the environment or
/// .cargo/config.toml, else the workspace's `.libtorch`), not the copy's own link: tch's build
/// script runs again whenever that path changes.
fn libtorch() -> PathBuf {
    std::env::var_os("LIBTORCH").map_or_else(
        || prepare::workspace_root().join(".libtorch"),
        PathBuf::from,
    )
}

/// Copies what cargo needs to find `release`'s units fresh (fingerprints, build scripts and their
/// output, libraries; not the test executables) into `target/release`, through a directory of its
/// own renamed into place, so a test binary running beside this one sees all of it or none.
fn seed(release: &Path, target: &Path) {
    let staging = target.with_extension(format!("seed-{}", std::process::id()));
    let into = staging.join("release");
    copy_dated(
        &release.join(".fingerprint"),
        &into.join(".fingerprint"),
        &|_| true,
    );
    copy_dated(&release.join("build"), &into.join("build"), &|_| true);
    copy_dated(&release.join("deps"), &into.join("deps"), &|name| {
        name.starts_with("lib")
    });
    if std::fs::rename(&staging, target).is_err() {
        // Another test binary seeded it first.
        std::fs::remove_dir_all(&staging).unwrap();
    }
}

/// Copies the files under `from` whose names pass `keep` (every file below a directory that
/// passes), with their modification times: cargo tells a stale unit by them.
fn copy_dated(from: &Path, to: &Path, keep: &dyn Fn(&str) -> bool) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).into_iter().flatten() {
        let entry = entry.unwrap();
        let name = entry.file_name();
        if !keep(&name.to_string_lossy()) {
            continue;
        }
        let (source, target) = (entry.path(), to.join(&name));
        let meta = entry.metadata().unwrap();
        if meta.is_dir() {
            copy_dated(&source, &target, &|_| true);
        } else if meta.is_file() {
            std::fs::copy(&source, &target).unwrap();
            std::fs::File::open(&target)
                .and_then(|f| f.set_modified(meta.modified()?))
                .unwrap();
        }
    }
}

/// Commits `settings` as `repo`'s autoresearch.toml.
pub fn commit_settings(repo: &Path, settings: &str) {
    std::fs::write(repo.join("autoresearch.toml"), settings).unwrap();
    git(repo, &["add", "autoresearch.toml"]);
    git(repo, &["commit", "--quiet", "-m", "settings"]);
}

pub fn git(repo: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .arg("-C")
        .arg(repo)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}
