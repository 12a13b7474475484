//! Settings: command-line flags, then environment, then `autoresearch.toml`, then defaults, each
//! declared once in [`Settings`]; and what follows from them and this machine, resolved into one
//! [`Config`].

mod settings;

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use prepare::Profile;

pub use settings::{
    AgentKind, ExecutorKind, LimitSettings, MODEL_ENV, Settings, SlurmSettings, WORKERS_ENV,
};

use crate::cost::Costs;
use crate::run_dir::RunDir;
use crate::sandbox::Resources;

#[derive(Parser, Debug)]
#[command(about = "Autonomous ML research: an agent edits the trainer, the loop keeps what helps")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub run: Settings,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the research loop (the default).
    Run(Box<Settings>),
    /// Summarise a run and draw runs/<tag>/progress.png.
    Report(ReportArgs),
    /// Serve a run's live dashboard: a web page, and its JSON under /api/ (docs/orchestrator.md).
    Dashboard(DashboardArgs),
    /// Re-train a run's baseline and best (and with --ablate the best without each kept change)
    /// with fresh seeds, and state the gain with a 95% interval.
    Confirm(ConfirmArgs),
    /// Write the branch autoresearch/<tag>-final: one commit per kept change confirm did not
    /// refute, ready for review and merge.
    Finalize(FinalizeArgs),
}

/// Where the dashboard listens unless told otherwise: this machine only.
pub const DASHBOARD_ADDR: &str = "127.0.0.1:8080";

