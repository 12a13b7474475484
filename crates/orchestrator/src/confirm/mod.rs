//! `orchestrator confirm`: before merging a night's work, re-train its baseline and its best
//! alternately with fresh seeds (seeds the night never used), through the same sandbox,
//! executor and protected evaluator as the night, and state the best's gain with a 95%
//! interval. With `--ablate`, the best with each kept change left out runs in every round too,
//! which measures each change's part in the gain. Every run and the result are recorded in
//! `runs/<tag>/confirm.jsonl` (see [`records`]); the night's records and decisions stay as they
//! are. It works in a worktree of its own, `runs/<tag>/morning/worktree` (as `finalize` does),
//! and keeps its trainers and logs beside it.

pub mod records;

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use prepare::Dataset;

use crate::cargo_build::{self, Build, Builder};
use crate::config::{Config, ConfirmArgs, Settings};
use crate::executor::{Executor, Job, Limits, Outcome};
use crate::git::Git;
use crate::ledger::{self, Record, Trial};
use crate::progress::Progress;
use crate::{Stop, rig, setup};
use records::{Ablation, Confirmation, Entry, Interval, Run};

/// Seeds of confirmations start here, far from the night's (42 and up), and go on from the
/// runs recorded before, so that every confirmation sees fresh ones.
const FRESH_SEED: u64 = 1_000_000;
/// The executor's experiment number for confirmation runs: its files under `runs/<tag>/bin`
/// never meet an experiment's.
const CONFIRM_SEQ: u64 = 999_999_999;

/// A trainer the confirmation runs.
struct Program {
    /// `baseline`, `best` or `without #<seq>`.
    name: String,
    commit: String,
    binary: PathBuf,
}

/// `orchestrator confirm`.
pub async fn run(args: ConfirmArgs, repo: &Path) -> Result<()> {
    if !(2..=100).contains(&args.seeds) {
        bail!(
            "--seeds is {}: it must be from 2 to 100 (one pair has no spread)",
            args.seeds
        );
    }
    let (cfg, records) = open_run(args.tag.clone(), repo)?;
    let run_dir = &cfg.run_dir;
    let (baseline, best) = baseline_and_best(&cfg.tag, &records)?;
    let budget = budget(&args, &cfg, &records).await?;
    let builder = rig::builder(&cfg)?;
    let worktree = open_worktree(&cfg, &baseline.commit)?;
    cargo_build::fetch(&worktree).await?;
    let pinned = Some(records[0].pins.clone());
    let data = std::future::ready(Dataset::open(&cfg.data_dir));
    let (executor, _, _) = rig::executor(&cfg, &builder, &worktree, pinned, data).await?;
    let trainers = Trainers {
        cfg: &cfg,
        builder: &builder,
        git: Git::new(&worktree),
        worktree: &worktree,
    };
    let (programs, ablations) = trainers
        .programs(&records, baseline, best, args.ablate)
        .await?;
    let session = Session {
        cfg: &cfg,
        confirm: chrono::Local::now().to_rfc3339(),
        budget,
        baseline,
        executor: executor.as_ref(),
    };
    let Some((seeds, runs)) = session.rounds(&programs, args.seeds).await? else {
        println!(
            "stopped; the runs so far are in {}",
            run_dir.confirmations().display()
        );
        return Ok(());
    };
    let confirmation = session.result(best, seeds, &runs, ablations);
    records::append(run_dir, &Entry::Result(confirmation.clone()))?;
    print!("{}", confirmation.text());
    println!(
        "recorded in {}; `finalize` leaves refuted changes out",
        run_dir.confirmations().display()
    );
    Ok(())
}

/// The settings (one worker: the runs go one at a time) and the records of run `tag`, which
/// must have some.
pub fn open_run(tag: Option<String>, repo: &Path) -> Result<(Config, Vec<Record>)> {
    let args = Settings {
        tag,
        workers: Some(1),
        ..Default::default()
    };
    let cfg = Config::resolve(args, repo)?;
    let records = ledger::read_run(repo, &cfg.tag)?;
    Ok((cfg, records))
}

/// The run's baseline and its best; refused when nothing was kept over the baseline.
fn baseline_and_best<'a>(tag: &str, records: &'a [Record]) -> Result<(&'a Record, &'a Record)> {
    let baseline = records
        .iter()
        .find(|r| r.seq == 0 && r.val_bpb.is_some())
        .with_context(|| format!("run {tag} has no scored baseline: nothing to compare with"))?;
    match ledger::best(records) {
        Some(best) if best.seq != 0 => Ok((baseline, best)),
        _ => bail!("run {tag} kept no change over its baseline: nothing to confirm"),
    }
}

/// The kept changes the best is made of, in the order they were kept: every keep after the
/// baseline that is not revoked and whose commit the best descends from (a keep superseded by a
/// change from an older parent is not).
pub fn kept_changes<'a>(
    checkout: &Git,
    records: &'a [Record],
    best: &Record,
) -> Result<Vec<&'a Record>> {
    let revoked: Vec<u64> = records.iter().filter_map(|r| r.revoked).collect();
    let mut kept = Vec::new();
    for r in records {
        let candidate = r.seq > 0 && r.status == ledger::Status::Keep && !revoked.contains(&r.seq);
        if candidate && checkout.is_ancestor(&r.commit, &best.commit)? {
            kept.push(r);
        }
    }
    Ok(kept)
}

