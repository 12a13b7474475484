//! Start or resume: the run's branch, the base commit that everything outside the trainer must
//! stay at, the protected evaluator built from it, the agent and the executor, and the facts
//! every phase shares: the budget, resolved here once, and the hard limits.

use anyhow::{Result, bail};

use crate::Stop;
use crate::agent::Agent;
use crate::config::{AgentKind, Config};
use crate::decide::Noise;
use crate::executor::{Executor, Limits, Local};
use crate::git::{EDITABLE, Git};
use crate::ledger::{self, Ledger};
use crate::program::Program;
use crate::progress::Progress;
use crate::scoring::Evaluator;
use crate::setup;
use crate::tools::Workspace;

pub(super) struct Session {
    pub cfg: Config,
    pub git: Git,
    pub ledger: Ledger,
    /// The run's first commit: files outside the trainer must stay as they are there.
    pub base: String,
    /// Training seconds per run: `--time-budget`, else the contract's.
    pub budget: f64,
    pub limits: Limits,
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
        let git = Git::new(&cfg.repo);
        let data = setup::ensure_ready(&cfg)?;
        let budget = cfg.time_budget.unwrap_or(data.contract().time_budget_s);
        let ledger = Ledger::open(&cfg.run_dir())?;
        checkout(&cfg, &git, &ledger)?;
        let base = base_commit(&git, &ledger)?;
        // Built before the agent changes anything, from files checked to be the base commit's.
        let evaluator = Evaluator::build(&cfg).await?;
        let executor = Local::new(evaluator, &cfg)?;
        let limits = cfg.limits(budget);
        announce(&cfg, budget, limits, data.contract_hash());
        let progress = Progress::new();
        Ok(Session {
            agent: Agent::new(&cfg)?,
            ws: Workspace::new(&cfg.repo),
            program: Program::watch(&cfg.repo.join("program.md"), &progress),
            executor: Box::new(executor),
            progress,
            empty_proposals: 0,
            git,
            ledger,
            base,
            budget,
            limits,
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

/// Puts the working tree on the run's branch: a new one from a clean tree, or the existing one
/// at its best commit on `--resume`.
fn checkout(cfg: &Config, git: &Git, ledger: &Ledger) -> Result<()> {
    let branch = cfg.branch();
    if cfg.resume {
        if !git.branch_exists(&branch) {
            bail!("there is no branch {branch} to resume; start it without --resume");
        }
        git.run(&["checkout", "--quiet", "--force", &branch])?;
        if let Some(best) = ledger.best() {
            git.reset_to(&best.commit)?;
        }
        return Ok(());
    }
    let dirty = git.dirty_tracked()?;
    if !dirty.is_empty() {
        bail!(
            "the working tree has uncommitted changes to tracked files; commit or stash them first:\n{}",
            dirty.join("\n")
        );
    }
    if git.branch_exists(&branch) || !ledger.records.is_empty() {
        bail!("{branch} already exists; continue it with --resume, or choose another --tag");
    }
    git.run(&["checkout", "--quiet", "-b", &branch])?;
    Ok(())
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
fn announce(cfg: &Config, budget: f64, limits: Limits, contract: &str) {
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
