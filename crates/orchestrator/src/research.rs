//! The loop: propose, commit, build, run under the limit, keep or reset, record. Every step is
//! ordered so that a kill at any moment loses nothing and `--resume` records nothing twice.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::agent::{OfflineAgent, Proposal};
use crate::cargo_build::{Build, build_trainer};
use crate::config::{AgentKind, Config};
use crate::git::Git;
use crate::ledger::{Ledger, Pending, Record, Status};
use crate::progress::Progress;
use crate::runner::{Run, run_trainer};
use crate::tools::Workspace;
use crate::{Stop, setup};

/// Why an experiment ended without a result to compare.
#[derive(Debug, thiserror::Error)]
enum Failure {
    #[error("build failed after {0} repair rounds")]
    Build(u32),
    #[error("{0}")]
    Run(String),
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

    let gpu = Path::new("/dev/nvidia0").exists();
    let mut agent = match cfg.agent {
        AgentKind::Offline => OfflineAgent::new(cfg.run_dir().join("offline_agent.json"), cfg.seed, gpu)?,
        AgentKind::Openai => bail!("the LLM agent is not available in this build; use --agent offline"),
    };
    let ws = Workspace::new(&cfg.repo);
    eprintln!(
        "autoresearch | agent {:?} | branch {branch} | budget {budget} s (killed after {} s) | device {} | contract {} | logs {}",
        cfg.agent,
        cfg.run_limit(budget),
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
    let program_path = cfg.repo.join("program.md");
    let mut last_program = std::fs::read_to_string(&program_path).ok();
    loop {
        let seq = ledger.next_seq();
        if cfg.max_experiments.is_some_and(|max| seq >= max) || stop.requested() {
            break;
        }
        let best = ledger.best().cloned();
        progress.set_context(context(seq, &ledger));

        // Think (or pick up the experiment a kill interrupted).
        let program = std::fs::read_to_string(&program_path).ok();
        let program_changed = seq > 0 && program != last_program;
        if program_changed {
            progress.println("program.md changed; this experiment uses the new text");
        }
        last_program = program;
        let t_think = Instant::now();
        let pending = match ledger.pending()? {
            Some(p) if p.seq == seq => {
                progress.println(&format!("re-running interrupted experiment {seq}: {}", p.description));
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
                let parent = best.as_ref().map(|b| b.commit.clone()).context("no kept baseline")?;
                let Proposal { description, tokens } = agent.propose(&ws)?;
                let Some(commit) = git.commit_editable(&description)? else {
                    progress.println("the proposal changed nothing; not run");
                    continue;
                };
                Pending { seq, commit, parent, description, think_seconds: t_think.elapsed().as_secs_f64(), agent_tokens: tokens }
            }
        };
        ledger.set_pending(Some(&pending))?;

        // Build, run, decide.
        progress.phase("building");
        let t_build = Instant::now();
        let outcome = match build_trainer(&cfg.repo, &cfg.target_dir).await? {
            Build::Failed { diagnostics } if seq == 0 => {
                bail!("the unmodified trainer does not build; fix it before a run:\n{diagnostics}")
            }
            Build::Failed { diagnostics } => {
                progress.println(&format!("build failed:\n{}", tail(&diagnostics, 20)));
                Err(Failure::Build(0))
            }
            Build::Built { binary } => Ok(binary),
        };
        let build_seconds = t_build.elapsed().as_secs_f64();
        let t_run = Instant::now();
        let outcome = match outcome {
            Ok(binary) => {
                progress.phase("starting");
                match train(&cfg, &binary, budget, seq, &ledger, &mut stop, &progress).await? {
                    None => break, // Ctrl-C: the pending experiment is re-run on --resume.
                    Some(run) => run,
                }
            }
            Err(failure) => Err((failure, None)),
        };
        let run_seconds = t_run.elapsed().as_secs_f64();

        let (status, reason, result) = match outcome {
            Ok(result) => {
                let bpb = result["val_bpb"].as_f64().unwrap_or(f64::MAX);
                let improves = best.as_ref().and_then(|b| b.val_bpb).is_none_or(|b| bpb < b);
                (if improves { Status::Keep } else { Status::Discard }, None, Some(result))
            }
            Err((failure, result)) => (Status::Crash, Some(failure.to_string()), result),
        };
        let val_bpb = result.as_ref().and_then(|r| r["val_bpb"].as_f64());
        if status != Status::Keep {
            let best_commit = best.as_ref().map(|b| b.commit.as_str()).unwrap_or(&pending.parent);
            git.discard(&cfg.tag, seq, &pending.commit, best_commit)?;
        }
        let record = Record {
            seq,
            commit: pending.commit.clone(),
            parent: pending.parent.clone(),
            status,
            reason,
            description: pending.description.clone(),
            val_bpb,
            peak_memory_mb: result.as_ref().and_then(|r| r["peak_memory_mb"].as_f64()),
            result,
            think_seconds: pending.think_seconds,
            build_seconds,
            run_seconds,
            agent_tokens: pending.agent_tokens,
            program_changed,
            finished_at: chrono::Local::now().to_rfc3339(),
        };
        ledger.append(record)?;
        ledger.set_pending(None)?;
        if seq > 0 {
            let best_bpb = best.and_then(|b| b.val_bpb).unwrap_or(f64::MAX);
            agent.observe(val_bpb.map_or(-0.1, |v| best_bpb - v))?;
        }
        let line = ledger.records.last().map(summary).unwrap_or_default();
        progress.println(&line);
    }
    progress.set_context(context(ledger.next_seq(), &ledger));
    progress.println(&format!("stopped; results in {}", cfg.run_dir().join("results.tsv").display()));
    Ok(())
}

/// Runs the built trainer from a copy (cargo may rebuild the original meanwhile). None on Ctrl-C.
async fn train(
    cfg: &Config,
    binary: &Path,
    budget: f64,
    seq: u64,
    ledger: &Ledger,
    stop: &mut Stop,
    progress: &Progress,
) -> Result<Option<Result<serde_json::Value, (Failure, Option<serde_json::Value>)>>> {
    let bin_dir = cfg.run_dir().join("bin");
    std::fs::create_dir_all(&bin_dir)?;
    let copy = bin_dir.join(format!("train-{seq}"));
    std::fs::copy(binary, &copy).with_context(|| format!("copying {}", binary.display()))?;
    let mut env = vec![("AUTORESEARCH_DATA", cfg.data_dir.display().to_string())];
    if let Some(b) = cfg.time_budget {
        env.push(("AUTORESEARCH_TIME_BUDGET", b.to_string()));
    }
    let limit = Duration::from_secs_f64(cfg.run_limit(budget));
    let run = run_trainer(&copy, &env, &ledger.log_path(seq), limit, stop, |line| progress.trainer_line(line)).await;
    std::fs::remove_file(&copy).ok();
    Ok(match run? {
        Run::Interrupted => None,
        Run::Finished { result } => Some(Ok(result)),
        Run::Crashed { reason, result } => Some(Err((Failure::Run(reason), result))),
    })
}

fn context(seq: u64, ledger: &Ledger) -> String {
    let count = |s| ledger.records.iter().filter(|r| r.status == s).count();
    let best = ledger.best().and_then(|b| b.val_bpb).map_or("-".into(), |b| format!("{b:.6}"));
    format!(
        "#{seq} best {best} | {} keep {} discard {} crash",
        count(Status::Keep),
        count(Status::Discard),
        count(Status::Crash)
    )
}

fn summary(r: &Record) -> String {
    let bpb = r.val_bpb.map_or("-".into(), |v| format!("{v:.6}"));
    let reason = r.reason.as_deref().map(|r| format!(" ({r})")).unwrap_or_default();
    format!("#{} {} val_bpb {bpb}{reason} | {}", r.seq, r.status.as_str(), r.description)
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
