//! Settings: command-line flags, then environment, then `autoresearch.toml`, then defaults.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand, ValueEnum};
use prepare::Profile;
use serde::Deserialize;

use crate::executor::Limits;
use crate::ledger::Trial;
use crate::sandbox::Resources;

/// The LLM's model name when `--model` is not given (the trainer's variables are in `prepare`).
pub const MODEL_ENV: &str = "AUTORESEARCH_MODEL";

#[derive(Parser, Debug)]
#[command(about = "Autonomous ML research: an agent edits the trainer, the loop keeps what helps")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub run: RunArgs,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the research loop (the default).
    Run(RunArgs),
    /// Summarise a run and draw runs/<tag>/progress.png.
    Report(ReportArgs),
}

#[derive(clap::Args, Debug, Default, Clone)]
pub struct ReportArgs {
    /// The run to report on (default: today's tag, e.g. nov22).
    #[arg(long)]
    pub tag: Option<String>,
    /// Print the summary as JSON, for scripts and the agent.
    #[arg(long)]
    pub json: bool,
}

#[derive(clap::Args, Debug, Default, Clone)]
pub struct RunArgs {
    /// Run name: branch autoresearch/<tag>, logs in runs/<tag>/ (default: today, e.g. nov22).
    #[arg(long)]
    pub tag: Option<String>,
    /// Training seconds per experiment (default: the evaluation contract's budget).
    #[arg(long)]
    pub time_budget: Option<f64>,
    /// Stop after this many experiments, the baseline included (default: never).
    #[arg(long)]
    pub max_experiments: Option<u64>,
    /// `openai` (any OpenAI-compatible endpoint) or `offline` (built-in search, no LLM).
    #[arg(long, value_enum)]
    pub agent: Option<AgentKind>,
    /// Model name for the OpenAI-compatible endpoint.
    #[arg(long)]
    pub model: Option<String>,
    /// Continue an existing tag after a stop or crash.
    #[arg(long)]
    pub resume: bool,
    /// Start the tag from REF instead of the checkout's HEAD: a commit, a branch, or TAG:SEQ (an
    /// experiment of an earlier run, kept or discarded).
    #[arg(long, value_name = "REF", conflicts_with = "resume")]
    pub from: Option<String>,
    /// Start without the memory of earlier runs (memory.md is neither read nor updated).
    #[arg(long)]
    pub fresh: bool,
    /// Seed of the offline agent's search.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Seeds the baseline is trained with to measure the noise floor (1 turns the noise-aware
    /// decisions off; default 3; at most 100).
    #[arg(long)]
    pub noise_seeds: Option<usize>,
    /// Experiments in flight at once, each with its own worktree, build and GPU (default 1).
    #[arg(long)]
    pub workers: Option<usize>,
    /// The GPUs the local workers use, one each, e.g. `0,1,2,3` (default: every visible GPU).
    #[arg(long)]
    pub gpus: Option<String>,
    /// Where trials run: `local` (this machine) or `slurm` (a job each, see docs/slurm.md).
    #[arg(long, value_enum)]
    pub executor: Option<ExecutorKind>,
}

#[derive(ValueEnum, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum ExecutorKind {
    #[default]
    Local,
    Slurm,
}

/// autoresearch.toml's `[slurm]` table: how each trial's job is submitted.
#[derive(Deserialize, Debug, Default, Clone)]
#[serde(deny_unknown_fields)]
pub struct SlurmSettings {
    /// `--partition`; the cluster's default partition when unset.
    pub partition: Option<String>,
    /// `--account`.
    pub account: Option<String>,
    /// `--gres` of each job; default `gpu:1` when training on CUDA, none on CPU.
    pub gres: Option<String>,
    /// Further `sbatch` options, one per item, e.g. `["--qos=high", "--mem=64G"]`.
    #[serde(default)]
    pub extra: Vec<String>,
}

