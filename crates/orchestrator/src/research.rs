//! The loop: propose, commit, build, run under the limit, keep or reset, record. Every step is
//! ordered so that a kill at any moment loses nothing and `--resume` records nothing twice.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use prepare::Split;

use crate::agent::{self, Agent, OfflineAgent, OpenAiAgent, Proposal};
use crate::cargo_build::{Build, build_trainer};
use crate::config::{AgentKind, Config};
use crate::decide::{self, Noise, Verdict};
use crate::git::{EDITABLE, Git};
use crate::ledger::{Ledger, Pending, Record, Status, Trial};
use crate::program::Program;
use crate::progress::Progress;
use crate::runner::{Run, run_trainer};
use crate::scoring::{Evaluator, ScoreError};
use crate::tools::Workspace;
use crate::{Stop, setup};

/// Proposals in a row that changed nothing before the run stops: the agent is stuck.
const MAX_EMPTY_PROPOSALS: u32 = 5;
/// Seed of every experiment's first run; re-runs and the baseline's noise runs count up from it.
const SEED: u64 = 42;
/// How far (relative) the best may move from where the noise was measured before it is
/// measured again.
const REMEASURE_SHIFT: f64 = 0.05;
/// Largest difference between the trainer's own val_bpb and the protected score that is still
/// numerics (batching, kernels), not a different number.
const MISMATCH_TOLERANCE: f64 = 1e-3;

/// Why an experiment ended without a result to compare.
#[derive(Debug, thiserror::Error)]
enum Failure {
    #[error("build failed after {0} repair rounds")]
    Build(u32),
    #[error("{0}")]
    Run(String),
    #[error("refused: changed outside {EDITABLE}: {0}")]
    Refused(String),
    /// The causality probe saw logits change with later tokens.
    #[error("non-causal")]
    NonCausal(f64),
    #[error("{0}")]
    Score(String),
    #[error("interrupted")]
    Interrupted,
}

