//! Settings: command-line flags, then environment, then `autoresearch.toml`, then defaults.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand, ValueEnum};
use prepare::Profile;
use serde::Deserialize;

use crate::executor::Limits;

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
    /// Seed of the offline agent's search.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Seeds the baseline is trained with to measure the noise floor (1 turns the noise-aware
    /// decisions off; default 3).
    #[arg(long)]
    pub noise_seeds: Option<usize>,
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
    /// Compiler-error repair rounds per experiment.
    max_repairs: Option<u32>,
    /// Seconds the trainer may run past its budget (start-up, evaluation) before it is killed.
    grace: Option<f64>,
    noise_seeds: Option<usize>,
    /// A known noise floor (std dev of val_bpb between runs) instead of measuring it.
    noise_sigma: Option<f64>,
    /// Most of the training time that re-runs of ambiguous results may take.
    rerun_share: Option<f64>,
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
    pub seed: u64,
    pub max_repairs: u32,
    pub grace: f64,
    pub noise_seeds: usize,
    pub noise_sigma: Option<f64>,
    pub rerun_share: f64,
    /// Where the trainer's data lives ($AUTORESEARCH_DATA, default data/enwik8).
    pub data_dir: PathBuf,
    /// Cargo's target directory for trainer builds (CARGO_TARGET_DIR, default <repo>/target).
    pub target_dir: PathBuf,
    /// What the trainer and the evaluator run on, and so which of the trainer's configurations
    /// the agent tunes: $AUTORESEARCH_DEVICE (`cpu` or `cuda`), else what this machine has.
    pub device: Profile,
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
        let time_budget = args.time_budget.or(file.time_budget);
        if let Some(b) = time_budget
            && (b.is_nan() || b <= 0.0)
        {
            bail!("the time budget must be a positive number of seconds, not {b}");
        }
        Ok(Config {
            repo: repo.to_path_buf(),
            tag: args.tag.or(file.tag).unwrap_or_else(default_tag),
            time_budget,
            max_experiments: args.max_experiments.or(file.max_experiments),
            agent,
            model: args
                .model
                .or(env(MODEL_ENV))
                .or(file.model)
                .unwrap_or_else(|| "gpt-4.1".into()),
            base_url,
            api_key,
            resume: args.resume,
            seed: args.seed.or(file.seed).unwrap_or(0),
            max_repairs: file.max_repairs.unwrap_or(3),
            grace: file.grace.unwrap_or(120.0),
            noise_seeds: args.noise_seeds.or(file.noise_seeds).unwrap_or(3).max(1),
            noise_sigma: file.noise_sigma,
            rerun_share: file.rerun_share.unwrap_or(0.25),
            data_dir: env(prepare::DATA_ENV)
                .map_or_else(|| repo.join("data").join("enwik8"), PathBuf::from),
            target_dir: env("CARGO_TARGET_DIR").map_or_else(|| repo.join("target"), PathBuf::from),
            device,
        })
    }

    pub fn branch(&self) -> String {
        format!("autoresearch/{}", self.tag)
    }

    pub fn run_dir(&self) -> PathBuf {
        self.repo.join("runs").join(&self.tag)
    }

    /// The hard limits for runs of `budget` training seconds: a training run gets the budget
    /// plus the grace, at most 2x budget + 60 s; a protected evaluation gets what the trainer got
    /// for start-up and its own evaluation.
    pub fn limits(&self, budget: f64) -> Limits {
        let train = (budget + self.grace).min(2.0 * budget + 60.0);
        Limits {
            train: Duration::from_secs_f64(train),
            eval: Duration::from_secs_f64(train - budget),
        }
    }
}

fn read_file_config(path: &Path) -> Result<FileConfig> {
    match std::fs::read_to_string(path) {
        // Only the parser's message, not its snippet of the file, which could hold a secret.
        Ok(text) => toml::from_str(&text).map_err(|e| {
            anyhow::anyhow!(
                "{} is not valid ({}): it takes tag, time_budget, max_experiments, agent, model, \
                 base_url, seed, max_repairs, grace, noise_seeds, noise_sigma and rerun_share \
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
        assert_eq!(cfg.limits(5.0).train, Duration::from_secs(70));
        assert_eq!(cfg.limits(300.0).train, Duration::from_secs(420));
        assert_eq!(cfg.limits(300.0).eval, Duration::from_secs(120));
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
}