/// autoresearch.toml's `[limits]` table: what each jail running the agent's code may consume.
#[derive(Deserialize, Debug, Default, Clone)]
#[serde(deny_unknown_fields)]
struct LimitSettings {
    /// GiB of memory per jail; default 3/4 of the machine's divided among the workers.
    memory_gib: Option<f64>,
    /// Processes (and threads) per jail; default 4096.
    processes: Option<u64>,
    /// GiB the trainer may export; default 4.
    export_gib: Option<f64>,
    /// GiB of each jail's /tmp and /dev/shm; default 1.
    tmp_gib: Option<f64>,
    /// Seconds one build may take; default 1800 (the first build of a fresh target compiles
    /// libtorch's C++ wrapper, minutes; later trainer builds take seconds).
    build_seconds: Option<u64>,
}

#[derive(ValueEnum, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum AgentKind {
    Openai,
    Offline,
}

/// `autoresearch.toml` at the repository root: the flags' names, no secrets.
#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    tag: Option<String>,
    time_budget: Option<f64>,
    max_experiments: Option<u64>,
    agent: Option<AgentKind>,
    model: Option<String>,
    base_url: Option<String>,
    seed: Option<u64>,
    /// The LLM's context in tokens (default: what the server states, else 32768).
    context_tokens: Option<u64>,
    /// Seconds one proposal of the LLM agent may take, its requests and tools included.
    proposal_timeout: Option<f64>,
    /// Hours the LLM endpoint may keep failing before the run stops (resumable).
    outage_hours: Option<f64>,
    /// Compiler-error repair rounds per experiment.
    max_repairs: Option<u32>,
    /// Seconds the trainer may run past its budget (start-up, evaluation) before it is killed.
    grace: Option<f64>,
    noise_seeds: Option<usize>,
    /// A known noise floor (std dev of val_bpb between runs) instead of measuring it.
    noise_sigma: Option<f64>,
    /// Most of the training time that re-runs of ambiguous results may take.
    rerun_share: Option<f64>,
    /// With an LLM: the share of experiments the model-based search proposes.
    tune_share: Option<f64>,
    /// `off` runs the agent's code unconfined where the machine has no sandbox.
    sandbox: Option<crate::sandbox::Mode>,
    workers: Option<usize>,
    gpus: Option<String>,
    executor: Option<ExecutorKind>,
    slurm: Option<SlurmSettings>,
    limits: Option<LimitSettings>,
}

/// Everything the loop needs, resolved.
#[derive(Debug, Clone)]
pub struct Config {
    pub repo: PathBuf,
    pub tag: String,
    pub time_budget: Option<f64>,
    pub max_experiments: Option<u64>,
    pub agent: AgentKind,
    pub model: String,
    pub base_url: Option<String>,
    /// From OPENAI_API_KEY only; never printed, logged or written.
    pub api_key: Option<String>,
    pub resume: bool,
    /// `--from`: what the tag starts from, as given.
    pub from: Option<String>,
    /// `--fresh`: no memory of earlier runs.
    pub fresh: bool,
    pub seed: u64,
    /// The LLM's context in tokens, when autoresearch.toml sets it.
    pub context_tokens: Option<u64>,
    /// Seconds one LLM proposal may take.
    pub proposal_timeout: f64,
    /// Seconds the LLM endpoint may keep failing before the run stops.
    pub outage: f64,
    pub max_repairs: u32,
    pub grace: f64,
    pub noise_seeds: usize,
    pub noise_sigma: Option<f64>,
    pub rerun_share: f64,
    /// With an LLM: the share of experiments the model-based search proposes, tuning the
    /// best's constants between the LLM's changes.
    pub tune_share: f64,
    /// Where the trainer's data lives ($AUTORESEARCH_DATA, default data/enwik8).
    pub data_dir: PathBuf,
    /// Cargo's target directory for trainer builds (CARGO_TARGET_DIR, default <repo>/target).
    pub target_dir: PathBuf,
    /// What the trainer and the evaluator run on, and so which of the trainer's configurations
    /// the agent tunes: $AUTORESEARCH_DEVICE (`cpu` or `cuda`), else what this machine has.
    pub device: Profile,
    /// Whether the agent's code must run in the sandbox (autoresearch.toml's `sandbox`).
    pub sandbox: crate::sandbox::Mode,
    /// Experiments in flight at once.
    pub workers: usize,
    /// The GPUs local workers train on, one each (`CUDA_VISIBLE_DEVICES` values); empty on CPU.
    pub gpus: Vec<String>,
    pub executor: ExecutorKind,
    pub slurm: SlurmSettings,
    /// What each jail may consume (autoresearch.toml's `[limits]`).
    pub resources: Resources,
}