pub async fn run(cfg: Config) -> Result<()> {
    let git = Git::new(&cfg.repo);
    let data = setup::ensure_ready(&cfg)?;
    let budget = cfg.time_budget.unwrap_or(data.contract().time_budget_s);
    let branch = cfg.branch();
    let mut ledger = Ledger::open(&cfg.run_dir())?;

    if cfg.resume {
        if !git.branch_exists(&branch) {
            bail!("there is no branch {branch} to resume; start it without --resume");
        }
        git.run(&["checkout", "--quiet", "--force", &branch])?;
        if let Some(best) = ledger.best() {
            git.reset_to(&best.commit.clone())?;
        }
    } else {
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
    }

    // Everything outside the trainer must stay as at the base commit; the evaluator is built
    // from it before the agent changes anything.
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
    let evaluator =
        Evaluator::build(&cfg.repo, &cfg.target_dir, &cfg.run_dir(), &cfg.data_dir).await?;

    let gpu = Path::new("/dev/nvidia0").exists();
    let mut agent = match cfg.agent {
        AgentKind::Offline => Agent::Offline(OfflineAgent::new(
            cfg.run_dir().join("offline_agent.json"),
            cfg.seed,
            gpu,
        )?),
        AgentKind::Openai => Agent::OpenAi(OpenAiAgent::new(
            cfg.base_url.as_deref(),
            cfg.api_key.as_deref(),
            &cfg.model,
            cfg.target_dir.clone(),
            cfg.run_dir(),
        )),
    };
    let ws = Workspace::new(&cfg.repo);
    let endpoint = cfg
        .base_url
        .as_deref()
        .map_or("api.openai.com".into(), host);
    let model = if cfg.agent == AgentKind::Openai {
        format!(" | model {} at {endpoint}", cfg.model)
    } else {
        String::new()
    };
    eprintln!(
        "autoresearch | agent {:?}{model} | branch {branch} | budget {budget} s (killed after {} s) | noise {} | device {} | contract {} | logs {}",
        cfg.agent,
        cfg.run_limit(budget),
        match (cfg.noise_sigma, cfg.noise_seeds) {
            (Some(sigma), _) => format!("sigma {sigma} as configured"),
            (None, 1) => "not measured (1 seed): any gain is kept".into(),
            (None, n) => format!("measured with {n} seeds"),
        },
        if gpu { "cuda" } else { "cpu" },
        data.contract_hash(),
        cfg.run_dir().display()
    );
    if cfg.agent == AgentKind::Offline {
        eprintln!(
            "offline agent: tuning the trainer's constants. For real research ideas connect an LLM: \
             set OPENAI_BASE_URL (any OpenAI-compatible server) and OPENAI_API_KEY, and pass --model."
        );
    }

    let mut stop = Stop::on_ctrl_c();
    let mut progress = Progress::new();
    let mut program = Program::watch(&cfg.repo.join("program.md"), &progress);
    let mut empty_proposals = 0;
    loop {
        let seq = ledger.next_seq();
        if cfg.max_experiments.is_some_and(|max| seq >= max) || stop.requested() {
            break;
        }
        let best = ledger.best().cloned();
        progress.set_context(context(seq, &ledger));

        // Think (or pick up the experiment a kill interrupted).
        let (program_text, program_changed) = program.read();
        if program_changed {
            progress.println("program.md changed; this experiment uses the new text");
        }
        let t_think = Instant::now();
        let mut pending = match ledger.pending()? {
            Some(p) if p.seq == seq => {
                progress.println(&format!(
                    "re-running interrupted experiment {seq}: {}",
                    p.description
                ));
                git.reset_to(&p.commit)?;
                p
            }
            _ if seq == 0 => Pending {
                seq,
                commit: git.head()?,
                parent: git.head()?,
                description: "baseline".into(),
                think_seconds: 0.0,
                agent_tokens: 0,
            },
            _ => {
                progress.phase("thinking");
                let parent = best
                    .as_ref()
                    .map(|b| b.commit.clone())
                    .context("no kept baseline")?;
                let Proposal {
                    description,
                    tokens,
                } = agent
                    .propose(|| agent::brief(&program_text, budget, &ledger, &ws), &ws)
                    .await?;
                let Some(commit) = git.commit_editable(&description)? else {
                    empty_proposals += 1;
                    if empty_proposals == MAX_EMPTY_PROPOSALS {
                        bail!(
                            "the agent proposed no change {MAX_EMPTY_PROPOSALS} times in a row; see program.md and the agent's settings"
                        );
                    }
                    progress.println("the proposal changed nothing; not run");
                    continue;
                };
                empty_proposals = 0;
                Pending {
                    seq,
                    commit,
                    parent,
                    description,
                    think_seconds: t_think.elapsed().as_secs_f64(),
                    agent_tokens: tokens,
                }
            }
        };
        ledger.set_pending(Some(&pending))?;

        // Refuse what must not run: edits outside the trainer, and changes that cannot be kept.
        let t_build = Instant::now();
        let outside = git.changed_outside_editable(&base)?;
        let refused = if !outside.is_empty() {
            Some(Err(Failure::Refused(outside.join(", "))))
        } else if seq > 0 {
            decide::cosmetic(&git.editable_changes(&pending.parent, &pending.commit)?)
                .map(|why| Ok(format!("{why}: never kept, not run")))
        } else {
            None
        };

        // Build, repairing compiler errors with the agent.
        let built = match refused {
            Some(refusal) => Err(refusal),
            None => {
                progress.phase("building");
                let mut outcome = build_trainer(&cfg.repo, &cfg.target_dir).await?;
                let mut repairs = 0;
                while let Build::Failed { diagnostics } = &outcome {
                    if seq == 0 {
                        bail!(
                            "the unmodified trainer does not build; fix it before a run:\n{diagnostics}"
                        );
                    }
                    progress.println(&format!("build failed:\n{}", tail(diagnostics, 20)));
                    if repairs == cfg.max_repairs {
                        break;
                    }
                    let Some(repaired) = agent.repair(diagnostics, &ws).await else {
                        break;
                    };
                    pending.agent_tokens += repaired?.tokens;
                    repairs += 1;
                    if let Some(commit) =
                        git.commit_editable(&format!("{} (repair {repairs})", pending.description))?
                    {
                        pending.commit = commit;
                        ledger.set_pending(Some(&pending))?;
                    }
                    progress.phase("building");
                    outcome = build_trainer(&cfg.repo, &cfg.target_dir).await?;
                }
                match outcome {
                    Build::Built { binary } => Ok(binary),
                    Build::Failed { .. } => Err(Err(Failure::Build(repairs))),
                }
            }
        };
        let build_seconds = t_build.elapsed().as_secs_f64();

        // Train, with more seeds where the noise calls for them; every run is scored by the
        // protected evaluator.
        let t_run = Instant::now();
        let mut trials: Vec<Trial> = Vec::new();
        let mut models = Vec::new();
        let mut first_result = None;
        let mut flags = Vec::new();
        let mut remeasured = false;
        let noise = cfg
            .noise_sigma
            .map(|sigma| Noise { sigma, dof: None })
            .or(ledger.noise());
        let sigma = noise.map(|n| n.sigma);
        let best_bpb = best.as_ref().and_then(|b| b.val_bpb);
        let best_runs = best.as_ref().map_or(1, |b| scores(&b.trials).len());
        let decision: Result<Decision, Failure> = match built {
            Err(Ok(rule)) => Ok(Decision::Discard(rule)),
            Err(Err(failure)) => Err(failure),
            Ok(binary) => {
                let trainer = Trainer {
                    cfg: &cfg,
                    evaluator: &evaluator,
                    binary: &binary,
                    budget,
                };
                let decision = loop {
                    let k = trials.len();
                    progress.phase(if k == 0 { "starting" } else { "re-running" });
                    let Some(outcome) = trainer.run(seq, k, &ledger, &mut stop, &progress).await?
                    else {
                        break Err(Failure::Interrupted);
                    };
                    let run = match outcome {
                        Ok(run) => run,
                        Err((failure, result)) => {
                            first_result = first_result.or(result);
                            break Err(failure);
                        }
                    };
                    flags.extend(run.flag);
                    first_result.get_or_insert(run.result);
                    models.push(run.model);
                    trials.push(run.trial);
                    let Some(best_bpb) = best_bpb else {
                        // The baseline: as many seeds as measure the noise.
                        if trials.len() < cfg.noise_seeds {
                            continue;
                        }
                        break Ok(Decision::Keep("baseline".into()));
                    };
                    let (reruns, all) = ledger.rerun_seconds();
                    let may_rerun = reruns <= cfg.rerun_share * all;
                    match decide::judge(best_bpb, best_runs, noise, &scores(&trials), may_rerun) {
                        Verdict::Rerun(why) => progress.println(&format!("#{seq} {why}")),
                        Verdict::Keep(rule) => break Ok(Decision::Keep(rule)),
                        Verdict::Discard(rule) => break Ok(Decision::Discard(rule)),
                    }
                };
                // A new best far from where the noise was measured: measure it again there, as
                // better models tend to be less noisy.
                if matches!(decision, Ok(Decision::Keep(_)))
                    && cfg.noise_sigma.is_none()
                    && ledger
                        .sigma_measured_at()
                        .is_some_and(|at| (at - mean(&trials)).abs() > REMEASURE_SHIFT * at)
                {
                    remeasured = true;
                    while trials.len() < cfg.noise_seeds {
                        progress.phase("noise");
                        match trainer
                            .run(seq, trials.len(), &ledger, &mut stop, &progress)
                            .await?
                        {
                            None => break,
                            Some(Err((failure, _))) => {
                                flags.push(format!("a noise measurement run crashed: {failure}"));
                                remeasured = false;
                                break;
                            }
                            Some(Ok(run)) => {
                                models.push(run.model);
                                trials.push(run.trial);
                            }
                        }
                    }
                }
                decision
            }
        };
        if let Err(Failure::Interrupted) = decision {
            break; // Ctrl-C: the pending experiment is re-run on --resume.
        }
        // A trainer that wrote outside its directory while it ran is blamed here, not the next
        // experiment, whose build would be refused.
        let outside = git.changed_outside_editable(&base)?;
        let decision = if outside.is_empty() {
            decision
        } else {
            Err(Failure::Refused(outside.join(", ")))
        };
        if stop.requested() {
            break;
        }
        match &decision {
            Err(failure) if seq == 0 => bail!(
                "the unmodified baseline failed ({failure}); see {}. Fix it, then continue with --resume",
                ledger.log_path(0).display()
            ),
            Err(Failure::NonCausal(diff)) => flags.push(format!(
                "causality probe: logits at or before a position changed by {diff:.3e} when only later tokens changed"
            )),
            _ => {}
        }
        let val_bpb = (!trials.is_empty() && decision.is_ok()).then(|| mean(&trials));
        let measured = (seq == 0 || remeasured)
            .then(|| decide::pooled_std_dev(&[scores(&trials)]))
            .flatten()
            .map(|n| n.sigma);
        if let (Some(new), Some(old)) = (measured, sigma.filter(|_| seq > 0)) {
            flags.push(format!(
                "noise floor re-measured: sigma {old:.6} -> {new:.6}"
            ));
        }
        let sigma_measured = measured.is_some();
        let new_sigma = measured.or(sigma);

        // Holdout: every new best is scored once on the test split, which the agent never sees.
        let (status, reason, rule) = match decision {
            Ok(Decision::Keep(rule)) => (Status::Keep, None, Some(rule)),
            Ok(Decision::Discard(rule)) => (Status::Discard, None, Some(rule)),
            Err(failure) => (Status::Crash, Some(failure.to_string()), None),
        };
        let mut eval_seconds: f64 = trials.iter().map(|t| t.eval_seconds).sum();
        let test_bpb = if status == Status::Keep {
            progress.phase("holdout");
            match evaluator
                .score(&models[0], Split::Test, cfg.eval_limit(budget))
                .await
            {
                Ok(score) => {
                    eval_seconds += score.seconds;
                    score.bpb
                }
                Err(ScoreError::Tampered(why)) => bail!(why),
                Err(ScoreError::Failed(why)) => {
                    flags.push(format!("holdout not scored: {why}"));
                    None
                }
            }
        } else {
            None
        };
        if let (Some(test), Some(previous)) = (test_bpb, best.as_ref().and_then(|b| b.test_bpb))
            && test > previous
        {
            flags.push(format!(
                "test split got worse: {test:.6} > {previous:.6} of the previous best"
            ));
        }
        for model in &models {
            std::fs::remove_file(model).ok();
        }

        if status != Status::Keep {
            let best_commit = best
                .as_ref()
                .map(|b| b.commit.as_str())
                .unwrap_or(&pending.parent);
            git.discard(&cfg.tag, seq, &pending.commit, best_commit)?;
            let left = git.changed_outside_editable(&base)?;
            if !left.is_empty() {
                bail!(
                    "files outside {EDITABLE} are not the run's base commit's even after a reset: {}. \
                     Remove or restore them (git checkout {base} -- FILE), then continue with --resume",
                    left.join(", ")
                );
            }
        }
        let record = Record {
            seq,
            commit: pending.commit.clone(),
            parent: pending.parent.clone(),
            status,
            reason,
            description: pending.description.clone(),
            val_bpb,
            peak_memory_mb: first_result
                .as_ref()
                .and_then(|r| r["peak_memory_mb"].as_f64()),
            result: first_result,
            think_seconds: pending.think_seconds,
            build_seconds,
            run_seconds: t_run.elapsed().as_secs_f64(),
            agent_tokens: pending.agent_tokens,
            program_changed,
            finished_at: chrono::Local::now().to_rfc3339(),
            delta: val_bpb.zip(best_bpb).map(|(v, b)| v - b),
            sigma: new_sigma,
            sigma_measured,
            rule,
            test_bpb,
            flags,
            trials,
            eval_seconds,
        };
        ledger.append(record)?;
        ledger.set_pending(None)?;
        if seq > 0 {
            agent.observe(val_bpb.map_or(-0.1, |v| best_bpb.unwrap_or(f64::MAX) - v))?;
        }
        let record = ledger.records.last().expect("just appended");
        progress.println(&record.summary());
        for flag in &record.flags {
            progress.println(&format!("  warning: {flag}"));
        }
    }
    progress.set_context(context(ledger.next_seq(), &ledger));
    progress.println(&format!(
        "stopped; results in {}",
        cfg.run_dir().join("results.tsv").display()
    ));
    Ok(())
}

