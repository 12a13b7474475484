//! Every setting of a run, declared once: its flag (clap), its environment variable where it has
//! one (clap's `env`), its key in `autoresearch.toml` (serde, which refuses an unknown key and
//! lists the known ones), its range (a [`Bounded`] value parser, checked again for the file's
//! values), and its default (the accessors below).

use std::ffi::OsStr;
use std::fmt::Display;
use std::str::FromStr;

use clap::ValueEnum;
use clap::builder::TypedValueParser;
use serde::{Deserialize, Serialize};

use crate::sandbox::Mode;

/// The LLM's model name when `--model` is not given (the trainer's variables are in `prepare`).
pub const MODEL_ENV: &str = "AUTORESEARCH_MODEL";
/// The workers when `--workers` is not given.
pub const WORKERS_ENV: &str = "AUTORESEARCH_WORKERS";

/// A run's settings as one layer gives them (the command line with its environment, or
/// `autoresearch.toml`); [`Settings::over`] puts one layer over another. Unset is `None`.
#[derive(clap::Args, Serialize, Deserialize, Debug, Default, Clone, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// Run name: branch autoresearch/<tag>, logs in runs/<tag>/ (default: today, e.g. nov22).
    #[arg(long)]
    pub tag: Option<String>,
    /// Training seconds per experiment (default: the evaluation contract's budget).
    #[arg(long, value_parser = TIME_BUDGET)]
    pub time_budget: Option<f64>,
    /// Stop after this many experiments, the baseline included (default: never).
    #[arg(long, value_parser = MAX_EXPERIMENTS)]
    pub max_experiments: Option<u64>,
    /// `openai` (any OpenAI-compatible endpoint) or `offline` (built-in search, no LLM).
    #[arg(long, value_enum)]
    pub agent: Option<AgentKind>,
    /// Model name for the OpenAI-compatible endpoint.
    #[arg(long, env = MODEL_ENV)]
    pub model: Option<String>,
    /// Any OpenAI-compatible chat-completions endpoint (OpenAI, vLLM, llama.cpp, Ollama).
    #[arg(long, env = "OPENAI_BASE_URL", hide_env_values = true)]
    pub base_url: Option<String>,
    /// Continue an existing tag after a stop or crash.
    #[arg(long)]
    #[serde(skip)]
    pub resume: bool,
    /// Start the tag from REF instead of the checkout's HEAD: a commit, a branch, or TAG:SEQ (an
    /// experiment of an earlier run, kept or discarded).
    #[arg(long, value_name = "REF", conflicts_with = "resume")]
    #[serde(skip)]
    pub from: Option<String>,
    /// Start without the memory of earlier runs (memory.md is neither read nor updated).
    #[arg(long)]
    #[serde(skip)]
    pub fresh: bool,
    /// Seed of the offline agent's search.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Seeds the baseline is trained with to measure the noise floor (1 turns the noise-aware
    /// decisions off; default 3; at most 100).
    #[arg(long, value_parser = NOISE_SEEDS)]
    pub noise_seeds: Option<usize>,
    /// Experiments in flight at once, each with its own worktree, build and GPU (default 1).
    #[arg(long, env = WORKERS_ENV, value_parser = WORKERS)]
    pub workers: Option<usize>,
    /// The GPUs the local workers use, one each, e.g. `0,1,2,3` (default: every visible GPU).
    #[arg(long)]
    pub gpus: Option<String>,
    /// Where trials run: `local` (this machine) or `slurm` (a job each, see docs/slurm.md).
    #[arg(long, value_enum)]
    pub executor: Option<ExecutorKind>,
    /// End the night cleanly once the LLM has cost this many USD (default: no cap).
    #[arg(long, value_parser = MAX_COST_USD)]
    pub max_cost_usd: Option<f64>,
    /// Serve the live dashboard at this address during the run, e.g. 127.0.0.1:8080.
    #[arg(long, value_name = "ADDR")]
    pub dashboard: Option<String>,
    /// Allow `--dashboard` on an address other machines can reach (the page has no password).
    #[arg(long)]
    #[serde(skip)]
    pub public: bool,
    /// The LLM's context in tokens (default: what the server states, else 32768).
    #[arg(skip)]
    pub context_tokens: Option<u64>,
    /// Seconds one proposal of the LLM agent may take, its requests and tools included.
    #[arg(skip)]
    pub proposal_timeout: Option<f64>,
    /// Hours the LLM endpoint may keep failing before the run stops (resumable).
    #[arg(skip)]
    pub outage_hours: Option<f64>,
    /// Ask the LLM endpoint for streamed replies (server-sent events; default true).
    #[arg(skip)]
    pub stream: Option<bool>,
    /// Compiler-error repair rounds per experiment.
    #[arg(skip)]
    pub max_repairs: Option<u32>,
    /// Seconds the trainer may run past its budget (start-up, export) before it is killed.
    #[arg(skip)]
    pub grace: Option<f64>,
    /// A known noise floor (std dev of val_bpb between runs) instead of measuring it.
    #[arg(skip)]
    pub noise_sigma: Option<f64>,
    /// Most of the training time that re-runs of ambiguous results may take.
    #[arg(skip)]
    pub rerun_share: Option<f64>,
    /// With an LLM: the share of experiments the model-based search proposes.
    #[arg(skip)]
    pub tune_share: Option<f64>,
    /// Stop a change's run that is clearly worse than the best's runs were at the same point.
    #[arg(skip)]
    pub early_stop: Option<bool>,
    /// `off` runs the agent's code unconfined where the machine has no sandbox.
    #[arg(skip)]
    pub sandbox: Option<Mode>,
    #[arg(skip)]
    pub slurm: Option<SlurmSettings>,
    #[arg(skip)]
    pub limits: Option<LimitSettings>,
    /// A command told of what happens in the night, one JSON event on its stdin (`notify`).
    #[arg(skip)]
    pub notify: Option<String>,
    /// Crashes in a row that make an alert.
    #[arg(skip)]
    pub notify_crashes: Option<u32>,
    /// Hours without a keep that make an alert.
    #[arg(skip)]
    pub notify_idle_hours: Option<f64>,
    /// USD per million tokens by model, `"name" = { input = 2.0, output = 8.0 }`, checked by
    /// `cost` (which names a bad value's key).
    #[arg(skip)]
    pub prices: Option<toml::Table>,
}

