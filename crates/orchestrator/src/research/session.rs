//! Start or resume: the sandbox this machine offers, the run's worktree and branch, the base
//! commit that everything outside the trainer must stay at, the protected evaluator built from
//! it (or checked against the pins of the run's first record), the agent and the executor, and
//! the facts every phase shares: the budget, resolved here once, and the hard limits.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use prepare::Profile;
use tokio::sync::Notify;

use super::watch::{self, Watch};
use crate::Stop;
use crate::agent::Agent;
use crate::agent::search::history;
use crate::cargo_build::{self, Builder};
use crate::config::{AgentKind, Config, ExecutorKind};
use crate::decide::{self, Noise};
use crate::executor::{Executor, Limits};
use crate::git::{EDITABLE, Git};
use crate::ledger::{self, Ledger, Pending, Pendings, Pins, Record, Start};
use crate::memory;
use crate::notify::{End, Notifier};
use crate::program::Program;
use crate::progress::Progress;
use crate::sandbox::Sandbox;
use crate::tools::Workspace;
use crate::{rig, setup, worktree};

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
    /// The earlier runs the memory holds, for the first record.
    pub remembered: Vec<String>,
    /// The sections of `memory.md`, for the LLM's brief; empty with `--fresh`.
    pub memory: String,
    pub executor: Box<dyn Executor>,
    pub progress: Progress,
    /// Where the alerts go, and what they and the cost cap watch.
    pub notifier: Notifier,
    pub watch: Watch,
    /// Ctrl-C, which every worker's clone of it watches.
    pub stop: Stop,
    /// The experiments under way, on disk.
    pub pendings: Pendings,
    /// What the workers share and change, lent only to the closures of [`Session::read`] and
    /// [`Session::update`]: a borrow cannot outlive them, so none is held across an `.await`
    /// (the workers are futures of one task, and another one runs at every await).
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
    pub turn: Turn,
}