impl Config {
    pub fn resolve(args: RunArgs, repo: &Path) -> Result<Config> {
        let file = read_file_config(&repo.join("autoresearch.toml"))?;
        let env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        let base_url = env("OPENAI_BASE_URL").or(file.base_url);
        let api_key = env("OPENAI_API_KEY");
        let agent =
            args.agent
                .or(file.agent)
                .unwrap_or(if base_url.is_some() || api_key.is_some() {
                    AgentKind::Openai
                } else {
                    AgentKind::Offline
                });
        let device = match env(prepare::DEVICE_ENV) {
            Some(name) => Profile::of_device(&name).with_context(|| {
                format!(
                    "{}={name:?} is not a device: use cpu or cuda",
                    prepare::DEVICE_ENV
                )
            })?,
            None => Profile::detect(),
        };
        let path = repo.join("autoresearch.toml");
        let from = Origins { file: &path };
        let time_budget = from.either("time_budget", args.time_budget, file.time_budget);
        let max_experiments = from.either(
            "max_experiments",
            args.max_experiments,
            file.max_experiments,
        );
        let noise_seeds = from.either("noise_seeds", args.noise_seeds, file.noise_seeds);
        let max_repairs = from.file("max_repairs", file.max_repairs);
        let context_tokens = from.file("context_tokens", file.context_tokens);
        let proposal_timeout = from.file("proposal_timeout", file.proposal_timeout);
        let outage_hours = from.file("outage_hours", file.outage_hours);
        let grace = from.file("grace", file.grace);
        let noise_sigma = from.file("noise_sigma", file.noise_sigma);
        let rerun_share = from.file("rerun_share", file.rerun_share);
        let tune_share = from.file("tune_share", file.tune_share);
        let workers_env = env(WORKERS_ENV)
            .map(|w| {
                w.parse::<usize>()
                    .with_context(|| format!("{WORKERS_ENV}={w:?} is not a number of workers"))
            })
            .transpose()?;
        let workers = match (args.workers, workers_env) {
            (None, Some(value)) => Some(Setting {
                value,
                from: WORKERS_ENV.into(),
                name: "workers",
            }),
            (flag, _) => from.either("workers", flag, file.workers),
        };
        // Checked here, at start: a value out of range would otherwise pass until it panics or
        // misleads hours into the run (an infinite budget, a negative grace, a NaN sigma).
        check(
            &time_budget,
            |b| b.is_finite() && *b > 0.0 && *b <= DAY,
            "a number of seconds > 0 and <= 86400",
        )?;
        check(&max_experiments, |n| *n >= 1, "at least 1 (the baseline)")?;
        check(
            &noise_seeds,
            |n| (1..=100).contains(n),
            "from 1 (noise not measured) to 100",
        )?;
        check(&max_repairs, |n| *n <= 100, "from 0 to 100 rounds")?;
        check(
            &context_tokens,
            |n| (1024..=10_000_000).contains(n),
            "a number of tokens from 1024 to 10000000",
        )?;
        check(
            &proposal_timeout,
            |t| t.is_finite() && *t >= 10.0 && *t <= DAY,
            "a number of seconds >= 10 and <= 86400",
        )?;
        check(
            &outage_hours,
            |h| h.is_finite() && *h >= 0.0 && *h <= 240.0,
            "a number of hours from 0 to 240",
        )?;
        check(
            &grace,
            |g| g.is_finite() && *g >= 0.0 && *g <= DAY,
            "a number of seconds >= 0 and <= 86400",
        )?;
        check(
            &noise_sigma,
            |s| s.is_finite() && *s > 0.0,
            "a finite standard deviation > 0",
        )?;
        check(
            &rerun_share,
            |r| r.is_finite() && (0.0..=1.0).contains(r),
            "a share of the training time from 0 to 1",
        )?;
        check(
            &tune_share,
            |r| r.is_finite() && (0.0..=1.0).contains(r),
            "a share of the experiments from 0 to 1",
        )?;
        check(&workers, |w| (1..=256).contains(w), "from 1 to 256")?;
        let workers = value(workers).unwrap_or(1);
        let resources = resources(&from, file.limits.unwrap_or_default(), workers)?;
        let executor = args.executor.or(file.executor).unwrap_or_default();
        let gpus = match args.gpus.or(file.gpus) {
            Some(list) => list
                .split(',')
                .map(|g| g.trim().to_string())
                .filter(|g| !g.is_empty())
                .collect(),
            None if device == Profile::Gpu => visible_gpus(),
            None => Vec::new(),
        };
        if executor == ExecutorKind::Local && device == Profile::Gpu && workers > gpus.len() {
            bail!(
                "{workers} workers need {workers} GPUs, one each, and {} are to be used ({}); \
                 pass fewer --workers, or list more with --gpus",
                gpus.len(),
                gpus.join(",")
            );
        }
        Ok(Config {
            repo: repo.to_path_buf(),
            tag: args.tag.or(file.tag).unwrap_or_else(default_tag),
            time_budget: value(time_budget),
            max_experiments: value(max_experiments),
            agent,
            model: args
                .model
                .or(env(MODEL_ENV))
                .or(file.model)
                .unwrap_or_else(|| "gpt-4.1".into()),
            base_url,
            api_key,
            resume: args.resume,
            from: args.from,
            fresh: args.fresh,
            seed: args.seed.or(file.seed).unwrap_or(0),
            context_tokens: value(context_tokens),
            proposal_timeout: value(proposal_timeout).unwrap_or(1800.0),
            outage: value(outage_hours).unwrap_or(2.0) * 3600.0,
            max_repairs: value(max_repairs).unwrap_or(3),
            grace: value(grace).unwrap_or(120.0),
            noise_seeds: value(noise_seeds).unwrap_or(3),
            noise_sigma: value(noise_sigma),
            rerun_share: value(rerun_share).unwrap_or(0.25),
            tune_share: value(tune_share).unwrap_or(0.3),
            data_dir: env(prepare::DATA_ENV)
                .map_or_else(|| repo.join("data").join("enwik8"), PathBuf::from),
            target_dir: env("CARGO_TARGET_DIR").map_or_else(|| repo.join("target"), PathBuf::from),
            device,
            sandbox: file.sandbox.unwrap_or_default(),
            workers,
            gpus,
            executor,
            slurm: file.slurm.unwrap_or_default(),
            resources,
        })
    }