#[derive(ValueEnum, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum AgentKind {
    Openai,
    Offline,
}

#[derive(ValueEnum, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum ExecutorKind {
    #[default]
    Local,
    Slurm,
}

/// autoresearch.toml's `[slurm]` table: how each trial's job is submitted.
#[derive(Serialize, Deserialize, Debug, Default, Clone, PartialEq)]
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
#[derive(Serialize, Deserialize, Debug, Default, Clone, Copy, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LimitSettings {
    /// GiB of memory per jail; default 3/4 of the machine's divided among the workers.
    pub memory_gib: Option<f64>,
    /// Processes (and threads) per jail; default 4096.
    pub processes: Option<u64>,
    /// GiB the trainer may export; default 4.
    pub export_gib: Option<f64>,
    /// GiB of each jail's /tmp and /dev/shm; default 1.
    pub tmp_gib: Option<f64>,
    /// Seconds one build may take; default 1800 (the first build of a fresh target compiles
    /// libtorch's C++ wrapper, minutes; later trainer builds take seconds).
    pub build_seconds: Option<u64>,
    /// The share of its GPU's memory a trainer or the evaluator may allocate; default all of it.
    pub gpu_memory_share: Option<f64>,
}

/// A day in seconds: the most a budget or a grace may be (a larger one is a typo, and past
/// `Duration`'s range it would panic).
pub const DAY: f64 = 86_400.0;

/// The values a numeric setting may take, and how its error says so. Checked at start: a value
/// out of range would otherwise pass until it panics or misleads hours into the run (an
/// infinite budget, a negative grace, a NaN sigma).
#[derive(Clone, Copy)]
pub struct Bounded<T: 'static> {
    pub name: &'static str,
    pub valid: fn(&T) -> bool,
    pub expected: &'static str,
}

