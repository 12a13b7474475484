//! A stand-in trainer for driving the real loop quickly: a git repository that is a tiny Cargo
//! workspace laid out like this one (`crates/train` with the bins `train` and `evaluate`, its
//! rule tests in `rules.rs`, `program.md`, `Cargo.lock`) but with no dependency at all, so a
//! build takes about a second and `cargo fetch` needs no network, plus `prepare`'s tiny dataset.
//! Everything else is the real thing: git, the sandboxed cargo builds, the executor, the
//! evaluator protocol (`--result-fd`), the ledger and the decisions.
//!
//! The stand-in trainer keeps the real trainer's contract (its environment, the result line, the
//! export) without a model: it "trains" by sleeping exactly its time budget and exports a file
//! holding a scripted score, a smooth function of its numeric `const`s (which the offline agent
//! tunes) with an optimum away from where they start, plus noise (sigma [`NOISE`]) fixed by the
//! constants and the seed. The stand-in evaluator reads that score back and writes the verdict
//! to the descriptor it is given. A depth past [`MAX_DEPTH`] runs "out of memory" (a crash), a
//! learning rate past [`DIVERGES_AT`] diverges (a crash with a result line).
//!
//! Used from test files as `mod common; #[path = "common/standin.rs"] mod standin;`.

#![allow(dead_code)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

use crate::common::git;

/// The standard deviation of the scripted score between seeds.
pub const NOISE: f64 = 0.003;
/// The CPU depth past which the stand-in runs out of memory (crashes without a result line).
pub const MAX_DEPTH: i64 = 12;
/// The learning rate from which the stand-in diverges (status `diverged`, exit 1).
pub const DIVERGES_AT: f64 = 0.5;

/// The knobs as the stand-in starts, the constants of this machine's configuration (CPU_) and
/// the shared ones: the offline agent may change these lines.
pub const CPU_KNOBS: [&str; 6] = [
    "const CPU_LR: f64 = 0.01;",
    "const CPU_WARMUP: i64 = 10;",
    "const CPU_DEPTH: i64 = 2;",
    "const CPU_WIDTH: i64 = 64;",
    "const CPU_WARMDOWN_RATIO: f64 = 0.5;",
    "const WEIGHT_DECAY: f64 = 0.1;",
];
/// The other configuration's knobs: on a CPU run the offline agent must leave them as they are.
pub const GPU_KNOBS: [&str; 5] = [
    "const GPU_LR: f64 = 0.02;",
    "const GPU_WARMUP: i64 = 20;",
    "const GPU_DEPTH: i64 = 8;",
    "const GPU_WIDTH: i64 = 512;",
    "const GPU_WARMDOWN_RATIO: f64 = 0.5;",
];

const WORKSPACE_TOML: &str = r#"[workspace]
resolver = "3"
members = ["crates/*"]

# Built in a second: nothing to optimise in a program that sleeps.
[profile.release]
opt-level = 0
debug = false
incremental = true
"#;

const TRAIN_TOML: &str = r#"[package]
name = "train"
version = "0.1.0"
description = "A stand-in for the GPT trainer: sleeps its budget, exports a scripted score."
edition = "2024"
publish = false

[[bin]]
name = "train"
path = "src/main.rs"

[[bin]]
name = "evaluate"
path = "evaluate/main.rs"
"#;

const GITIGNORE: &str = "/target/\n/target-*/\n/runs/\n/data/\n";

const PROGRAM: &str = "# Stand-in research program\n\nTune the trainer's constants to lower val_bpb. \
The trainer is a stand-in: it sleeps its budget and reports a scripted score.\n";

/// The stand-in trainer, `crates/train/src/main.rs`.
const TRAINER: &str = r##"//! The stand-in trainer: no model and no libtorch. It keeps the real trainer's contract (the
//! environment it is given, one JSON result line on stdout, the export) and "trains" by sleeping
//! exactly its time budget; the model it exports is a scripted score, a smooth function of the
//! constants below with an optimum away from where they start, plus noise fixed by the constants
//! and the seed.

use std::time::{Duration, Instant};

// This machine's configuration: CPU_ on a CPU, GPU_ on a GPU; the rest are shared.
CPU_KNOBS
GPU_KNOBS

#[cfg(test)]
#[path = "../rules.rs"]
mod rules;

/// The knobs of one configuration.
#[derive(Debug, Clone, Copy)]
struct Knobs {
    lr: f64,
    warmup: f64,
    depth: f64,
    width: f64,
    warmdown_ratio: f64,
    weight_decay: f64,
}