    pub fn branch(&self) -> String {
        format!("autoresearch/{}", self.tag)
    }

    pub fn run_dir(&self) -> PathBuf {
        self.repo.join("runs").join(&self.tag)
    }

    /// The hard limits for runs of `budget` training seconds once the baseline's runs are
    /// `baseline` (none yet: the grace rule), see [`Limits::measured`].
    pub fn limits(&self, budget: f64, baseline: &[Trial]) -> Limits {
        Limits::measured(budget, self.grace, baseline)
    }
}

/// The `[limits]` of autoresearch.toml, checked, with the defaults for `workers` workers.
fn resources(from: &Origins, limits: LimitSettings, workers: usize) -> Result<Resources> {
    let gib = |name, v: Option<f64>| from.file(name, v);
    let (memory, export, tmp) = (
        gib("limits.memory_gib", limits.memory_gib),
        gib("limits.export_gib", limits.export_gib),
        gib("limits.tmp_gib", limits.tmp_gib),
    );
    let processes = from.file("limits.processes", limits.processes);
    let build_seconds = from.file("limits.build_seconds", limits.build_seconds);
    for setting in [&memory, &export, &tmp] {
        check(
            setting,
            |g| g.is_finite() && *g >= 0.01 && *g <= 1_048_576.0,
            "a number of GiB from 0.01 to 1048576",
        )?;
    }
    check(
        &processes,
        |p| (16..=4_194_304).contains(p),
        "from 16 to 4194304",
    )?;
    check(
        &build_seconds,
        |s| (1..=DAY as u64).contains(s),
        "a number of seconds from 1 to 86400",
    )?;
    let bytes = |setting: Option<Setting<f64>>| value(setting).map(|g| (g * GIB) as u64);
    // Each worker's jails in turn, and the odd build or evaluation beside them: a quarter of
    // the machine stays for the orchestrator, the system and the page cache.
    let machine = crate::sandbox::machine_memory().unwrap_or(16 << 30);
    Ok(Resources {
        memory_bytes: bytes(memory).unwrap_or(machine / 4 * 3 / workers as u64),
        processes: value(processes).unwrap_or(4096),
        export_bytes: bytes(export).unwrap_or(4 << 30),
        tmp_bytes: bytes(tmp).unwrap_or(1 << 30),
        build_seconds: value(build_seconds).unwrap_or(1800),
    })
}