pub const TIME_BUDGET: Bounded<f64> = Bounded {
    name: "time_budget",
    valid: |b| b.is_finite() && *b > 0.0 && *b <= DAY,
    expected: "a number of seconds > 0 and <= 86400",
};
pub const MAX_EXPERIMENTS: Bounded<u64> = Bounded {
    name: "max_experiments",
    valid: |n| *n >= 1,
    expected: "at least 1 (the baseline)",
};
pub const NOISE_SEEDS: Bounded<usize> = Bounded {
    name: "noise_seeds",
    valid: |n| (1..=100).contains(n),
    expected: "from 1 (noise not measured) to 100",
};
pub const WORKERS: Bounded<usize> = Bounded {
    name: "workers",
    valid: |w| (1..=256).contains(w),
    expected: "from 1 to 256",
};
pub const MAX_REPAIRS: Bounded<u32> = Bounded {
    name: "max_repairs",
    valid: |n| *n <= 100,
    expected: "from 0 to 100 rounds",
};
pub const CONTEXT_TOKENS: Bounded<u64> = Bounded {
    name: "context_tokens",
    valid: |n| (1024..=10_000_000).contains(n),
    expected: "a number of tokens from 1024 to 10000000",
};
pub const PROPOSAL_TIMEOUT: Bounded<f64> = Bounded {
    name: "proposal_timeout",
    valid: |t| t.is_finite() && *t >= 10.0 && *t <= DAY,
    expected: "a number of seconds >= 10 and <= 86400",
};
pub const OUTAGE_HOURS: Bounded<f64> = Bounded {
    name: "outage_hours",
    valid: |h| h.is_finite() && *h >= 0.0 && *h <= 240.0,
    expected: "a number of hours from 0 to 240",
};
pub const GRACE: Bounded<f64> = Bounded {
    name: "grace",
    valid: |g| g.is_finite() && *g >= 0.0 && *g <= DAY,
    expected: "a number of seconds >= 0 and <= 86400",
};
pub const NOISE_SIGMA: Bounded<f64> = Bounded {
    name: "noise_sigma",
    valid: |s| s.is_finite() && *s > 0.0,
    expected: "a finite standard deviation > 0",
};
pub const RERUN_SHARE: Bounded<f64> = Bounded {
    name: "rerun_share",
    valid: |r| r.is_finite() && (0.0..=1.0).contains(r),
    expected: "a share of the training time from 0 to 1",
};
pub const TUNE_SHARE: Bounded<f64> = Bounded {
    name: "tune_share",
    valid: |r| r.is_finite() && (0.0..=1.0).contains(r),
    expected: "a share of the experiments from 0 to 1",
};
pub const MAX_COST_USD: Bounded<f64> = Bounded {
    name: "max_cost_usd",
    valid: |c| c.is_finite() && *c >= 0.0,
    expected: "a number of USD >= 0",
};
pub const NOTIFY_CRASHES: Bounded<u32> = Bounded {
    name: "notify_crashes",
    valid: |n| *n >= 1,
    expected: "at least 1",
};
pub const NOTIFY_IDLE_HOURS: Bounded<f64> = Bounded {
    name: "notify_idle_hours",
    valid: |h| h.is_finite() && *h > 0.0 && *h <= 240.0,
    expected: "a number of hours > 0 and <= 240",
};
/// `limits.memory_gib`, `limits.export_gib`, `limits.tmp_gib`, see [`Bounded::named`].
pub const GIB_LIMIT: Bounded<f64> = Bounded {
    name: "limits.memory_gib",
    valid: |g| g.is_finite() && *g >= 0.01 && *g <= 1_048_576.0,
    expected: "a number of GiB from 0.01 to 1048576",
};
pub const PROCESSES: Bounded<u64> = Bounded {
    name: "limits.processes",
    valid: |p| (16..=4_194_304).contains(p),
    expected: "from 16 to 4194304",
};
pub const BUILD_SECONDS: Bounded<u64> = Bounded {
    name: "limits.build_seconds",
    valid: |s| (1..=DAY as u64).contains(s),
    expected: "a number of seconds from 1 to 86400",
};
pub const GPU_MEMORY_SHARE: Bounded<f64> = Bounded {
    name: "limits.gpu_memory_share",
    valid: |s| s.is_finite() && *s > 0.0 && *s <= 1.0,
    expected: "a share of the GPU's memory > 0 and <= 1",
};

impl<T: Display> Bounded<T> {
    /// Refuses `value` unless valid, naming the setting, where it came from (`from` its name)
    /// and what it must be.
    pub fn check(&self, value: Option<&T>, from: impl Fn(&str) -> String) -> Result<(), String> {
        match value {
            Some(v) if !(self.valid)(v) => Err(format!(
                "{} is {v} ({}): it must be {}",
                self.name,
                from(self.name),
                self.expected
            )),
            _ => Ok(()),
        }
    }