/// A worker's turn at the state the workers share: lent to [`Session::read`], and mutably to
/// [`Session::update`], so that the compiler refuses a read or an update inside an update (which
/// the `RefCell` would refuse at run time, in the middle of a night). One per worker; only
/// [`Session::start`] makes them.
pub(super) struct Turn(());

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
    /// The session of `cfg`'s night, which shows `progress` and tells `notifier` what happens;
    /// None when Ctrl-C came while it was set up (on a fresh machine the data's preparation and
    /// the evaluator's first build take minutes): what was under way is dropped, its processes
    /// killed, and what was finished (whole files only) is reused the next time.
    pub async fn start(
        cfg: Config,
        progress: Progress,
        notifier: Notifier,
    ) -> Result<Option<(Session, Vec<Worker>)>> {
        let stop = Stop::on_ctrl_c().context("watching for Ctrl-C")?;
        let mut stopped = stop.clone();
        tokio::select! {
            started = Session::set_up(cfg, progress, notifier, stop) => started.map(Some),
            () = stopped.wait() => Ok(None),
        }
    }

    async fn set_up(
        cfg: Config,
        progress: Progress,
        notifier: Notifier,
        stop: Stop,
    ) -> Result<(Session, Vec<Worker>)> {
        // Prepared meanwhile, when missing: the evaluator is built while it is.
        let data = setup::start(&cfg).await?;
        let ledger = Ledger::open(&cfg.run_dir)?;
        // Before the branch is made: a memory that does not parse stops a start that left nothing.
        let memory = memory::open(&cfg)?;
        let builder = rig::builder(&cfg)?;
        let worktrees = worktree::open(&cfg, &ledger, cfg.settings.workers())?;
        let git = Git::new(&worktrees[0]);
        let pendings = Pendings::new(&cfg.run_dir).all()?;
        let base = base_commit(&git, &ledger, &pendings)?;
        cargo_build::fetch(&worktrees[0]).await?;
        let llm = Agent::connect(&cfg, &builder).await?;
        let pinned = ledger.records.first().map(|r| r.pins.clone());
        let (executor, pins, data) =
            rig::executor(&cfg, &builder, &worktrees[0], pinned, data).await?;
        let budget = cfg
            .settings
            .time_budget
            .unwrap_or(data.contract().time_budget_s);
        let context = history::Context::new(data.contract_hash(), cfg.device, budget);
        let runs = memory.as_ref().map_or(&[][..], |(_, runs)| runs);
        let trials = history::known(&cfg.repo, runs, &ledger.records, &context)?;
        let agent = Agent::new(&cfg, llm, trials)?;
        let baseline = ledger.records.iter().find(|r| r.seq == 0);
        let baseline = baseline.map_or(&[][..], |r| &r.trials);
        let limits = Limits::measured(budget, cfg.settings.grace(), baseline);
        announce(&cfg, budget, limits, data.contract_hash(), &builder.sandbox);
        let workers = workers(&cfg, worktrees, &agent, &progress, &stop);
        let watch = Watch::new(&cfg.costs, &ledger.records, &pendings);
        // The person's file, in the person's checkout.
        let program = Program::watch(&cfg.repo.join("program.md"), &progress);
        let state = State::new(ledger, pendings, program);
        let session = Session {
            progress,
            notifier,
            watch,
            stop,
            pendings: Pendings::new(&cfg.run_dir),
            remembered: runs.iter().map(|(tag, _)| tag.clone()).collect(),
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

    /// What `f` reads of the shared state; `f` cannot await, nor reach the state again.
    pub fn read<T>(&self, _turn: &Turn, f: impl FnOnce(&State) -> T) -> T {
        f(&self.state.borrow())
    }

    /// What `f` changes of the shared state, at once; `f` cannot await, nor reach the state
    /// again.
    pub fn update<T>(&self, _turn: &mut Turn, f: impl FnOnce(&mut State) -> T) -> T {
        f(&mut self.state.borrow_mut())
    }

    /// Where the run started, for its first record.
    pub fn started(&self) -> Start {
        Start {
            commit: self.base.clone(),
            from: self.cfg.settings.from.clone(),
            memory: self.remembered.clone(),
        }
    }

    /// The best kept record now.
    pub fn best(&self, turn: &Turn) -> Option<Record> {
        self.read(turn, |state| state.ledger.best().cloned())
    }

    /// What `worker` does next; None once the run is to stop. Until the baseline is recorded
    /// the other workers wait: every decision compares with it, and its runs measure the noise.
    pub async fn next(&self, worker: &Worker) -> Option<Next> {
        loop {
            if worker.stop.requested() {
                return None;
            }
            {
                let mut state = self.state.borrow_mut();
                if let Some(next) = state.queue.pop_front() {
                    return Some(next);
                }
                let baseline_running = state.ledger.best().is_none() && state.next_seq > 0;
                if !baseline_running && !self.cost_allows() {
                    return None;
                }
                if !baseline_running {
                    let seq = state.allocate(self.cfg.settings.max_experiments)?;
                    let next = if seq == 0 {
                        Next::Baseline
                    } else {
                        Next::Propose(seq)
                    };
                    worker
                        .progress
                        .set_context(self.context(&state, seq, &worker.name));
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
    pub fn limits(&self, turn: &Turn) -> Limits {
        self.read(turn, |state| {
            let baseline = state.ledger.records.iter().find(|r| r.seq == 0);
            let baseline = baseline.map_or(&[][..], |r| &r.trials);
            Limits::measured(self.budget, self.cfg.settings.grace(), baseline)
        })
    }

    /// The noise floor the decisions use now.
    pub fn noise(&self, turn: &Turn) -> Option<Noise> {
        self.read(turn, |state| {
            decide::noise_in_force(&state.ledger.records, self.cfg.settings.noise_sigma)
        })
    }

    /// How the night ended, said on the console.
    pub fn stopped(&self) -> End {
        self.progress.println(&format!(
            "stopped; results in {}",
            self.cfg.run_dir.results_tsv().display()
        ));
        match (self.stop.requested(), self.watch.capped()) {
            (true, _) => End::Stopped,
            (false, true) => End::CostCap,
            (false, false) => End::Finished,
        }
    }

    /// Experiment number, best, noise and tallies, shown with every phase of worker `name`.
    pub fn context(&self, state: &State, seq: u64, name: &str) -> String {
        let records = &state.ledger.records;
        let tally = ledger::tally(records);
        let best = ledger::best(records)
            .and_then(|b| b.val_bpb)
            .map_or("-".into(), |b| format!("{b:.6}"));
        let sigma = decide::noise_in_force(records, self.cfg.settings.noise_sigma)
            .map_or(String::new(), |n| format!(" (sigma {:.6})", n.sigma));
        format!(
            "{name}#{seq} best {best}{sigma} | {} keep {} discard {} crash",
            tally.keeps, tally.discards, tally.crashes
        )
    }
}

impl State {
    /// The shared state of a run whose records are `ledger`, with the experiments `pendings`
    /// interrupted by a stop or a kill queued to run first.
    fn new(ledger: Ledger, pendings: Vec<Pending>, program: Program) -> State {
        let highest = pendings.iter().map(|p| p.seq + 1).max().unwrap_or(0);
        let next_seq = ledger.next_seq().max(highest);
        let used: BTreeSet<u64> = ledger
            .records
            .iter()
            .map(|r| r.seq)
            .chain(pendings.iter().map(|p| p.seq))
            .collect();
        State {
            program,
            empty_proposals: 0,
            queue: pendings.into_iter().map(Next::Resume).collect(),
            running: BTreeMap::new(),
            run_seconds: BTreeMap::new(),
            free: (0..next_seq).filter(|n| !used.contains(n)).collect(),
            next_seq,
            ledger,
        }
    }

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

    /// A re-applied change waits for the next free worker, and counts as running.
    pub fn enqueue(&mut self, reapplied: Pending) {
        let running = reapplied.description.clone();
        self.running.insert(reapplied.seq, running);
        self.queue.push_back(Next::Reapplied(reapplied));
    }

    /// Appends `record`: its experiment is no longer under way, and the kept trainers of
    /// commits that are no longer the best go. The record as appended.
    pub fn record(&mut self, pendings: &Pendings, record: Record) -> Result<Record> {
        let seq = record.seq;
        self.ledger.append(record)?;
        pendings.clear(seq)?;
        self.ledger.prune_best_binaries()?;
        self.running.remove(&seq);
        self.run_seconds.remove(&seq);
        Ok(self.ledger.records.last().expect("just appended").clone())
    }
}

impl Worker {
    /// Files outside the trainer that differ from the base commit in this worker's worktree.
    pub fn changed_outside(&self, base: &str) -> Result<Vec<String>> {
        self.git.changed_outside_editable(base)
    }
}

/// One worker per worktree, each with its own agent, status line and GPU.
fn workers(
    cfg: &Config,
    worktrees: Vec<PathBuf>,
    agent: &Agent,
    progress: &Progress,
    stop: &Stop,
) -> Vec<Worker> {
    let several = worktrees.len() > 1;
    worktrees
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
            turn: Turn(()),
        })
        .collect()
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
                .settings
                .base_url
                .as_deref()
                .map_or("api.openai.com".into(), host);
            format!(" | model {} at {endpoint}", cfg.settings.model())
        }
        AgentKind::Offline => String::new(),
    };
    let noise = match (cfg.settings.noise_sigma, cfg.settings.noise_seeds()) {
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
        cfg.run_dir.path().display()
    );
    if cfg.settings.workers() > 1 {
        let placement = match (cfg.settings.executor(), cfg.device) {
            (ExecutorKind::Slurm, _) => "each trial a Slurm job".to_string(),
            (ExecutorKind::Local, Profile::Gpu) => format!("GPUs {}", cfg.gpus.join(",")),
            (ExecutorKind::Local, Profile::Cpu) => format!(
                "all sharing this machine's {} CPU cores: each trainer gets a share of them, so \
                 fewer steps fit in its budget, and the others' load moves its speed, which adds \
                 to the noise between runs (decisions measure and account for it)",
                std::thread::available_parallelism().map_or(1, |n| n.get())
            ),
        };
        eprintln!(
            "workers | {} experiments at once, {placement}",
            cfg.settings.workers()
        );
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
    watch::announce(cfg);
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
