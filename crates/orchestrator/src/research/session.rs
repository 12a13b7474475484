//! Start or resume: the sandbox this machine offers, the run's worktree and branch, the base
//! commit that everything outside the trainer must stay at, the protected evaluator built from
//! it (or checked against the pins of the run's first record), the agent and the executor, and
//! the facts every phase shares: the budget, resolved here once, and the hard limits.

use std::path::PathBuf;

use anyhow::{Result, bail};

use crate::Stop;
use crate::agent::Agent;
use crate::cargo_build::{self, Builder};
use crate::config::{AgentKind, Config};
use crate::decide::Noise;
use crate::executor::{Executor, Limits, Local};
use crate::git::{EDITABLE, Git};
use crate::ledger::{self, Ledger, Pins};
use crate::program::Program;
use crate::progress::Progress;
use crate::sandbox::Sandbox;
use crate::scoring::Evaluator;
use crate::tools::Workspace;
use crate::{setup, worktree};

pub(super) struct Session {
    pub cfg: Config,
    /// The experiments' checkout, `runs/<tag>/worktree`; `git` works there.
    pub worktree: PathBuf,
    pub git: Git,
    pub ledger: Ledger,
    /// The run's first commit: files outside the trainer must stay as they are there.
    pub base: String,
    /// Training seconds per run: `--time-budget`, else the contract's.
    pub budget: f64,
    pub limits: Limits,
    /// Builds the trainer in the sandbox.
    pub builder: Builder,
    /// What the run's first record pins.
    pub pins: Pins,
    pub agent: Agent,
    pub ws: Workspace,
    pub executor: Box<dyn Executor>,
    pub progress: Progress,
    pub program: Program,
    /// Proposals in a row that changed nothing.
    pub empty_proposals: u32,
}

impl Session {
    pub async fn start(cfg: Config) -> Result<Session> {
        let data = setup::ensure_ready(&cfg)?;
        let budget = cfg.time_budget.unwrap_or(data.contract().time_budget_s);
        let ledger = Ledger::open(&cfg.run_dir())?;
        let libtorch = libtorch(&cfg);
        let sandbox = Sandbox::detect(cfg.sandbox, &libtorch)?;
        let worktree = worktree::open(&cfg, &ledger)?;
        let git = Git::new(&worktree);
        let base = base_commit(&git, &ledger)?;
        cargo_build::fetch(&worktree).await?;
        let builder = Builder {
            sandbox: sandbox.clone(),
            libtorch,
        };
        let first = ledger.records.first();
        if first.is_some_and(|r| r.pins.is_none()) {
            eprintln!(
                "note: this run's first record pins no evaluator or data hashes (it predates \
                 them); they are not checked on this resume"
            );
        }
        // Built before the agent changes anything, from files checked to be the base commit's.
        let evaluator = Evaluator::open(
            &cfg,
            &builder,
            &worktree,
            first.and_then(|r| r.pins.as_ref()),
        )
        .await?;
        let pins = evaluator.pins();
        let executor = Local::new(evaluator, &cfg, sandbox.clone())?;
        let limits = cfg.limits(budget);
        announce(&cfg, budget, limits, data.contract_hash(), &sandbox);
        let progress = Progress::new();
        Ok(Session {
            agent: Agent::new(&cfg, &builder)?,
            ws: Workspace::new(&worktree),
            // The person's file, in the person's checkout.
            program: Program::watch(&cfg.repo.join("program.md"), &progress),
            executor: Box::new(executor),
            progress,
            empty_proposals: 0,
            worktree,
            git,
            ledger,
            base,
            budget,
            limits,
            builder,
            pins,
            cfg,
        })
    }

    /// The next experiment's number, or None once the run is to stop.
    pub fn next_seq(&mut self, stop: &Stop) -> Option<u64> {
        let seq = self.ledger.next_seq();
        if self.cfg.max_experiments.is_some_and(|max| seq >= max) || stop.requested() {
            return None;
        }
        self.progress.set_context(self.context(seq));
        Some(seq)
    }

    /// The noise floor the decisions use now.
    pub fn noise(&self) -> Option<Noise> {
        ledger::noise_in_force(&self.ledger.records, self.cfg.noise_sigma)
    }