const GIB: f64 = (1u64 << 30) as f64;

/// The workers when neither `--workers` nor autoresearch.toml sets them.
pub const WORKERS_ENV: &str = "AUTORESEARCH_WORKERS";

/// The GPUs this process may use: `CUDA_VISIBLE_DEVICES` when set, else every `/dev/nvidiaN`.
fn visible_gpus() -> Vec<String> {
    if let Ok(list) = std::env::var("CUDA_VISIBLE_DEVICES") {
        return list
            .split(',')
            .map(|g| g.trim().to_string())
            .filter(|g| !g.is_empty())
            .collect();
    }
    let mut gpus: Vec<u32> = std::fs::read_dir("/dev")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.strip_prefix("nvidia")?.parse().ok())
        .collect();
    gpus.sort();
    gpus.iter().map(u32::to_string).collect()
}

/// A day in seconds: the most a budget or a grace may be (a larger one is a typo, and past
/// `Duration`'s range it would panic).
const DAY: f64 = 86_400.0;

/// A numeric setting as given, and where: `--time-budget` or `time_budget in <file>`.
struct Setting<T> {
    value: T,
    from: String,
    name: &'static str,
}

/// The value of a setting, once checked.
fn value<T>(setting: Option<Setting<T>>) -> Option<T> {
    setting.map(|s| s.value)
}

/// Where settings come from, for the messages that name them.
struct Origins<'a> {
    file: &'a Path,
}

impl Origins<'_> {
    /// A setting that has a flag and a file key of the same name; the flag wins.
    fn either<T>(
        &self,
        name: &'static str,
        flag: Option<T>,
        file: Option<T>,
    ) -> Option<Setting<T>> {
        match flag {
            Some(value) => Some(Setting {
                value,
                from: format!("--{}", name.replace('_', "-")),
                name,
            }),
            None => self.file(name, file),
        }
    }

    /// A setting of the file only.
    fn file<T>(&self, name: &'static str, value: Option<T>) -> Option<Setting<T>> {
        value.map(|value| Setting {
            value,
            from: format!("{name} in {}", self.file.display()),
            name,
        })
    }
}

/// Refuses `setting` unless `valid`, naming it, where it came from and what it must be.
fn check<T: std::fmt::Display>(
    setting: &Option<Setting<T>>,
    valid: impl Fn(&T) -> bool,
    expected: &str,
) -> Result<()> {
    match setting {
        Some(s) if !valid(&s.value) => bail!(
            "{} is {} ({}): it must be {expected}",
            s.name,
            s.value,
            s.from
        ),
        _ => Ok(()),
    }
}