/// The worktree of `confirm` and `finalize`, detached at `commit`: the night's worktrees stay as
/// they are for `--resume`.
pub fn open_worktree(cfg: &Config, commit: &str) -> Result<PathBuf> {
    let dir = cfg.run_dir.morning().join("worktree");
    if !dir.join(".git").exists() {
        let checkout = Git::new(&cfg.repo);
        checkout.run(&["worktree", "prune"])?;
        let path = dir.display().to_string();
        checkout.run(&["worktree", "add", "--quiet", "--detach", &path, commit])?;
    }
    Git::new(&dir).reset_to(commit)?;
    Ok(dir)
}

/// Training seconds per run: `--budget`, else the night's (its latest record's), else the
/// settings' or the contract's.
async fn budget(args: &ConfirmArgs, cfg: &Config, records: &[Record]) -> Result<f64> {
    let budget = match args.budget.or(records.iter().rev().find_map(|r| r.budget)) {
        Some(budget) => budget,
        // No night ran here yet: its libtorch and data are made ready for the runs to come.
        None => {
            let contract = setup::ensure_ready(cfg).await?.contract().time_budget_s;
            cfg.settings.time_budget.unwrap_or(contract)
        }
    };
    if !(budget.is_finite() && budget > 0.0 && budget <= 86_400.0) {
        bail!("--budget is {budget}: it must be a number of seconds > 0 and <= 86400");
    }
    Ok(budget)
}

/// Builds the trainers a confirmation runs, in its worktree.
struct Trainers<'a> {
    cfg: &'a Config,
    builder: &'a Builder,
    git: Git,
    worktree: &'a Path,
}

impl Trainers<'_> {
    /// The baseline, the best, and with `ablate` the best without each kept change (with what
    /// each ablation is, measured or not).
    async fn programs(
        &self,
        records: &[Record],
        baseline: &Record,
        best: &Record,
        ablate: bool,
    ) -> Result<(Vec<Program>, Vec<Ablation>)> {
        let mut programs = vec![
            self.build("baseline", &baseline.commit).await?,
            self.build("best", &best.commit).await?,
        ];
        let mut ablations = Vec::new();
        if ablate {
            for keep in kept_changes(&Git::new(&self.cfg.repo), records, best)? {
                let (ablation, program) = self.without(best, keep).await?;
                ablations.push(ablation);
                programs.extend(program);
            }
        }
        Ok((programs, ablations))
    }

    /// `commit`'s trainer, built in the worktree and kept as `morning/bin/<name>`.
    async fn build(&self, name: &str, commit: &str) -> Result<Program> {
        self.git.reset_to(commit)?;
        let binary = match self
            .builder
            .trainer(self.worktree, &self.cfg.target_dir)
            .await?
        {
            Build::Built { binary } => binary,
            Build::Failed { diagnostics, .. } => bail!(
                "the {name} trainer ({}) does not build:\n{diagnostics}",
                &commit[..commit.len().min(7)]
            ),
        };
        let bin = self.cfg.run_dir.morning().join("bin");
        std::fs::create_dir_all(&bin)?;
        let kept = bin.join(name.replace([' ', '#'], ""));
        prepare::atomic::copy(&binary, &kept)?;
        Ok(Program {
            name: name.to_string(),
            commit: commit.to_string(),
            binary: kept,
        })
    }

    /// The best with `keep`'s change taken out (its reversal re-applied onto the best),
    /// committed and kept reachable under `refs/autoresearch/<tag>/confirm/without-<seq>`, and
    /// its trainer; only the note where the change does not come out cleanly or what is left
    /// does not build.
    async fn without(&self, best: &Record, keep: &Record) -> Result<(Ablation, Option<Program>)> {
        let name = format!("without #{}", keep.seq);
        let mut ablation = Ablation {
            seq: keep.seq,
            description: keep.description.clone(),
            commit: None,
            gain: None,
            note: None,
        };
        let message = format!("confirm: the best #{} {name}", best.seq);
        let reversed = self
            .git
            .reapply(&keep.commit, &keep.parent, &best.commit, &message)?;
        let Some(commit) = reversed else {
            ablation.note = Some("not measured: later kept changes build on it".into());
            return Ok((ablation, None));
        };
        let reference = format!(
            "refs/autoresearch/{}/confirm/without-{}",
            self.cfg.tag, keep.seq
        );
        self.git.run(&["update-ref", &reference, &commit])?;
        ablation.commit = Some(commit.clone());
        match self.build(&name, &commit).await {
            Ok(program) => Ok((ablation, Some(program))),
            Err(e) => {
                let why = crate::text::one_line(&format!("{e:#}"), 300);
                ablation.note = Some(format!("not measured: {why}"));
                Ok((ablation, None))
            }
        }
    }
}

