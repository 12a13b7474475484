//! Start or resume: the sandbox this machine offers, the run's worktree and branch, the base
//! commit that everything outside the trainer must stay at, the protected evaluator built from
//! it (or checked against the pins of the run's first record), the agent and the executor, and
//! the facts every phase shares: the budget, resolved here once, and the hard limits.

use std::cell::{Ref, RefCell, RefMut};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::PathBuf;

use anyhow::{Result, bail};
use prepare::Profile;
use tokio::sync::Notify;

use crate::Stop;
use crate::agent::Agent;
use crate::agent::search::{Trial, history};
use crate::cargo_build::{self, Builder};
use crate::config::{AgentKind, Config, ExecutorKind};
use crate::decide::Noise;
use crate::executor::{Executor, Limits, Local, Slurm};
use crate::git::{EDITABLE, Git};
use crate::ledger::{self, Ledger, Pending, Pins, Record, Start};
use crate::memory;
use crate::program::Program;
use crate::progress::Progress;
use crate::sandbox::Sandbox;
use crate::scoring::Evaluator;
use crate::tools::Workspace;
use crate::{setup, worktree};

pub(super) struct Session {
    pub cfg: Config,
    /// The run's first commit: files outside the trainer must stay as they are there.
    pub base: String,
    /// Training seconds per run: `--time-budget`, else the contract's.
    pub budget: f64,
    /// Builds the trainer in the sandbox, one build at a time.
    pub builder: Builder,
    /// What the run's first record pins.
    pub pins: Pins,
    /// Where the run started, for its first record.
    pub start: Start,
    /// The sections of `memory.md`, for the LLM's brief; empty with `--fresh`.
    pub memory: String,
    pub executor: Box<dyn Executor>,
    pub progress: Progress,
    /// What the workers share and change. Never borrowed across an `.await`: the workers are
    /// futures of one task, and another one runs at every await.
    state: RefCell<State>,
    /// Told of every record, for the workers waiting for the baseline's.
    recorded: Notify,
}

pub(super) struct State {
    pub ledger: Ledger,
    pub program: Program,
    /// Proposals in a row that changed nothing.
    pub empty_proposals: u32,
    /// Experiments committed and waiting for a worker: the interrupted ones on `--resume`, and
    /// changes re-applied onto a newer best.
    queue: VecDeque<Next>,
    /// The experiments in flight, by number: what each changes, for the agents' briefs.
    pub running: BTreeMap<u64, String>,
    /// The training seconds each experiment in flight spent re-running, and in all: the share
    /// of re-runs (`rerun_share`) holds for all workers together, not for each.
    pub run_seconds: BTreeMap<u64, (f64, f64)>,
    /// Numbers never used below the highest one given out (a proposal interrupted before it
    /// was committed), given out first so that the records stay numbered without a gap.
    free: BTreeSet<u64>,
    next_seq: u64,
}

/// One worker: its worktree, its agent (an LLM conversation of its own), its status line, its
/// GPU.
pub(super) struct Worker {
    pub worktree: PathBuf,
    pub git: Git,
    pub ws: Workspace,
    pub agent: Agent,
    pub progress: Progress,
    pub gpu: Option<String>,
    pub stop: Stop,
    /// `[w3] ` with several workers, else nothing.
    pub name: String,
}

/// What a worker does next.
pub(super) enum Next {
    /// The unmodified baseline, experiment 0.
    Baseline,
    /// A new change from the agent, as experiment `seq`.
    Propose(u64),
    /// An experiment interrupted by a stop or a kill, as committed.
    Resume(Pending),
    /// A change that beat its own parent, re-applied onto a newer best.
    Reapplied(Pending),
}