fn read_file_config(path: &Path) -> Result<FileConfig> {
    match std::fs::read_to_string(path) {
        // Only the parser's message, not its snippet of the file, which could hold a secret.
        Ok(text) => toml::from_str(&text).map_err(|e| {
            anyhow::anyhow!(
                "{} is not valid ({}): it takes tag, time_budget, max_experiments, agent, model, \
                 base_url, seed, max_repairs, grace, noise_seeds, noise_sigma, rerun_share, tune_share, sandbox, workers, gpus, executor, [slurm] and [limits] \
                 (API keys belong in OPENAI_API_KEY)",
                path.display(),
                e.message().trim()
            )
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(FileConfig::default()),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

/// Today's date as a tag, e.g. `nov22`.
pub fn default_tag() -> String {
    chrono::Local::now()
        .format("%b%d")
        .to_string()
        .to_lowercase()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn flags_beat_the_file_and_the_file_beats_defaults() {
        let repo = tempfile::tempdir().unwrap();
        std::fs::write(
            repo.path().join("autoresearch.toml"),
            "tag = \"fromfile\"\ntime_budget = 60\nagent = \"offline\"\n",
        )
        .unwrap();
        let cfg = Config::resolve(
            RunArgs {
                time_budget: Some(5.0),
                ..Default::default()
            },
            repo.path(),
        )
        .unwrap();
        assert_eq!(cfg.tag, "fromfile");
        assert_eq!(cfg.time_budget, Some(5.0));
        assert_eq!(cfg.agent, AgentKind::Offline);
        assert_eq!(cfg.limits(5.0, &[]).train, Duration::from_secs(70));
        assert_eq!(cfg.limits(300.0, &[]).train, Duration::from_secs(420));
    }

    #[test]
    fn unknown_keys_and_secrets_are_refused() {
        let repo = tempfile::tempdir().unwrap();
        std::fs::write(
            repo.path().join("autoresearch.toml"),
            "api_key = \"sk-secret\"\n",
        )
        .unwrap();
        let err = format!(
            "{:#}",
            Config::resolve(RunArgs::default(), repo.path()).unwrap_err()
        );
        assert!(
            err.contains("OPENAI_API_KEY") && err.contains("api_key"),
            "{err}"
        );
        assert!(
            !err.contains("sk-secret"),
            "the key must not be echoed: {err}"
        );
    }

    fn error(flags: RunArgs, file: &str) -> String {
        let repo = tempfile::tempdir().unwrap();
        std::fs::write(repo.path().join("autoresearch.toml"), file).unwrap();
        format!("{:#}", Config::resolve(flags, repo.path()).unwrap_err())
    }

    #[test]
    fn every_numeric_setting_is_checked_at_start_and_named_with_its_origin() {
        for (file, expected) in [
            ("grace = -5", "grace is -5 (grace in "),
            ("grace = nan", "grace is NaN (grace in "),
            ("time_budget = inf", "time_budget is inf (time_budget in "),
            ("time_budget = 0", "time_budget is 0 ("),
            ("noise_sigma = 0.0", "noise_sigma is 0 ("),
            ("noise_sigma = -inf", "noise_sigma is -inf ("),
            ("rerun_share = 1.5", "rerun_share is 1.5 ("),
            ("rerun_share = nan", "rerun_share is NaN ("),
            ("tune_share = -0.1", "tune_share is -0.1 ("),
            ("noise_seeds = 0", "noise_seeds is 0 ("),
            ("max_repairs = 1000", "max_repairs is 1000 ("),
            ("max_experiments = 0", "max_experiments is 0 ("),
            (
                "[limits]\nmemory_gib = 0",
                "limits.memory_gib is 0 (limits.memory_gib in ",
            ),
            ("[limits]\nprocesses = 1", "limits.processes is 1 ("),
            ("[limits]\nbuild_seconds = 0", "limits.build_seconds is 0 ("),
        ] {
            let err = error(RunArgs::default(), file);
            assert!(
                err.contains(expected) && err.contains("autoresearch.toml): it must be"),
                "{file}: {err}"
            );
        }
        // A flag is named as the flag, and wins over a valid file value.
        let flags = RunArgs {
            time_budget: Some(f64::INFINITY),
            noise_seeds: Some(0),
            ..Default::default()
        };
        let err = error(flags, "time_budget = 60");
        assert!(
            err.contains("time_budget is inf (--time-budget): it must be a number of seconds > 0"),
            "{err}"
        );
        let flags = RunArgs {
            noise_seeds: Some(0),
            ..Default::default()
        };
        assert!(error(flags, "").contains("noise_seeds is 0 (--noise-seeds)"));
        // The edges are valid.
        let repo = tempfile::tempdir().unwrap();
        std::fs::write(
            repo.path().join("autoresearch.toml"),
            "grace = 0\nrerun_share = 0\nnoise_seeds = 1\nmax_repairs = 0\ntime_budget = 86400\n",
        )
        .unwrap();
        let cfg = Config::resolve(RunArgs::default(), repo.path()).unwrap();
        assert_eq!((cfg.grace, cfg.rerun_share, cfg.noise_seeds), (0.0, 0.0, 1));
    }
}