/// One confirmation under way.
struct Session<'a> {
    cfg: &'a Config,
    /// When it started, naming its runs.
    confirm: String,
    budget: f64,
    baseline: &'a Record,
    executor: &'a dyn Executor,
}

impl Session<'_> {
    /// `seeds` rounds, each program once per round with the round's seed, in an order that
    /// alternates from round to round (a steady drift of the machine favours none); each run
    /// recorded as it ends. None on Ctrl-C.
    async fn rounds(
        &self,
        programs: &[Program],
        seeds: usize,
    ) -> Result<Option<(Vec<u64>, Vec<Run>)>> {
        let run_dir = &self.cfg.run_dir;
        let first = FRESH_SEED + records::runs(&records::read(run_dir)?) as u64;
        let progress = Progress::new();
        let mut stop = Stop::on_ctrl_c().context("watching for Ctrl-C")?;
        let mut runs = Vec::new();
        let seeds: Vec<u64> = (first..first + seeds as u64).collect();
        for (round, &seed) in seeds.iter().enumerate() {
            let mut order: Vec<&Program> = programs.iter().collect();
            if round % 2 == 1 {
                order.reverse();
            }
            for program in order {
                progress.set_context(format!(
                    "confirm {} | round {}/{} seed {seed} | {}",
                    self.cfg.tag,
                    round + 1,
                    seeds.len(),
                    program.name
                ));
                let Some(run) = self
                    .train(program, seed, runs.len(), &mut stop, &progress)
                    .await?
                else {
                    return Ok(None);
                };
                records::append(run_dir, &Entry::Run(run.clone()))?;
                runs.push(run);
            }
        }
        Ok(Some((seeds, runs)))
    }

    /// One run of `program`; None on Ctrl-C.
    async fn train(
        &self,
        program: &Program,
        seed: u64,
        index: usize,
        stop: &mut Stop,
        progress: &Progress,
    ) -> Result<Option<Run>> {
        let dir = self.cfg.run_dir.morning();
        std::fs::create_dir_all(dir.join("logs"))?;
        let job = Job {
            binary: program.binary.clone(),
            seq: CONFIRM_SEQ,
            index,
            seed,
            budget: self.budget,
            limits: Limits::measured(
                self.budget,
                self.cfg.settings.grace(),
                &self.baseline.trials,
            ),
            log: dir.join("logs").join(format!("{index}.log")),
            gpu: self.cfg.gpus.first().cloned(),
            handle: dir.join(format!("{index}.job")),
            // A confirmation measures the gain: every run goes the whole budget.
            early_stop: None,
        };
        progress.phase("training");
        let outcome = self.executor.run(&job, stop, progress).await?;
        std::fs::remove_file(&job.handle).ok();
        let (trial, failure) = match outcome {
            Outcome::Interrupted => return Ok(None),
            Outcome::Scored(scored) => {
                std::fs::remove_file(&scored.model).ok();
                (scored.trial, None)
            }
            Outcome::Failed { failure, .. } => (failed(seed), Some(failure.to_string())),
        };
        let score = trial.val_bpb.map_or("-".into(), |v| format!("{v:.6}"));
        progress.println(&format!(
            "{} seed {seed}: val_bpb {score}{}",
            program.name,
            failure
                .as_deref()
                .map(|f| format!(" ({f})"))
                .unwrap_or_default()
        ));
        Ok(Some(Run {
            confirm: self.confirm.clone(),
            program: program.name.clone(),
            commit: program.commit.clone(),
            trial,
            failure,
        }))
    }

    /// The gains the runs measured, paired by seed.
    fn result(
        &self,
        best: &Record,
        seeds: Vec<u64>,
        runs: &[Run],
        mut ablations: Vec<Ablation>,
    ) -> Confirmation {
        let score = |program: &str, seed: u64| {
            runs.iter()
                .find(|r| r.program == program && r.trial.seed == seed)
                .and_then(|r| r.trial.val_bpb)
        };
        // How much worse `program` is than the best, seed by seed.
        let worse = |program: &str| -> Option<Interval> {
            let pairs: Vec<f64> = seeds
                .iter()
                .filter_map(|&s| Some(score(program, s)? - score("best", s)?))
                .collect();
            Interval::of(&pairs)
        };
        for a in ablations.iter_mut().filter(|a| a.note.is_none()) {
            a.gain = worse(&format!("without #{}", a.seq));
        }
        let gain = worse("baseline");
        Confirmation {
            confirm: self.confirm.clone(),
            finished_at: chrono::Local::now().to_rfc3339(),
            budget: self.budget,
            seeds,
            baseline_commit: self.baseline.commit.clone(),
            best_seq: best.seq,
            best_commit: best.commit.clone(),
            gain,
            ablations,
        }
    }
}

/// A run with no score.
fn failed(seed: u64) -> Trial {
    Trial {
        seed,
        val_bpb: None,
        trainer_val_bpb: None,
        training_seconds: 0.0,
        run_seconds: 0.0,
        eval_seconds: 0.0,
        num_steps: None,
        curve: Vec::new(),
    }
}