fn knobs(cuda: bool) -> Knobs {
    if cuda {
        Knobs {
            lr: GPU_LR,
            warmup: GPU_WARMUP as f64,
            depth: GPU_DEPTH as f64,
            width: GPU_WIDTH as f64,
            warmdown_ratio: GPU_WARMDOWN_RATIO,
            weight_decay: WEIGHT_DECAY,
        }
    } else {
        Knobs {
            lr: CPU_LR,
            warmup: CPU_WARMUP as f64,
            depth: CPU_DEPTH as f64,
            width: CPU_WIDTH as f64,
            warmdown_ratio: CPU_WARMDOWN_RATIO,
            weight_decay: WEIGHT_DECAY,
        }
    }
}

/// The scripted val_bpb: 1.0 at the optimum, a quadratic bowl in the logarithm of every knob
/// (the offline agent steps them by factors), plus noise of standard deviation NOISE.
fn score(k: &Knobs, cuda: bool, seed: u64) -> f64 {
    let bowl = |x: f64, best: f64, weight: f64| weight * (x / best).ln().powi(2);
    let (lr, warmup, depth, width) = if cuda {
        (0.08, 80.0, 16.0, 768.0)
    } else {
        (0.04, 40.0, 4.0, 128.0)
    };
    1.0 + bowl(k.lr, lr, 0.02)
        + bowl(k.warmup, warmup, 0.008)
        + bowl(k.depth, depth, 0.03)
        + bowl(k.width, width, 0.01)
        + bowl(k.warmdown_ratio, 0.25, 0.01)
        + bowl(k.weight_decay, 0.1, 0.01)
        + NOISE_SIGMA * normal(k, seed)
}