    /// These bounds for the setting `name`.
    pub fn named(self, name: &'static str) -> Bounded<T> {
        Bounded { name, ..self }
    }
}

/// As clap's value parser: a flag's (or its environment variable's) value, parsed and checked.
impl<T> TypedValueParser for Bounded<T>
where
    T: FromStr + Display + Clone + Send + Sync + 'static,
    T::Err: Display,
{
    type Value = T;

    fn parse_ref(
        &self,
        _cmd: &clap::Command,
        arg: Option<&clap::Arg>,
        value: &OsStr,
    ) -> Result<T, clap::Error> {
        let text = value.to_string_lossy();
        let from = arg.map_or_else(|| self.name.to_string(), |arg| origin(arg, value));
        let refuse = |why: String| clap::Error::raw(clap::error::ErrorKind::ValueValidation, why);
        let parsed = text
            .parse::<T>()
            .map_err(|e| refuse(format!("{} is {text:?} ({from}): {e}\n", self.name)))?;
        self.check(Some(&parsed), |_| from.clone())
            .map_err(|why| refuse(why + "\n"))?;
        Ok(parsed)
    }
}

/// Where clap found `value` of `arg`: its environment variable when that holds it, else its flag.
fn origin(arg: &clap::Arg, value: &OsStr) -> String {
    match arg.get_env() {
        Some(env) if std::env::var_os(env).as_deref() == Some(value) => {
            env.to_string_lossy().into_owned()
        }
        _ => format!("--{}", arg.get_long().unwrap_or_default()),
    }
}

impl Settings {
    /// These settings, and `lower`'s where these leave one unset (an empty text counts as
    /// unset, as an empty environment variable does).
    pub fn over(&self, lower: &Settings) -> anyhow::Result<Settings> {
        let mut merged = toml::Table::try_from(lower)?;
        for (key, value) in toml::Table::try_from(self)? {
            if value.as_str() != Some("") {
                merged.insert(key, value);
            }
        }
        let mut settings: Settings = merged.try_into()?;
        // The flags that are no keys of the file.
        settings.resume = self.resume || lower.resume;
        settings.fresh = self.fresh || lower.fresh;
        settings.from = self.from.clone().or(lower.from.clone());
        settings.public = self.public || lower.public;
        Ok(settings)
    }

    /// Whether this layer sets `key` (a name of autoresearch.toml).
    pub fn sets(&self, key: &str) -> bool {
        toml::Table::try_from(self).is_ok_and(|table| table.contains_key(key))
    }

    pub fn seed(&self) -> u64 {
        self.seed.unwrap_or(0)
    }

    pub fn noise_seeds(&self) -> usize {
        self.noise_seeds.unwrap_or(3)
    }

    pub fn workers(&self) -> usize {
        self.workers.unwrap_or(1)
    }

    pub fn model(&self) -> &str {
        self.model.as_deref().unwrap_or("gpt-4.1")
    }

    pub fn executor(&self) -> ExecutorKind {
        self.executor.unwrap_or_default()
    }

    pub fn proposal_timeout(&self) -> f64 {
        self.proposal_timeout.unwrap_or(1800.0)
    }

    /// Seconds the LLM endpoint may keep failing before the run stops.
    pub fn outage(&self) -> f64 {
        self.outage_hours.unwrap_or(2.0) * 3600.0
    }

    /// Streamed LLM replies, which a proposal's time bound can cut.
    pub fn stream(&self) -> bool {
        self.stream.unwrap_or(true)
    }

    pub fn max_repairs(&self) -> u32 {
        self.max_repairs.unwrap_or(3)
    }

    pub fn grace(&self) -> f64 {
        self.grace.unwrap_or(120.0)
    }

    pub fn rerun_share(&self) -> f64 {
        self.rerun_share.unwrap_or(0.25)
    }

    /// With an LLM: the share of experiments the model-based search proposes, tuning the
    /// best's constants between the LLM's changes (none unless set: a night with an LLM is the
    /// LLM's, as it was).
    pub fn tune_share(&self) -> f64 {
        self.tune_share.unwrap_or(0.0)
    }

    pub fn early_stop(&self) -> bool {
        self.early_stop.unwrap_or(true)
    }

    pub fn sandbox(&self) -> Mode {
        self.sandbox.unwrap_or_default()
    }

    pub fn slurm(&self) -> SlurmSettings {
        self.slurm.clone().unwrap_or_default()
    }
}