/// How an experiment that ran (or was refused) ends, with the rule that decided it.
enum Decision {
    Keep(String),
    Discard(String),
}

fn scores(trials: &[Trial]) -> Vec<f64> {
    trials.iter().filter_map(|t| t.val_bpb).collect()
}

fn mean(trials: &[Trial]) -> f64 {
    let scores = scores(trials);
    scores.iter().sum::<f64>() / scores.len() as f64
}

/// One built trainer, run under the limit and scored by the protected evaluator.
struct Trainer<'a> {
    cfg: &'a Config,
    evaluator: &'a Evaluator,
    binary: &'a Path,
    budget: f64,
}

/// A run that trained and was scored.
struct ScoredRun {
    trial: Trial,
    /// The trainer's result line.
    result: serde_json::Value,
    /// The exported model, until the experiment is decided.
    model: PathBuf,
    /// The trainer's own val_bpb disagreed with the protected score.
    flag: Option<String>,
}

impl Trainer<'_> {
    /// Run `k` of experiment `seq`, with seed `SEED + k`, from a copy of the binary (cargo may
    /// rebuild the original meanwhile). None on Ctrl-C.
    async fn run(
        &self,
        seq: u64,
        k: usize,
        ledger: &Ledger,
        stop: &mut Stop,
        progress: &Progress,
    ) -> Result<Option<Result<ScoredRun, (Failure, Option<serde_json::Value>)>>> {
        let cfg = self.cfg;
        let bin_dir = cfg.run_dir().join("bin");
        std::fs::create_dir_all(&bin_dir)?;
        let copy = bin_dir.join(format!("train-{seq}"));
        // Copied under another name and renamed: a file still being executed (by a trainer that
        // outlived a killed orchestrator) cannot be overwritten, but it can be replaced.
        let partial = bin_dir.join(format!("train-{seq}.partial"));
        std::fs::copy(self.binary, &partial)
            .with_context(|| format!("copying {}", self.binary.display()))?;
        std::fs::rename(&partial, &copy)
            .with_context(|| format!("renaming into {}", copy.display()))?;
        let model = bin_dir.join(format!("model-{seq}.{k}.pt"));
        std::fs::remove_file(&model).ok();
        let seed = SEED + k as u64;
        let mut env = vec![
            ("AUTORESEARCH_DATA", cfg.data_dir.display().to_string()),
            ("AUTORESEARCH_SEED", seed.to_string()),
            (prepare::EXPORT_ENV, model.display().to_string()),
        ];
        if let Some(b) = cfg.time_budget {
            env.push(("AUTORESEARCH_TIME_BUDGET", b.to_string()));
        }
        let limit = Duration::from_secs_f64(cfg.run_limit(self.budget));
        let t_run = Instant::now();
        let run = run_trainer(
            &copy,
            &env,
            &ledger.trial_log_path(seq, k),
            limit,
            stop,
            |line| progress.trainer_line(line),
        )
        .await;
        std::fs::remove_file(&copy).ok();
        let run_seconds = t_run.elapsed().as_secs_f64();
        let result = match run? {
            Run::Interrupted => return Ok(None),
            Run::Crashed { reason, result } => {
                return Ok(Some(Err((Failure::Run(reason), result))));
            }
            Run::Finished { result } => result,
        };

        progress.phase("scoring");
        let score = match self
            .evaluator
            .score(&model, Split::Val, cfg.eval_limit(self.budget))
            .await
        {
            Ok(score) => score,
            Err(ScoreError::Tampered(why)) => bail!(why),
            Err(ScoreError::Failed(why)) => {
                return Ok(Some(Err((Failure::Score(why), Some(result)))));
            }
        };
        let crash = |failure| Ok(Some(Err((failure, Some(result.clone())))));
        if !score.causal {
            return crash(Failure::NonCausal(score.probe_max_diff));
        }
        let Some(bpb) = score.bpb else {
            return crash(Failure::Score("the model's losses are not finite".into()));
        };
        let trainer_val_bpb = result["val_bpb"].as_f64();
        let flag = match trainer_val_bpb {
            Some(own) if (own - bpb).abs() <= MISMATCH_TOLERANCE => None,
            own => Some(format!(
                "the trainer printed val_bpb {} but the protected score is {bpb:.6}",
                own.map_or("none".into(), |v| format!("{v:.6}"))
            )),
        };
        Ok(Some(Ok(ScoredRun {
            trial: Trial {
                seed,
                val_bpb: Some(bpb),
                trainer_val_bpb,
                training_seconds: result["training_seconds"].as_f64().unwrap_or(0.0),
                run_seconds,
                eval_seconds: score.seconds,
            },
            result,
            model,
            flag,
        })))
    }
}

fn context(seq: u64, ledger: &Ledger) -> String {
    let count = |s| ledger.records.iter().filter(|r| r.status == s).count();
    let best = ledger
        .best()
        .and_then(|b| b.val_bpb)
        .map_or("-".into(), |b| format!("{b:.6}"));
    let sigma = ledger
        .noise()
        .map(|n| n.sigma)
        .map_or(String::new(), |s| format!(" (sigma {s:.6})"));
    format!(
        "#{seq} best {best}{sigma} | {} keep {} discard {} crash",
        count(Status::Keep),
        count(Status::Discard),
        count(Status::Crash)
    )
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

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