impl Session {
    pub async fn start(cfg: Config) -> Result<(Session, Vec<Worker>)> {
        let data = setup::ensure_ready(&cfg)?;
        let budget = cfg.time_budget.unwrap_or(data.contract().time_budget_s);
        let ledger = Ledger::open(&cfg.run_dir())?;
        // Before the branch is made: a memory that does not parse stops a start that left nothing.
        let memory = memory::open(&cfg)?;
        let libtorch = libtorch(&cfg);
        let readable = [cfg.data_dir.as_path(), &cfg.run_dir()];
        let sandbox = Sandbox::detect(cfg.sandbox, &libtorch, cfg.resources, &readable)?;
        let worktrees = worktree::open(&cfg, &ledger, cfg.workers)?;
        let git = Git::new(&worktrees[0]);
        let pendings = ledger.pendings()?;
        let base = base_commit(&git, &ledger, &pendings)?;
        cargo_build::fetch(&worktrees[0]).await?;
        let builder = Builder::new(sandbox.clone(), libtorch);
        let context = history::Context {
            contract: data.contract_hash().to_string(),
            device: cfg.device.device().to_string(),
            budget,
        };
        let runs = memory.as_ref().map_or(&[][..], |(_, runs)| runs);
        let trials = known_trials(&cfg, &ledger.records, runs, &context)?;
        // First: a wrong key or model stops the run before anything is built.
        let mut agent = Agent::new(&cfg, &builder, trials)?;
        agent.connect().await?;
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
            &worktrees[0],
            first.and_then(|r| r.pins.as_ref()),
        )
        .await?;
        let pins = evaluator.pins();
        let executor: Box<dyn Executor> = match cfg.executor {
            ExecutorKind::Local => Box::new(Local::new(evaluator, &cfg, sandbox.clone())?),
            ExecutorKind::Slurm => Box::new(Slurm::new(evaluator, &cfg, sandbox.clone()).await?),
        };
        let baseline = ledger.records.iter().find(|r| r.seq == 0);
        let limits = cfg.limits(budget, baseline.map_or(&[], |r| &r.trials));
        announce(&cfg, budget, limits, data.contract_hash(), &sandbox);
        let progress = Progress::new();
        let stop = Stop::on_ctrl_c();
        let several = worktrees.len() > 1;
        let workers = worktrees
            .into_iter()
            .enumerate()
            .map(|(k, worktree)| Worker {
                git: Git::new(&worktree),
                ws: Workspace::new(&worktree),
                agent: agent.for_another_worker(),
                progress: if several {
                    progress.another()
                } else {
                    progress.clone()
                },
                gpu: cfg.gpus.get(k).cloned(),
                stop: stop.clone(),
                name: if several {
                    format!("[w{k}] ")
                } else {
                    String::new()
                },
                worktree,
            })
            .collect();
        let highest = pendings.iter().map(|p| p.seq + 1).max().unwrap_or(0);
        let next_seq = ledger.next_seq().max(highest);
        let used: BTreeSet<u64> = ledger
            .records
            .iter()
            .map(|r| r.seq)
            .chain(pendings.iter().map(|p| p.seq))
            .collect();
        let state = State {
            // The person's file, in the person's checkout.
            program: Program::watch(&cfg.repo.join("program.md"), &progress),
            empty_proposals: 0,
            queue: pendings.into_iter().map(Next::Resume).collect(),
            running: BTreeMap::new(),
            run_seconds: BTreeMap::new(),
            free: (0..next_seq).filter(|n| !used.contains(n)).collect(),
            next_seq,
            ledger,
        };
        let start = Start {
            commit: base.clone(),
            from: cfg.from.clone(),
            memory: runs.iter().map(|(tag, _)| tag.clone()).collect(),
        };
        let session = Session {
            progress,
            start,
            memory: memory.map_or(String::new(), |(m, _)| m.sections()),
            base,
            budget,
            builder,
            pins,
            executor,
            state: RefCell::new(state),
            recorded: Notify::new(),
            cfg,
        };
        Ok((session, workers))
    }

    pub fn state(&self) -> RefMut<'_, State> {
        self.state.borrow_mut()
    }

    pub fn ledger(&self) -> Ref<'_, Ledger> {
        Ref::map(self.state.borrow(), |s| &s.ledger)
    }

    /// What `worker` does next; None once the run is to stop. Until the baseline is recorded
    /// the other workers wait: every decision compares with it, and its runs measure the noise.
    pub async fn next(&self, worker: &Worker) -> Option<Next> {
        loop {
            if worker.stop.requested() {
                return None;
            }
            {
                let mut state = self.state();
                if let Some(next) = state.queue.pop_front() {
                    return Some(next);
                }
                let baseline_running = state.ledger.best().is_none() && state.next_seq > 0;
                if !baseline_running {
                    let seq = state.allocate(self.cfg.max_experiments)?;
                    let next = if seq == 0 {
                        Next::Baseline
                    } else {
                        Next::Propose(seq)
                    };
                    worker
                        .progress
                        .set_context(self.context(&state, seq, worker));
                    return Some(next);
                }
            }
            let recorded = self.recorded.notified();
            let mut stop = worker.stop.clone();
            tokio::select! {
                _ = recorded => {}
                _ = stop.wait() => return None,
            }
        }
    }

    /// Wakes the workers waiting for a record.
    pub fn recorded(&self) {
        self.recorded.notify_waiters();
    }

    /// The hard limits of a run now: measured from the baseline's runs once they are recorded
    /// (they are in its record, so a `--resume` finds them again).
    pub fn limits(&self) -> Limits {
        let ledger = self.ledger();
        let baseline = ledger.records.iter().find(|r| r.seq == 0);
        self.cfg
            .limits(self.budget, baseline.map_or(&[], |r| &r.trials))
    }

    /// The noise floor the decisions use now.
    pub fn noise(&self) -> Option<Noise> {
        ledger::noise_in_force(&self.ledger().records, self.cfg.noise_sigma)
    }

    pub fn stopped(&self) {
        self.progress.println(&format!(
            "stopped; results in {}",
            self.cfg.run_dir().join("results.tsv").display()
        ));
    }

    /// Experiment number, best, noise and tallies, shown with every phase.
    pub fn context(&self, state: &State, seq: u64, worker: &Worker) -> String {
        let records = &state.ledger.records;
        let tally = ledger::tally(records);
        let best = ledger::best(records)
            .and_then(|b| b.val_bpb)
            .map_or("-".into(), |b| format!("{b:.6}"));
        let sigma = ledger::noise_in_force(records, self.cfg.noise_sigma)
            .map_or(String::new(), |n| format!(" (sigma {:.6})", n.sigma));
        format!(
            "{}#{seq} best {best}{sigma} | {} keep {} discard {} crash",
            worker.name, tally.keeps, tally.discards, tally.crashes
        )
    }
}