/// A standard normal number fixed by the knobs and the seed (FNV-1a, splitmix64, Box-Muller).
fn normal(k: &Knobs, seed: u64) -> f64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for x in [k.lr, k.warmup, k.depth, k.width, k.warmdown_ratio, k.weight_decay, seed as f64] {
        for b in x.to_bits().to_le_bytes() {
            h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
    }
    let mut next = || {
        h = h.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = h;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64
    };
    let (u, v) = (next().max(1e-300), next());
    (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
}

/// The exported "model": its scripted score, read back by the protected evaluator.
fn model_text(bpb: f64, seed: u64) -> String {
    format!("standin-model 1\nbpb {bpb:.9}\nseed {seed}\n")
}

/// The runtime's progress line (docs/contract.md), which the orchestrator follows.
fn progress_line(seconds: f64, step: u64, loss: Option<f64>) -> String {
    let loss = loss.map_or("null".to_string(), |l| format!("{l:.4}"));
    format!("@progress {{\"seconds\":{seconds:.2},\"step\":{step},\"loss\":{loss}}}")
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    match std::env::var(name) {
        Ok(v) => v.parse().unwrap_or_else(|_| {
            eprintln!("{name}={v:?} does not parse");
            std::process::exit(2)
        }),
        Err(_) => default,
    }
}

fn main() {
    let started = Instant::now();
    let budget: f64 = env_or("AUTORESEARCH_TIME_BUDGET", 5.0);
    let seed: u64 = env_or("AUTORESEARCH_SEED", 42);
    let device: String = env_or("AUTORESEARCH_DEVICE", "cpu".to_string());
    let cuda = device == "cuda";
    // The data the orchestrator hands over must be there (in the sandbox: only the training
    // split, the tokenizer and the contract).
    let data: String = env_or("AUTORESEARCH_DATA", "data".to_string());
    let contract = std::path::Path::new(&data).join("contract.json");
    if !contract.is_file() {
        eprintln!("no prepared data: {} is missing", contract.display());
        std::process::exit(1);
    }
    let k = knobs(cuda);
    let max_depth = if cuda { 48.0 } else { MAX_DEPTH_F64 };
    eprintln!("stand-in | device {device} | {k:?} | budget {budget} s | seed {seed}");
    if k.depth > max_depth {
        eprintln!("out of memory: depth {} needs more than this machine has", k.depth);
        std::process::exit(101);
    }
    // Training: one "step" every 50 ms until the budget is spent, exactly.
    let step = Duration::from_millis(50);
    let budget_time = Duration::from_secs_f64(budget);
    let diverge_time = budget_time / 2;
    let diverges = k.lr >= DIVERGES_AT;
    let mut steps = 0u64;
    let mut status = "ok";
    let bpb = score(&k, cuda, seed);
    loop {
        let elapsed = started.elapsed();
        if elapsed >= budget_time {
            break;
        }
        if diverges && elapsed >= diverge_time {
            eprintln!("step {steps:05}: loss NaN, diverged");
            eprintln!("{}", progress_line(elapsed.as_secs_f64(), steps + 1, None));
            status = "diverged";
            break;
        }
        std::thread::sleep((budget_time - elapsed).min(step));
        steps += 1;
        let seconds = started.elapsed().as_secs_f64();
        if steps.is_multiple_of(20) || seconds >= budget {
            // The loss falls to the final score, so a worse program is behind all along.
            let progress = (seconds / budget).min(1.0);
            let loss = bpb + 3.0 * (1.0 - progress).powi(2);
            eprintln!(
                "step {steps:05} ({:.1}%) | loss {loss:.4} | remaining {:.0}s",
                100.0 * progress,
                (budget - seconds).max(0.0)
            );
            eprintln!("{}", progress_line(seconds, steps, Some(loss)));
        }
    }
    let training_seconds = started.elapsed().as_secs_f64();
    if status == "ok" {
        match std::env::var_os("AUTORESEARCH_EXPORT") {
            Some(path) => {
                if let Err(e) = std::fs::write(&path, model_text(bpb, seed)) {
                    eprintln!("exporting to {}: {e}", std::path::Path::new(&path).display());
                    std::process::exit(1);
                }
            }
            None => eprintln!("not exported: set AUTORESEARCH_EXPORT to score this model"),
        }
    }
    let params = (12.0 * k.depth * k.width * k.width) as u64;
    let tokens = steps * 4096;
    let result = format!(
        "{{\"schema\": 1, \"status\": \"{status}\", \"training_seconds\": {training_seconds}, \
         \"total_seconds\": {}, \"peak_memory_mb\": {}, \"num_steps\": {steps}, \
         \"num_params\": {params}, \"train_tokens\": {tokens}, \"tokens_per_second\": {}, \
         \"mfu_percent\": null, \"device\": \"{device}\", \"contract\": \"standin\", \
         \"time_budget_s\": {budget}, \"seed\": {seed}}}",
        started.elapsed().as_secs_f64(),
        100.0 + k.depth * k.width * 0.25,
        tokens as f64 / training_seconds.max(1e-9),
    );
    eprintln!("---");
    println!("{result}");
    if status != "ok" {
        std::process::exit(1);
    }
}
"##;

/// The stand-in's rule tests, `crates/train/rules.rs`: real tests, run by the loop before a
/// change is kept (and so by every keep of these tests' runs).
const RULE_TESTS: &str = r#"//! Rules the stand-in keeps whatever its tuning.

use super::*;

/// The score in a model file's text (the evaluator, outside this directory, reads it alike).
fn model_bpb(text: &str) -> Option<f64> {
    text.lines().find_map(|l| l.strip_prefix("bpb ")?.trim().parse().ok())
}

#[test]
fn the_score_is_finite_and_near_one_for_both_configurations() {
    for cuda in [false, true] {
        let bpb = score(&knobs(cuda), cuda, 42);
        assert!(bpb.is_finite() && bpb > 0.9 && bpb < 10.0, "{bpb}");
    }
}

#[test]
fn the_noise_is_fixed_by_the_seed() {
    let k = knobs(false);
    assert_eq!(score(&k, false, 42), score(&k, false, 42));
    assert_ne!(score(&k, false, 42), score(&k, false, 43));
    let spread = (0..200).map(|s| normal(&k, s)).map(|x| x * x).sum::<f64>() / 200.0;
    assert!(spread > 0.5 && spread < 1.5, "{spread}");
}

#[test]
fn the_export_reads_back() {
    let path = std::env::temp_dir().join("standin-rule-test-model");
    std::fs::write(&path, model_text(1.25, 7)).unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    assert_eq!(model_bpb(&text), Some(1.25));
    std::fs::remove_file(&path).ok();
}
"#;

/// The stand-in protected evaluator, `crates/train/evaluate/main.rs`: `evaluate MODEL val|test
/// [--result-fd N]`, the verdict on descriptor N (stdout without the flag).
const EVALUATOR: &str = r##"//! The stand-in protected evaluator: reads the score a stand-in model holds and writes the
//! verdict, one JSON line, to the descriptor named by --result-fd (stdout without it). The test
//! split scores a little higher than the validation split. A model may say what its causality
//! probe would find (`probe_max_diff X`, 0 without it): above 1e-3 it is judged non-causal.

use std::io::Write;
use std::os::fd::FromRawFd;
use std::time::Instant;

fn fail(why: &str) -> ! {
    eprintln!("evaluate: {why}");
    std::process::exit(1)
}

fn main() {
    let started = Instant::now();
    let mut args = std::env::args().skip(1);
    let (mut model, mut split, mut fd) = (None, None, None);
    while let Some(arg) = args.next() {
        if arg == "--result-fd" {
            let n = args.next().unwrap_or_else(|| fail("--result-fd needs a number"));
            fd = Some(n.parse::<i32>().unwrap_or_else(|_| fail("--result-fd needs a number")));
        } else if model.is_none() {
            model = Some(arg);
        } else if split.is_none() {
            split = Some(arg);
        } else {
            fail("usage: evaluate MODEL val|test [--result-fd N]");
        }
    }
    let (Some(model), Some(split)) = (model, split) else {
        fail("usage: evaluate MODEL val|test [--result-fd N]")
    };
    let offset = match split.as_str() {
        "val" => 0.0,
        "test" => 0.01,
        other => fail(&format!("no split {other:?}: val or test")),
    };
    if let Ok(data) = std::env::var("AUTORESEARCH_DATA") {
        let tokens = std::path::Path::new(&data).join(format!("{split}.tokens"));
        if !tokens.is_file() {
            fail(&format!("{} is missing", tokens.display()));
        }
    }
    let text = std::fs::read_to_string(&model)
        .unwrap_or_else(|e| fail(&format!("reading {model}: {e}")));
    let bpb = text
        .lines()
        .find_map(|l| l.strip_prefix("bpb ")?.trim().parse::<f64>().ok())
        .unwrap_or_else(|| fail(&format!("{model} is not a stand-in model")));
    let bpb = bpb + offset;
    let probe_max_diff = text
        .lines()
        .find_map(|l| l.strip_prefix("probe_max_diff ")?.trim().parse::<f64>().ok())
        .unwrap_or(0.0);
    let causal = probe_max_diff <= 1e-3;
    let bpb = if bpb.is_finite() && causal { bpb.to_string() } else { "null".into() };
    let line = format!(
        "{{\"split\": \"{split}\", \"bpb\": {bpb}, \"scored_bytes\": 1000, \"causal\": {causal}, \
         \"probe_max_diff\": {probe_max_diff:?}, \"probes\": 8, \"seconds\": {}}}\n",
        started.elapsed().as_secs_f64()
    );
    let written = match fd {
        // SAFETY: the caller opened this descriptor for us and nothing else here uses it.
        Some(fd) => unsafe { std::fs::File::from_raw_fd(fd) }.write_all(line.as_bytes()),
        None => std::io::stdout().write_all(line.as_bytes()),
    };
    if let Err(e) = written {
        fail(&format!("writing the verdict: {e}"));
    }
}
"##;

pub struct Standin {
    dir: tempfile::TempDir,
    pub repo: PathBuf,
    pub data: PathBuf,
    /// The trainers' cargo target directory (the evaluator's is beside it, `target-evaluator`).
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
        let train = repo.join("crates/train");
        std::fs::create_dir_all(train.join("src")).unwrap();
        std::fs::create_dir_all(train.join("evaluate")).unwrap();
        let knobs = |lines: &[&str]| lines.join("\n");
        let trainer = TRAINER
            .replace("CPU_KNOBS", &knobs(&CPU_KNOBS))
            .replace("GPU_KNOBS", &knobs(&GPU_KNOBS))
            .replace("NOISE_SIGMA", &format!("{NOISE:?}"))
            .replace("MAX_DEPTH_F64", &format!("{:?}", MAX_DEPTH as f64))
            .replace("DIVERGES_AT", &format!("{DIVERGES_AT:?}"));
        for (path, text) in [
            ("Cargo.toml", WORKSPACE_TOML),
            (".gitignore", GITIGNORE),
            ("program.md", PROGRAM),
            ("crates/train/Cargo.toml", TRAIN_TOML),
            ("crates/train/src/main.rs", &trainer),
            ("crates/train/rules.rs", RULE_TESTS),
            ("crates/train/evaluate/main.rs", EVALUATOR),
        ] {
            std::fs::write(repo.join(path), text).unwrap();
        }
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
        let data = prepare::fixtures::tiny_dataset(dir.path()).unwrap();
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
        std::fs::write(self.repo.join("autoresearch.toml"), settings).unwrap();
        self.git(&["add", "autoresearch.toml"]);
        self.git(&["commit", "--quiet", "-m", "settings"]);
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