#[derive(clap::Args, Debug, Clone)]
pub struct DashboardArgs {
    /// The run to show (default: today's tag, e.g. nov22).
    #[arg(long)]
    pub tag: Option<String>,
    /// Where to serve it, IP:PORT.
    #[arg(long, default_value = DASHBOARD_ADDR)]
    pub addr: String,
    /// Allow an address other machines can reach (the page has no password).
    #[arg(long)]
    pub public: bool,
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
pub struct ConfirmArgs {
    /// The run to confirm (default: today's tag, e.g. nov22).
    #[arg(long)]
    pub tag: Option<String>,
    /// Rounds: in each, every program trains once with a fresh seed (at least 2).
    #[arg(long, default_value_t = 3)]
    pub seeds: usize,
    /// Training seconds per run (default: the night's budget).
    #[arg(long, value_parser = settings::TIME_BUDGET.named("budget"))]
    pub budget: Option<f64>,
    /// Also run the best with each kept change left out, one at a time: each change's part.
    #[arg(long)]
    pub ablate: bool,
}

#[derive(clap::Args, Debug, Default, Clone)]
pub struct FinalizeArgs {
    /// The run to finalize (default: today's tag, e.g. nov22).
    #[arg(long)]
    pub tag: Option<String>,
}

/// Everything the loop needs: the settings, layered and checked, and what follows from them.
#[derive(Debug, Clone)]
pub struct Config {
    pub settings: Settings,
    pub repo: PathBuf,
    pub tag: String,
    /// `runs/<tag>/`.
    pub run_dir: RunDir,
    pub agent: AgentKind,
    /// From OPENAI_API_KEY only; never printed, logged or written.
    pub api_key: Option<String>,
    /// Where the trainer's data lives ($AUTORESEARCH_DATA, default data/enwik8).
    pub data_dir: PathBuf,
    /// Cargo's target directory for trainer builds (CARGO_TARGET_DIR, default <repo>/target).
    pub target_dir: PathBuf,
    /// What the trainer and the evaluator run on, and so which of the trainer's configurations
    /// the agent tunes: $AUTORESEARCH_DEVICE (`cpu` or `cuda`), else what this machine has.
    pub device: Profile,
    /// The GPUs local workers train on, one each (`CUDA_VISIBLE_DEVICES` values); empty on CPU.
    pub gpus: Vec<String>,
    /// What each jail may consume (autoresearch.toml's `[limits]`).
    pub resources: Resources,
    /// The LLM's price and the night's cost cap.
    pub costs: Costs,
}

impl Config {
    /// `flags` (the command line and its environment) over `<repo>/autoresearch.toml`, checked.
    pub fn resolve(flags: Settings, repo: &Path) -> Result<Config> {
        let path = repo.join("autoresearch.toml");
        let file = read_file(&path)?;
        let settings = flags
            .over(&file)
            .context("combining the flags with autoresearch.toml")?;
        check(&settings, &flags, &path)?;
        let env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        let api_key = env("OPENAI_API_KEY");
        let agent = settings
            .agent
            .unwrap_or(if settings.base_url.is_some() || api_key.is_some() {
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
        let gpus = gpus(&settings, device)?;
        let tag = settings.tag.clone().unwrap_or_else(default_tag);
        let costs = Costs::resolve(
            agent == AgentKind::Openai,
            settings.model(),
            settings.base_url.as_deref(),
            settings.prices.as_ref(),
            &path,
            settings.max_cost_usd,
        )?;
        Ok(Config {
            repo: repo.to_path_buf(),
            run_dir: RunDir::new(repo, &tag),
            tag,
            agent,
            api_key,
            data_dir: env(prepare::DATA_ENV).map_or_else(|| default_data_dir(repo), PathBuf::from),
            target_dir: env("CARGO_TARGET_DIR").map_or_else(|| repo.join("target"), PathBuf::from),
            device,
            gpus,
            resources: resources(settings.limits.unwrap_or_default(), settings.workers()),
            costs,
            settings,
        })
    }

    pub fn branch(&self) -> String {
        format!("autoresearch/{}", self.tag)
    }
}

/// Where the data lives unless `AUTORESEARCH_DATA` says otherwise; the orchestrator prepares it
/// there on first use.
pub fn default_data_dir(repo: &Path) -> PathBuf {
    repo.join("data").join("enwik8")
}

/// The GPUs the workers train on: `--gpus`, else every visible one on a GPU machine; refused
/// when local workers would have fewer than one each.
fn gpus(settings: &Settings, device: Profile) -> Result<Vec<String>> {
    let gpus = match &settings.gpus {
        Some(list) => list
            .split(',')
            .map(|g| g.trim().to_string())
            .filter(|g| !g.is_empty())
            .collect(),
        None if device == Profile::Gpu => visible_gpus(),
        None => Vec::new(),
    };
    let workers = settings.workers();
    let local = settings.executor() == ExecutorKind::Local;
    if local && device == Profile::Gpu && workers > gpus.len() {
        bail!(
            "{workers} workers need {workers} GPUs, one each, and {} are to be used ({}); \
             pass fewer --workers, or list more with --gpus",
            gpus.len(),
            gpus.join(",")
        );
    }
    Ok(gpus)
}

/// Refuses a numeric setting out of its range, naming it and where it came from: the flag when
/// `flags` set it, else `file`.
fn check(settings: &Settings, flags: &Settings, file: &Path) -> Result<()> {
    let flag_or_file = |key: &str| {
        if flags.sets(key) {
            format!("--{}", key.replace('_', "-"))
        } else {
            format!("{key} in {}", file.display())
        }
    };
    let in_file = |key: &str| format!("{key} in {}", file.display());
    let (s, limits) = (settings, settings.limits.unwrap_or_default());
    let gib = |key| settings::GIB_LIMIT.named(key);
    [
        settings::TIME_BUDGET.check(s.time_budget.as_ref(), flag_or_file),
        settings::MAX_EXPERIMENTS.check(s.max_experiments.as_ref(), flag_or_file),
        settings::NOISE_SEEDS.check(s.noise_seeds.as_ref(), flag_or_file),
        settings::MAX_REPAIRS.check(s.max_repairs.as_ref(), flag_or_file),
        settings::CONTEXT_TOKENS.check(s.context_tokens.as_ref(), flag_or_file),
        settings::PROPOSAL_TIMEOUT.check(s.proposal_timeout.as_ref(), flag_or_file),
        settings::OUTAGE_HOURS.check(s.outage_hours.as_ref(), flag_or_file),
        settings::GRACE.check(s.grace.as_ref(), flag_or_file),
        settings::NOISE_SIGMA.check(s.noise_sigma.as_ref(), flag_or_file),
        settings::RERUN_SHARE.check(s.rerun_share.as_ref(), flag_or_file),
        settings::TUNE_SHARE.check(s.tune_share.as_ref(), flag_or_file),
        settings::WORKERS.check(s.workers.as_ref(), flag_or_file),
        settings::MAX_COST_USD.check(s.max_cost_usd.as_ref(), flag_or_file),
        settings::NOTIFY_CRASHES.check(s.notify_crashes.as_ref(), in_file),
        settings::NOTIFY_IDLE_HOURS.check(s.notify_idle_hours.as_ref(), in_file),
        gib("limits.memory_gib").check(limits.memory_gib.as_ref(), in_file),
        gib("limits.export_gib").check(limits.export_gib.as_ref(), in_file),
        gib("limits.tmp_gib").check(limits.tmp_gib.as_ref(), in_file),
        settings::PROCESSES.check(limits.processes.as_ref(), in_file),
        settings::BUILD_SECONDS.check(limits.build_seconds.as_ref(), in_file),
        settings::GPU_MEMORY_SHARE.check(limits.gpu_memory_share.as_ref(), in_file),
    ]
    .into_iter()
    .collect::<Result<(), String>>()
    .map_err(anyhow::Error::msg)
}

/// The `[limits]` of autoresearch.toml, with the defaults for `workers` workers.
fn resources(limits: LimitSettings, workers: usize) -> Resources {
    let bytes = |gib: Option<f64>| gib.map(|g| (g * GIB) as u64);
    // Each worker's jails in turn, and the odd build or evaluation beside them: a quarter of
    // the machine stays for the orchestrator, the system and the page cache.
    let machine = crate::sandbox::machine_memory().unwrap_or(16 << 30);
    Resources {
        memory_bytes: bytes(limits.memory_gib).unwrap_or(machine / 4 * 3 / workers as u64),
        processes: limits.processes.unwrap_or(4096),
        export_bytes: bytes(limits.export_gib).unwrap_or(4 << 30),
        tmp_bytes: bytes(limits.tmp_gib).unwrap_or(1 << 30),
        build_seconds: limits.build_seconds.unwrap_or(1800),
        gpu_memory_share: limits.gpu_memory_share,
    }
}

const GIB: f64 = (1u64 << 30) as f64;

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

/// `autoresearch.toml`, or no settings where there is none.
fn read_file(path: &Path) -> Result<Settings> {
    match std::fs::read_to_string(path) {
        // Only the parser's message (which lists the known keys for an unknown one), not its
        // snippet of the file, which could hold a secret.
        Ok(text) => toml::from_str(&text).map_err(|e| {
            let key = e
                .span()
                .and_then(|span| key_at(&text, span.start))
                .map(|key| format!(" (at {key})"))
                .unwrap_or_default();
            anyhow::anyhow!(
                "{} is not valid: {}{key} (API keys belong in OPENAI_API_KEY)",
                path.display(),
                e.message().trim()
            )
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Settings::default()),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

/// The key of the `key = value` line holding byte `offset` of `text`, without its value.
fn key_at(text: &str, offset: usize) -> Option<String> {
    let start = text[..offset.min(text.len())]
        .rfind('\n')
        .map_or(0, |i| i + 1);
    let (key, _) = text[start..].lines().next()?.split_once('=')?;
    Some(key.trim().to_string()).filter(|k| !k.is_empty())
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
    use crate::executor::Limits;

    #[test]
    fn flags_beat_the_file_and_the_file_beats_defaults() {
        let repo = tempfile::tempdir().unwrap();
        std::fs::write(
            repo.path().join("autoresearch.toml"),
            "tag = \"fromfile\"\ntime_budget = 60\nagent = \"offline\"\n\
             [limits]\ngpu_memory_share = 0.5\n",
        )
        .unwrap();
        let cfg = Config::resolve(
            Settings {
                time_budget: Some(5.0),
                ..Default::default()
            },
            repo.path(),
        )
        .unwrap();
        assert_eq!(cfg.tag, "fromfile");
        assert_eq!(cfg.settings.time_budget, Some(5.0));
        assert_eq!(cfg.agent, AgentKind::Offline);
        assert_eq!(cfg.resources.gpu_memory_share, Some(0.5));
        let limits = |budget| Limits::measured(budget, cfg.settings.grace(), &[]);
        assert_eq!(limits(5.0).train, Duration::from_secs(70));
        assert_eq!(limits(300.0).train, Duration::from_secs(420));
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
            Config::resolve(Settings::default(), repo.path()).unwrap_err()
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

    fn error(flags: Settings, file: &str) -> String {
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
            (
                "[limits]\ngpu_memory_share = 1.5",
                "limits.gpu_memory_share is 1.5 (",
            ),
            (
                "[limits]\ngpu_memory_share = 0",
                "limits.gpu_memory_share is 0 (",
            ),
        ] {
            let err = error(Settings::default(), file);
            assert!(
                err.contains(expected) && err.contains("autoresearch.toml): it must be"),
                "{file}: {err}"
            );
        }
        // A value of the wrong type is named by its key.
        let err = error(Settings::default(), "max_cost_usd = \"ten\"\n");
        assert!(err.contains("(at max_cost_usd)"), "{err}");
        for (file, expected) in [
            ("max_cost_usd = -1", "max_cost_usd is -1 (max_cost_usd in "),
            ("notify_crashes = 0", "notify_crashes is 0 ("),
            ("notify_idle_hours = 0", "notify_idle_hours is 0 ("),
        ] {
            let err = error(Settings::default(), file);
            assert!(err.contains(expected), "{file}: {err}");
        }
        // A flag is named as the flag, and wins over a valid file value.
        let flags = Settings {
            time_budget: Some(f64::INFINITY),
            noise_seeds: Some(0),
            ..Default::default()
        };
        let err = error(flags, "time_budget = 60");
        assert!(
            err.contains("time_budget is inf (--time-budget): it must be a number of seconds > 0"),
            "{err}"
        );
        let flags = Settings {
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
        let cfg = Config::resolve(Settings::default(), repo.path()).unwrap();
        let s = &cfg.settings;
        assert_eq!((s.grace(), s.rerun_share(), s.noise_seeds()), (0.0, 0.0, 1));
    }
}