impl State {
    /// A number for a new experiment, or None when `max` experiments have had theirs.
    pub fn allocate(&mut self, max: Option<u64>) -> Option<u64> {
        if let Some(seq) = self.free.pop_first() {
            return Some(seq);
        }
        if max.is_some_and(|max| self.next_seq >= max) {
            return None;
        }
        self.next_seq += 1;
        Some(self.next_seq - 1)
    }

    /// Gives back a number that will not be used after all.
    pub fn release(&mut self, seq: u64) {
        self.free.insert(seq);
    }

    /// A re-applied change waits for the next free worker.
    pub fn enqueue(&mut self, reapplied: Pending) {
        self.queue.push_back(Next::Reapplied(reapplied));
    }
}

impl Worker {
    /// Files outside the trainer that differ from the base commit in this worker's worktree.
    pub fn changed_outside(&self, base: &str) -> Result<Vec<String>> {
        self.git.changed_outside_editable(base)
    }
}

/// The libtorch the builds link: `LIBTORCH`, else the checkout's `.libtorch` (a link, kept as one:
/// the path is part of cargo's fingerprint of libtorch's bindings).
fn libtorch(cfg: &Config) -> PathBuf {
    let path =
        std::env::var_os("LIBTORCH").map_or_else(|| cfg.repo.join(".libtorch"), PathBuf::from);
    std::path::absolute(&path).unwrap_or(path)
}

/// What the search starts knowing: the trials of the earlier `runs` the memory holds and of
/// this run so far, those whose scores compare with this run's (`context`).
fn known_trials(
    cfg: &Config,
    records: &[Record],
    runs: &[(String, Vec<Record>)],
    context: &history::Context,
) -> Result<Vec<Trial>> {
    let git = Git::new(&cfg.repo);
    let mut trials = Vec::new();
    for records in runs.iter().map(|(_, r)| r.as_slice()).chain([records]) {
        trials.extend(history::trials(&git, records, context)?);
    }
    Ok(trials)
}

/// The baseline's commit (or the commit the first, interrupted experiment started from), after
/// checking that nothing outside the trainer differs from it.
fn base_commit(git: &Git, ledger: &Ledger, pendings: &[Pending]) -> Result<String> {
    let base = match (ledger.records.iter().find(|r| r.seq == 0), pendings.first()) {
        (Some(baseline), _) => baseline.commit.clone(),
        (None, Some(pending)) => pending.parent.clone(),
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
    if cfg.workers > 1 {
        let placement = match (cfg.executor, cfg.device) {
            (ExecutorKind::Slurm, _) => "each trial a Slurm job".to_string(),
            (ExecutorKind::Local, Profile::Gpu) => format!("GPUs {}", cfg.gpus.join(",")),
            (ExecutorKind::Local, Profile::Cpu) => format!(
                "all sharing this machine's {} CPU cores: each trainer gets a share of them, so \
                 fewer steps fit in its budget, and the others' load moves its speed, which adds \
                 to the noise between runs (decisions measure and account for it)",
                std::thread::available_parallelism().map_or(1, |n| n.get())
            ),
        };
        eprintln!("workers | {} experiments at once, {placement}", cfg.workers);
    }
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