    /// Files outside the trainer that differ from the base commit.
    pub fn changed_outside(&self) -> Result<Vec<String>> {
        self.git.changed_outside_editable(&self.base)
    }

    pub fn stopped(&mut self) {
        self.progress
            .set_context(self.context(self.ledger.next_seq()));
        self.progress.println(&format!(
            "stopped; results in {}",
            self.cfg.run_dir().join("results.tsv").display()
        ));
    }

    /// Experiment number, best, noise and tallies, shown with every phase.
    fn context(&self, seq: u64) -> String {
        let tally = ledger::tally(&self.ledger.records);
        let best = self
            .ledger
            .best()
            .and_then(|b| b.val_bpb)
            .map_or("-".into(), |b| format!("{b:.6}"));
        let sigma = self
            .noise()
            .map_or(String::new(), |n| format!(" (sigma {:.6})", n.sigma));
        format!(
            "#{seq} best {best}{sigma} | {} keep {} discard {} crash",
            tally.keeps, tally.discards, tally.crashes
        )
    }
}

/// The libtorch the builds link: `LIBTORCH`, else the checkout's `.libtorch` (a link, kept as one:
/// the path is part of cargo's fingerprint of libtorch's bindings).
fn libtorch(cfg: &Config) -> PathBuf {
    let path =
        std::env::var_os("LIBTORCH").map_or_else(|| cfg.repo.join(".libtorch"), PathBuf::from);
    std::path::absolute(&path).unwrap_or(path)
}

/// The baseline's commit (or the commit the first, interrupted experiment started from), after
/// checking that nothing outside the trainer differs from it.
fn base_commit(git: &Git, ledger: &Ledger) -> Result<String> {
    let base = match (ledger.records.first(), ledger.pending()?) {
        (Some(baseline), _) => baseline.commit.clone(),
        (None, Some(pending)) => pending.parent,
        (None, None) => git.head()?,
    };
    let outside = git.changed_outside_editable(&base)?;
    if !outside.is_empty() {
        bail!(
            "files outside {EDITABLE} differ from the run's base commit {}: {}. Restore them \
             (git checkout {base} -- FILE) before running",
            &base[..base.len().min(7)],
            outside.join(", ")
        );
    }
    Ok(base)
}

/// The start-up block: what runs, where, and under which limits.
fn announce(cfg: &Config, budget: f64, limits: Limits, contract: &str, sandbox: &Sandbox) {
    let model = match cfg.agent {
        AgentKind::Openai => {
            let endpoint = cfg
                .base_url
                .as_deref()
                .map_or("api.openai.com".into(), host);
            format!(" | model {} at {endpoint}", cfg.model)
        }
        AgentKind::Offline => String::new(),
    };
    let noise = match (cfg.noise_sigma, cfg.noise_seeds) {
        (Some(sigma), _) => format!("sigma {sigma} as configured"),
        (None, 1) => "not measured (1 seed): any gain is kept".into(),
        (None, n) => format!("measured with {n} seeds"),
    };
    eprintln!(
        "autoresearch | agent {:?}{model} | branch {} | budget {budget} s (killed after {} s) | noise {noise} | device {} | contract {contract} | logs {}",
        cfg.agent,
        cfg.branch(),
        limits.train.as_secs_f64(),
        cfg.device.device(),
        cfg.run_dir().display()
    );
    if sandbox.confined() {
        eprintln!("sandbox | {}", sandbox.support());
    } else {
        eprintln!(
            "WARNING: NO SANDBOX. The agent's code (its build, the trainer, the models the \
             evaluator loads) runs with your permissions, your files and the network; only its \
             environment is filtered. {}",
            sandbox.support()
        );
    }
    if cfg.agent == AgentKind::Offline {
        eprintln!(
            "offline agent: tuning the trainer's constants. For real research ideas connect an LLM: \
             set OPENAI_BASE_URL (any OpenAI-compatible server) and OPENAI_API_KEY, and pass --model."
        );
    }
}

/// The host of an endpoint URL, for the start-up block (never the whole URL, which may carry a key).
fn host(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    rest.split(['/', '?'])
        .next()
        .unwrap_or(rest)
        .rsplit('@')
        .next()
        .unwrap_or(rest)
        .to_string()
}
