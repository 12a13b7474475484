//! The executor for a Slurm cluster (`--executor slurm`): each trial is one batch job that runs
//! the trainer in its jail and then the protected evaluator in its own, on whichever node Slurm
//! picks. The jails' command lines are built here, by the same code as [`Local`]'s, and written
//! into the job's script; the job leaves its results in its directory under `runs/<tag>/slurm/`,
//! on the filesystem the nodes share with this machine, and the orchestrator reads them back.
//! Slurm itself only says where a job is (queued, running, gone) and why one that left no results
//! ended (time limit, cancelled, node failure). docs/slurm.md has the cluster's side.
//!
//! What a trial's job leaves in `runs/<tag>/slurm/<seq>.<index>/`: `job.sh`, its script; `stdout`,
//! the end of the trainer's stdout (its result line; its stdout and stderr also go to the trial's
//! log, Slurm's `--output`); `model.pt`, the exported model; `verdict`, the evaluator's verdict,
//! written through its `--result-fd` into a file that no jail sees; `evaluator.stderr`; and, last,
//! `done`, the exit statuses and times. The evaluator's and the data's hashes are checked before
//! a job is submitted and again before its verdict is believed.
//!
//! The job's id is written to the run's handle file right after `sbatch`, so that a `--resume`
//! after the orchestrator was killed re-attaches to a job still queued or running, or takes the
//! results of one that finished meanwhile, instead of submitting it again.
//!
//! [`Local`]: super::Local

use std::fmt::Write as _;
use std::io::{Read, Seek, SeekFrom};
use std::ops::ControlFlow;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, Result, bail};
use prepare::{Profile, Split};

use super::local::{MODEL_FILE, Trainers, finished, scored};
use super::{Executor, Job, Outcome, Running};
use crate::Stop;
use crate::config::Config;
use crate::process::{self, Exit, LOG_KEEP, MAX_LINE};
use crate::progress::Progress;
use crate::sandbox::Sandbox;
use crate::scoring::{self, Evaluator, STDERR_LINES, Score, ScoreError};

/// How often a job is looked at: a `squeue` and a few `stat`s, cheap for the controller.
const POLL: Duration = Duration::from_millis(500);
/// How long the probe job may take to come back before the run stops.
const PROBE_WAIT: Duration = Duration::from_secs(120);
/// Added to a job's limits for its own start and end before rounding up to whole minutes.
const TIME_MARGIN: Duration = Duration::from_secs(30);
/// How long a job Slurm says completed may take to show its `done` file here (a network
/// filesystem's attribute cache can hide a new file for some seconds).
const DONE_GRACE: Duration = Duration::from_secs(30);
/// Bytes of the trainer's stdout kept for its result line.
const STDOUT_TAIL: usize = 1 << 20;
/// Bytes of the evaluator's stderr kept for the failure message.
const STDERR_TAIL: usize = 64 << 10;
/// Why a job waits that no waiting resolves: a limit of the partition, account or QOS it was
/// submitted over (where the cluster does not refuse such jobs at submission).
const HOPELESS: [&str; 9] = [
    "PartitionTimeLimit",
    "PartitionNodeLimit",
    "AssocMaxWallDurationPerJobLimit",
    "QOSMaxWallDurationPerJobLimit",
    "AssocMaxGRESPerJob",
    "QOSMaxGRESPerJob",
    "BadConstraints",
    "InvalidAccount",
    "InvalidQOS",
];
/// The Slurm clients the executor uses; `sacct` only where the cluster has accounting.
const CLIENTS: [&str; 4] = ["sbatch", "squeue", "scontrol", "scancel"];

pub struct Slurm {
    evaluator: Evaluator,
    trainers: Trainers,
    /// `runs/<tag>/slurm`: the jobs' scripts and results, shared with the nodes.
    dir: PathBuf,
    tag: String,
    /// What every job is submitted with: ours, then `[slurm]`'s partition and account; its
    /// `extra` options come last, after the GPU a trial asks for (`--gres`).
    options: Vec<String>,
    gres: Option<String>,
    extra: Vec<String>,
    /// This machine's `PATH`, which the scripts run with (the nodes are assumed to be set up
    /// alike: bubblewrap and coreutils where they are here).
    path: String,
}

impl Slurm {
    /// Checks that this machine can submit jobs, and that a job sees the run directory: a probe
    /// job reads a random token from it and writes it back. Its submission-to-start latency is
    /// printed.
    pub async fn new(evaluator: Evaluator, cfg: &Config, sandbox: Sandbox) -> Result<Slurm> {
        let missing: Vec<&str> = CLIENTS.into_iter().filter(|c| !on_path(c)).collect();
        if !missing.is_empty() {
            bail!(
                "--executor slurm needs the Slurm clients {} on this machine, and {} missing: run \
                 the orchestrator on a submit host of the cluster (docs/slurm.md), or start a \
                 local test cluster with: eval \"$(scripts/slurm-local.sh start)\"",
                CLIENTS.join(", "),
                missing.join(", ")
            );
        }
        let sandbox = sandbox.for_nodes();
        let dir = cfg.run_dir().join("slurm");
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let mut options: Vec<String> = [
            // The orchestrator's environment (its API key among it) stays here: the scripts
            // set what they run with themselves.
            "--export=NONE",
            // A job re-run by Slurm after a node failure would write over its own results.
            "--no-requeue",
            // The trainer's stdout reaches the log through `tee -a` beside Slurm's own writes.
            "--open-mode=append",
            "--parsable",
        ]
        .map(String::from)
        .into();
        let s = &cfg.slurm;
        let gres = s
            .gres
            .clone()
            .or((cfg.device == Profile::Gpu).then(|| "gpu:1".into()))
            .filter(|g| !g.is_empty());
        options.extend(s.partition.as_ref().map(|p| format!("--partition={p}")));
        options.extend(s.account.as_ref().map(|a| format!("--account={a}")));
        let slurm = Slurm {
            evaluator: evaluator.for_nodes(),
            trainers: Trainers::new(cfg, sandbox, None),
            dir,
            tag: cfg.tag.clone(),
            options,
            gres,
            extra: s.extra.clone(),
            path: std::env::var("PATH").unwrap_or_else(|_| "/usr/bin:/bin".into()),
        };
        slurm.probe().await?;
        Ok(slurm)
    }

    /// The probe job: the run directory must be shared with the nodes, and the jails must work
    /// there. Stops the run with what to do otherwise.
    async fn probe(&self) -> Result<()> {
        let dir = self.dir.join("probe");
        std::fs::remove_dir_all(&dir).ok();
        std::fs::create_dir_all(&dir)?;
        let token = random_token()?;
        std::fs::write(dir.join("token"), &token)?;
        // The jail a trial's processes run in, with what they read from the shared filesystem.
        let mut jail = self.trainers.sandbox.jail();
        for path in self.evaluator.paths() {
            jail.read(path);
        }
        let jail = render(&jail.command(Path::new("/usr/bin/true"), &[]), None)?;
        let mut script = self.header(
            &dir,
            "the probe: can a job read and write the run directory, and run a jail?",
        )?;
        let reply = dir.join("reply");
        writeln!(
            script,
            "{{\n  echo \"start=$(now)\"\n  echo \"node=$(hostname)\"\n  echo \"token=$(cat token)\"\n  \
             if out=$({jail} 2>&1); then echo jail=ok; else echo \"jail=$(printf %s \"$out\" | tr '\\n' ' ' | head -c 2000)\"; fi\n\
             }} > reply.partial && mv -f reply.partial reply"
        )?;
        let name = format!("autoresearch-{}-probe", self.tag);
        let submitted = unix_now();
        let id = self
            // No GPU: the probe must not wait behind the trials it checks for (after a resume,
            // the jobs re-attached may hold every GPU the account may use).
            .sbatch(
                &dir,
                &script,
                &name,
                Duration::ZERO,
                &dir.join("probe.out"),
                false,
            )
            .await
            .context("submitting the probe job")?;
        let _cancel = CancelOnDrop(Some(id));
        let waited = Instant::now();
        let mut said = String::new();
        let mut last: State;
        let fields = loop {
            if let Some(fields) = read_fields(&reply) {
                break fields;
            }
            match self.state(id).await? {
                State::Queued(reason) => {
                    // `None`: not yet looked at by the scheduler, which takes a second.
                    if reason != said && reason != "None" {
                        eprintln!("slurm | the probe job {id} waits in the queue ({reason})");
                        said = reason.clone();
                    }
                    last = State::Queued(reason);
                }
                State::Active => last = State::Active,
                ended @ (State::Ended(_) | State::Unknown) => {
                    // What a network filesystem may still hide for a moment.
                    tokio::time::sleep(Duration::from_secs(3)).await;
                    if let Some(fields) = read_fields(&reply) {
                        break fields;
                    }
                    let why = self.ended(id, &ended).await;
                    bail!(not_shared(&self.dir, id, &format!("it ended ({why})")));
                }
            }
            if waited.elapsed() > PROBE_WAIT {
                scancel(id).await.ok();
                match last {
                    State::Queued(reason) => bail!(
                        "the probe job {id} waited {} s in the queue ({reason}) without starting: no \
                         node takes jobs with these options now ({}). Check [slurm] in \
                         autoresearch.toml (partition, account, gres, extra) against sinfo, or try \
                         again when the cluster is less busy",
                        PROBE_WAIT.as_secs(),
                        self.shown_options(false)
                    ),
                    _ => bail!(not_shared(
                        &self.dir,
                        id,
                        &format!(
                            "it ran for over {} s without writing back",
                            PROBE_WAIT.as_secs()
                        )
                    )),
                }
            }
            tokio::time::sleep(POLL).await;
        };
        let node = field(&fields, "node").unwrap_or("?");
        if field(&fields, "token") != Some(token.as_str()) {
            bail!(not_shared(
                &self.dir,
                id,
                &format!(
                    "on node {node} it read another token from {}",
                    dir.join("token").display()
                )
            ));
        }
        // The rest of its line: bubblewrap's complaint, in words.
        let jail = fields.lines().find_map(|l| l.strip_prefix("jail="));
        match jail {
            Some("ok") => {}
            why => bail!(
                "the probe job {id} on node {node} cannot run the sandbox there: {}. The nodes \
                 need bubblewrap, libtorch, the data ({}) and the evaluator at the same paths as \
                 this machine (docs/slurm.md)",
                why.unwrap_or("no answer"),
                self.evaluator.paths()[1].display()
            ),
        }
        let latency = number(&fields, "start").map_or(f64::NAN, |s| s - submitted);
        eprintln!(
            "slurm | probe job {id} on node {node} started {latency:.2} s after submission and read \
             the run directory; jobs get: {}",
            self.shown_options(true)
        );
        Ok(())
    }

    async fn train_and_score(
        &self,
        job: &Job,
        stop: &mut Stop,
        progress: &Progress,
    ) -> Result<Outcome> {
        let dir = self.dir.join(format!("{}.{}", job.seq, job.index));
        let handle = match self.attach(job, &dir, progress).await? {
            Some(handle) => handle,
            None => self.submit(job, &dir, progress).await?,
        };
        let ended = self
            .follow(&handle, Some(stop), Some(progress), Some(&job.log))
            .await?;
        bound_log(&job.log).ok();
        match ended {
            Ended::Interrupted => Ok(Outcome::Interrupted),
            Ended::Gone(why) => {
                note(&job.log, &format!("orchestrator: {why}"));
                Ok(Outcome::Failed {
                    failure: super::TrialFailure::Crashed(why),
                    result: None,
                })
            }
            Ended::Done(done) => {
                note(&job.log, &timing(&handle, &done));
                self.outcome(job, &dir, &done)
            }
        }
    }

    /// The job that runs (or ran) `job` before a restart: re-attached when it is still queued
    /// or running, taken when it finished and left its results; None when it must be submitted.
    async fn attach(&self, job: &Job, dir: &Path, progress: &Progress) -> Result<Option<Handle>> {
        let name = self.job_name(job);
        let say = |what: &str| {
            progress.println(&format!(
                "slurm | experiment {} run {}: {what}",
                job.seq, job.index
            ))
        };
        let Some(handle) = Handle::read(&job.handle) else {
            // Killed between sbatch and writing the handle: the job is found by its name.
            let Some(id) = self.queued_by_name(&name, dir).await? else {
                return Ok(None);
            };
            let handle = Handle {
                id,
                dir: dir.to_path_buf(),
                submitted: None,
            };
            handle.write(&job.handle)?;
            say(&format!(
                "re-attached to job {id}, found by its name {name}"
            ));
            return Ok(Some(handle));
        };
        if Done::read(dir).is_some_and(|d| d.job == handle.id) {
            say(&format!(
                "job {} finished while the orchestrator was away; its results are taken",
                handle.id
            ));
            return Ok(Some(handle));
        }
        match self.state(handle.id).await? {
            State::Queued(_) | State::Active
                if self.name_of(handle.id).await.as_ref() == Some(&name) =>
            {
                say(&format!("re-attached to job {}", handle.id));
                Ok(Some(handle))
            }
            _ => Ok(None),
        }
    }

    /// Submits `job`: a fresh directory with a copy of its trainer, its script, and the job id
    /// written to its handle file at once.
    async fn submit(&self, job: &Job, dir: &Path, progress: &Progress) -> Result<Handle> {
        if let Err(e) = self.evaluator.check() {
            bail!(e);
        }
        std::fs::remove_dir_all(dir).ok();
        let export = dir.join("export");
        std::fs::create_dir_all(&export)
            .with_context(|| format!("creating {}", export.display()))?;
        // The job's own copy: cargo may rebuild the original while the job waits in the queue.
        let copy = dir.join("train");
        prepare::atomic::copy(&job.binary, &copy)?;
        if let Some(logs) = job.log.parent() {
            std::fs::create_dir_all(logs)?;
        }
        std::fs::File::create(&job.log)
            .with_context(|| format!("creating {}", job.log.display()))?;
        let trainer = self.trainers.command(job, &copy, &export, None);
        let model = dir.join(MODEL_FILE);
        let evaluator = self.evaluator.command(&model, Split::Val, 3, None, None);
        let script = self.trial_script(job, dir, &trainer, &evaluator)?;
        let limit = job.limits.train + job.limits.eval;
        let submitted = unix_now();
        let id = self
            .sbatch(dir, &script, &self.job_name(job), limit, &job.log, true)
            .await?;
        let handle = Handle {
            id,
            dir: dir.to_path_buf(),
            submitted: Some(submitted),
        };
        handle.write(&job.handle)?;
        self.journal(id, &format!("{}.{}", job.seq, job.index));
        progress.println(&format!(
            "slurm | experiment {} run {}: job {id} submitted ({})",
            job.seq,
            job.index,
            dir.join("job.sh").display()
        ));
        Ok(handle)
    }

    /// The trial's script: the trainer, then, when it exited 0 and exported a model, the
    /// evaluator; `done` last.
    fn trial_script(
        &self,
        job: &Job,
        dir: &Path,
        trainer: &tokio::process::Command,
        evaluator: &tokio::process::Command,
    ) -> Result<String> {
        let mut s = self.header(
            dir,
            &format!(
                "experiment {} run {} (seed {}): the trainer in its jail, then the protected \
                 evaluator in its own",
                job.seq, job.index, job.seed
            ),
        )?;
        let log = quote(&job.log)?;
        let trainer = render(trainer, Some(job.limits.train))?;
        writeln!(
            s,
            "# The trainer's stdout goes to the log (this job's output) and its last MiB to ./stdout,\n\
             # where its result line is read; its stderr goes to the log.\n\
             train_start=$(now)\n\
             {trainer} | tee -a {log} | tail -c {STDOUT_TAIL} > stdout\n\
             train_rc=${{PIPESTATUS[0]}}\n\
             train_end=$(now)\n\
             rm -f train\n\
             # Only a plain file is taken (not a link the trainer planted); whatever else it left goes.\n\
             if [ -f export/{MODEL_FILE} ] && [ ! -L export/{MODEL_FILE} ]; then mv -f export/{MODEL_FILE} {MODEL_FILE}; fi\n\
             rm -rf export\n\
             if [ \"$train_rc\" = 0 ] && [ -f {MODEL_FILE} ] && [ ! -L {MODEL_FILE} ]; then"
        )?;
        self.evaluate(&mut s, evaluator, job.limits.eval)?;
        writeln!(s, "fi\n{DONE}")?;
        Ok(s)
    }

    /// The lines that run the evaluator: its verdict through descriptor 3 into ./verdict (no
    /// jail sees that file), its stderr's end into ./evaluator.stderr, both bounded because the
    /// scored model runs inside it.
    fn evaluate(
        &self,
        s: &mut String,
        evaluator: &tokio::process::Command,
        limit: Duration,
    ) -> Result<()> {
        let evaluator = render(evaluator, Some(limit))?;
        writeln!(
            s,
            "  eval_start=$(now)\n  \
             {{ {evaluator} 3>&1 >/dev/null 2>&4 | head -c {} > verdict\n    \
             echo \"${{PIPESTATUS[0]}}\" > eval_rc\n  \
             }} 4>&1 | tail -c {STDERR_TAIL} > evaluator.stderr\n  \
             eval_rc=$(cat eval_rc)\n  \
             eval_end=$(now)",
            scoring::MAX_VERDICT
        )?;
        Ok(())
    }

    /// A script's first lines: where it runs and what it is.
    fn header(&self, dir: &Path, what: &str) -> Result<String> {
        Ok(format!(
            "#!/bin/bash\n\
             # autoresearch run {tag}, {what}.\n\
             # Written by the orchestrator, which reads what it leaves in this directory (docs/slurm.md).\n\
             export PATH={path}\n\
             cd {dir} || exit 1\n\
             now() {{ date +%s.%N; }}\n\
             job_start=$(now)\n",
            tag = self.tag,
            path = quote(Path::new(&self.path))?,
            dir = quote(dir)?,
        ))
    }

    /// Submits `script` (written to `dir/job.sh`) as `name`, allowed `limit` plus a margin, with
    /// the trials' GPU when `gpu`; its output goes to `output`. The job's id.
    async fn sbatch(
        &self,
        dir: &Path,
        script: &str,
        name: &str,
        limit: Duration,
        output: &Path,
        gpu: bool,
    ) -> Result<u64> {
        let path = dir.join("job.sh");
        prepare::atomic::write(&path, script.as_bytes())?;
        let minutes = ((limit + TIME_MARGIN).as_secs_f64() / 60.0).ceil().max(1.0);
        let out = tokio::process::Command::new("sbatch")
            .args(self.options(gpu))
            .arg(format!("--job-name={name}"))
            .arg(format!("--time={minutes}"))
            .arg(format!("--chdir={}", dir.display()))
            .arg(format!("--output={}", pattern(output)))
            .arg(&path)
            .env_remove("OPENAI_API_KEY")
            .stdin(std::process::Stdio::null())
            .output()
            .await
            .context("running sbatch")?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        let id = stdout.trim().split(';').next().and_then(|i| i.parse().ok());
        match id {
            Some(id) if out.status.success() => Ok(id),
            _ => bail!(
                "sbatch refused the job {name} ({}): {}{}. Check [slurm] in autoresearch.toml \
                 (partition, account, gres, extra) against the cluster (sinfo), see docs/slurm.md",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim(),
                stdout.trim()
            ),
        }
    }

    /// Follows job `handle` until it ends: its `done` file, or why there is none. `stop`
    /// cancels it; `progress` is fed its log's new lines.
    async fn follow(
        &self,
        handle: &Handle,
        mut stop: Option<&mut Stop>,
        progress: Option<&Progress>,
        log: Option<&Path>,
    ) -> Result<Ended> {
        let id = handle.id;
        let mut tail = log.map(LogTail::new);
        let mut shown = String::new();
        let mut unreachable: Option<Instant> = None;
        loop {
            if let Some(done) = Done::read(&handle.dir).filter(|d| d.job == id) {
                return Ok(Ended::Done(done));
            }
            if let (Some(tail), Some(progress)) = (&mut tail, progress) {
                tail.feed(|line| progress.trainer_line(line));
            }
            let state = match self.state(id).await {
                Ok(state) => {
                    unreachable = None;
                    state
                }
                // The controller may be restarting or failing over: the job goes on meanwhile,
                // and its `done` file still tells when it ends.
                Err(e) => {
                    let since = *unreachable.get_or_insert_with(Instant::now);
                    if since.elapsed() > Duration::from_secs(600) {
                        return Err(e.context(format!(
                            "Slurm has not answered about job {id} for 10 minutes"
                        )));
                    }
                    State::Active
                }
            };
            let phase = match &state {
                State::Queued(reason) if HOPELESS.contains(&reason.as_str()) => {
                    scancel(id).await.ok();
                    bail!(
                        "Slurm will not start job {id} as submitted ({reason}): its time limit \
                         (the trial's limits, docs/slurm.md) or its options ({}) are over what the \
                         partition, account or QOS allows. Check [slurm] in autoresearch.toml, or \
                         lower the budget or grace",
                        self.shown_options(true)
                    );
                }
                State::Queued(reason) if reason == "None" => "queued".into(),
                State::Queued(reason) => format!("queued ({reason})"),
                State::Active => "running".into(),
                State::Ended(_) | State::Unknown => {
                    return Ok(self.gone(handle, &state).await);
                }
            };
            if phase != shown
                && let Some(progress) = progress
            {
                progress.phase(&phase);
                shown = phase;
            }
            tokio::select! {
                _ = tokio::time::sleep(POLL) => {}
                _ = stopped(&mut stop) => {
                    scancel(id).await?;
                    return Ok(Ended::Interrupted);
                }
            }
        }
    }

    /// A job that ended without (yet) showing its `done` file: its results after all, or why
    /// there are none.
    async fn gone(&self, handle: &Handle, state: &State) -> Ended {
        let grace = match state {
            State::Ended(s) if s == "COMPLETED" => DONE_GRACE,
            _ => POLL,
        };
        let waited = Instant::now();
        loop {
            if let Some(done) = Done::read(&handle.dir).filter(|d| d.job == handle.id) {
                return Ended::Done(done);
            }
            if waited.elapsed() >= grace {
                break;
            }
            tokio::time::sleep(POLL).await;
        }
        Ended::Gone(self.ended(handle.id, state).await)
    }

    /// Why job `id`, which left no results, ended: its state and reason in words.
    async fn ended(&self, id: u64, state: &State) -> String {
        let info = self.final_info(id).await;
        let get = |key: &str| {
            info.as_ref()
                .and_then(|i| field(i, key))
                .unwrap_or("?")
                .to_string()
        };
        let job_state = match (&info, state) {
            (Some(_), _) => get("JobState"),
            (None, State::Ended(s)) => s.clone(),
            (None, _) => {
                return format!(
                    "Slurm: job {id} left no results, and Slurm no longer knows it (its records \
                     are kept MinJobAge seconds, and sacct needs accounting)"
                );
            }
        };
        // Slurm's words for a state are its first word (`CANCELLED by 0`).
        let job_state = job_state
            .split_whitespace()
            .next()
            .unwrap_or("?")
            .to_string();
        let reason = match get("Reason").as_str() {
            "None" | "?" => String::new(),
            r => format!(", reason {r}"),
        };
        let exit = get("ExitCode");
        match job_state.as_str() {
            "TIMEOUT" => format!(
                "Slurm: TIMEOUT at the job's time limit of {} (job {id})",
                minutes_text(&get("TimeLimit"))
            ),
            "CANCELLED" => format!(
                "Slurm: job {id} CANCELLED outside the orchestrator (scancel or an \
                 administrator){reason}"
            ),
            "NODE_FAIL" => format!(
                "Slurm: NODE_FAIL: node {} failed under job {id}",
                get("NodeList")
            ),
            "OUT_OF_MEMORY" => format!(
                "Slurm: OUT_OF_MEMORY: job {id} ran out of its memory (ask for more with --mem in \
                 [slurm] extra)"
            ),
            "COMPLETED" => format!(
                "Slurm: job {id} COMPLETED without leaving its results in {} (is the run \
                 directory on a filesystem shared with the nodes? docs/slurm.md)",
                self.dir.display()
            ),
            other => format!("Slurm: job {id} {other} without a result (exit code {exit}{reason})"),
        }
    }

    /// The trial's outcome from what its job left in `dir`.
    fn outcome(&self, job: &Job, dir: &Path, done: &Done) -> Result<Outcome> {
        let train = done.train.unwrap_or_default();
        let run_seconds = train.seconds();
        let exit = if train.killed_at(job.limits.train) {
            let reason = job.limits.trainer_killed();
            note(&job.log, &format!("orchestrator: {reason}"));
            Exit::TimedOut(reason)
        } else {
            Exit::Exited {
                status: status(train.rc),
                result: result_line(&dir.join("stdout")),
            }
        };
        match finished(exit, &job.limits) {
            ControlFlow::Break(outcome) => Ok(outcome),
            ControlFlow::Continue(result) => {
                let model = dir.join(MODEL_FILE);
                let score = self.verdict(dir, done, job.limits.eval, &model);
                scored(job, result, model, run_seconds, score)
            }
        }
    }

    /// The evaluator's verdict that a job left in `dir`, believed only if the evaluator and the
    /// data still hash as at start.
    fn verdict(
        &self,
        dir: &Path,
        done: &Done,
        limit: Duration,
        model: &Path,
    ) -> Result<Score, ScoreError> {
        self.evaluator.check()?;
        scoring::exported(model)?;
        let Some(eval) = done.eval else {
            return Err(ScoreError::Failed("the evaluator did not run".into()));
        };
        if eval.killed_at(limit) {
            return Err(scoring::timed_out(limit));
        }
        let verdict = read_bounded(&dir.join("verdict"), scoring::MAX_VERDICT);
        let stderr = read_bounded(&dir.join("evaluator.stderr"), STDERR_TAIL as u64);
        let lines: Vec<&str> = stderr.lines().collect();
        let stderr = lines[lines.len().saturating_sub(STDERR_LINES)..].join(" | ");
        scoring::verdict_of(&verdict, status(eval.rc), &stderr)
    }

    /// The holdout: the evaluator on the test split, as a job of its own (the GPU is on the
    /// nodes).
    async fn holdout_job(&self, model: &Path, limit: Duration) -> Result<Score, ScoreError> {
        self.evaluator.check()?;
        scoring::exported(model)?;
        let failed = |e: anyhow::Error| ScoreError::Failed(format!("{e:#}"));
        let run = model
            .parent()
            .and_then(Path::file_name)
            .map_or("model".into(), |n| n.to_string_lossy().into_owned());
        let dir = self.dir.join(format!("holdout-{run}"));
        std::fs::remove_dir_all(&dir).ok();
        std::fs::create_dir_all(&dir).map_err(|e| failed(e.into()))?;
        let evaluator = self.evaluator.command(model, Split::Test, 3, None, None);
        let mut script = self
            .header(
                &dir,
                &format!(
                    "the holdout: the protected evaluator on the test split, model {}",
                    model.display()
                ),
            )
            .map_err(failed)?;
        script.push_str("if true; then\n");
        self.evaluate(&mut script, &evaluator, limit)
            .map_err(failed)?;
        script.push_str(&format!("fi\n{DONE}\n"));
        let name = format!("autoresearch-{}-holdout-{run}", self.tag);
        let submitted = unix_now();
        let id = self
            .sbatch(&dir, &script, &name, limit, &dir.join("output"), true)
            .await
            .map_err(failed)?;
        self.journal(id, &format!("holdout-{run}"));
        // Nothing resumes a holdout: a job left behind would only hold a GPU.
        let mut cancel = CancelOnDrop(Some(id));
        let handle = Handle {
            id,
            dir: dir.clone(),
            submitted: Some(submitted),
        };
        let ended = self
            .follow(&handle, None, None, None)
            .await
            .map_err(failed)?;
        cancel.0 = None;
        match ended {
            Ended::Done(done) => self.verdict(&dir, &done, limit, model),
            Ended::Gone(why) => Err(ScoreError::Failed(why)),
            Ended::Interrupted => Err(ScoreError::Failed("interrupted".into())),
        }
    }

    /// The options a job is submitted with, `--gres` only for one that uses the GPU.
    fn options(&self, gpu: bool) -> Vec<String> {
        let gres = self
            .gres
            .iter()
            .filter(|_| gpu)
            .map(|g| format!("--gres={g}"));
        self.options
            .iter()
            .cloned()
            .chain(gres)
            .chain(self.extra.iter().cloned())
            .collect()
    }

    /// The options, for people.
    fn shown_options(&self, gpu: bool) -> String {
        let options = self.options(gpu);
        let shown: Vec<&str> = options
            .iter()
            .map(String::as_str)
            .filter(|o| *o != "--parsable")
            .collect();
        shown.join(" ")
    }

    fn job_name(&self, job: &Job) -> String {
        format!("autoresearch-{}-{}.{}", self.tag, job.seq, job.index)
    }

    /// Where job `id` is: one `squeue` for any job Slurm still knows, finished ones included.
    async fn state(&self, id: u64) -> Result<State> {
        let out = client(
            "squeue",
            &["-h", "-t", "all", "-o", "%T|%r", "-j", &id.to_string()],
        )
        .await?;
        if !out.status.success() {
            let stderr = String::from_utf8_lossy(&out.stderr);
            if stderr.contains("Invalid job id") {
                return Ok(State::Unknown);
            }
            bail!("squeue about job {id}: {}", stderr.trim());
        }
        let stdout = String::from_utf8_lossy(&out.stdout);
        let Some((state, reason)) = stdout.lines().next().and_then(|l| l.trim().split_once('|'))
        else {
            return Ok(State::Unknown);
        };
        Ok(match state {
            "PENDING" | "REQUEUED" | "REQUEUE_HOLD" | "REQUEUE_FED" | "RESV_DEL_HOLD" => {
                State::Queued(reason.to_string())
            }
            // Allocated, its node still booting (a cloud or power-saving node): not started.
            "CONFIGURING" => State::Queued("its node is being configured".into()),
            "BOOT_FAIL" | "CANCELLED" | "COMPLETED" | "DEADLINE" | "FAILED" | "NODE_FAIL"
            | "OUT_OF_MEMORY" | "PREEMPTED" | "TIMEOUT" => State::Ended(state.to_string()),
            // RUNNING, COMPLETING, CONFIGURING, SUSPENDED, ...: not over yet.
            _ => State::Active,
        })
    }

    /// `scontrol show job` of an ended job, or where Slurm has forgotten it, what `sacct` knows
    /// in the same `Key=value` form; None when neither knows it.
    async fn final_info(&self, id: u64) -> Option<String> {
        let id = id.to_string();
        if let Ok(out) = client("scontrol", &["show", "job", "-o", &id]).await
            && out.status.success()
        {
            return Some(String::from_utf8_lossy(&out.stdout).into_owned());
        }
        let out = client(
            "sacct",
            &[
                "-n",
                "-X",
                "-P",
                "-j",
                &id,
                "-o",
                "State,ExitCode,Timelimit,NodeList",
            ],
        )
        .await
        .ok()
        .filter(|o| o.status.success())?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        let mut parts = stdout.lines().next()?.split('|');
        let [state, exit, limit, nodes] = [(); 4].map(|()| parts.next().unwrap_or("?"));
        Some(format!(
            "JobState={} ExitCode={exit} TimeLimit={limit} NodeList={nodes}",
            state.replace(' ', "_")
        ))
    }

    async fn name_of(&self, id: u64) -> Option<String> {
        let out = client(
            "squeue",
            &["-h", "-t", "all", "-o", "%j", "-j", &id.to_string()],
        )
        .await
        .ok()?;
        let name = String::from_utf8_lossy(&out.stdout).trim().to_string();
        (out.status.success() && !name.is_empty()).then_some(name)
    }

    /// A queued or running job of ours named `name` that works in `dir` (a job of an earlier
    /// run of the same tag elsewhere is not ours), the newest; any older ones are cancelled: at
    /// most one job may write a trial's directory.
    async fn queued_by_name(&self, name: &str, dir: &Path) -> Result<Option<u64>> {
        let out = client(
            "squeue",
            &[
                "-h",
                "--me",
                "-t",
                "PENDING,RUNNING",
                "-o",
                "%i|%Z",
                "-n",
                name,
            ],
        )
        .await?;
        if !out.status.success() {
            bail!(
                "squeue -n {name}: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        let mut ids: Vec<u64> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.trim().split_once('|'))
            .filter(|(_, workdir)| Path::new(workdir) == dir)
            .filter_map(|(id, _)| id.parse().ok())
            .collect();
        ids.sort();
        let newest = ids.pop();
        for id in ids {
            scancel(id).await?;
        }
        Ok(newest)
    }

    /// `runs/<tag>/slurm/jobs.log`: every job submitted, one line each (id, run, time), for a
    /// person finding a job again and for the tests counting submissions.
    fn journal(&self, id: u64, run: &str) {
        use std::io::Write;
        let line = format!("{id} {run} {}\n", chrono::Local::now().to_rfc3339());
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("jobs.log"))
            .and_then(|mut f| f.write_all(line.as_bytes()))
            .ok();
    }
}

/// The script's last lines: what the orchestrator reads first, written whole or not at all.
const DONE: &str = "{
  echo \"job=$SLURM_JOB_ID\"
  echo \"node=$(hostname)\"
  echo \"job_start=$job_start\"
  [ -n \"${train_rc-}\" ] && echo \"train_rc=$train_rc train_start=$train_start train_end=$train_end\"
  [ -n \"${eval_rc-}\" ] && echo \"eval_rc=$eval_rc eval_start=$eval_start eval_end=$eval_end\"
  echo \"end=$(now)\"
} > done.partial && mv -f done.partial done";

impl Executor for Slurm {
    fn run<'a>(
        &'a self,
        job: &'a Job,
        stop: &'a mut Stop,
        progress: &'a Progress,
    ) -> Running<'a, Result<Outcome>> {
        Box::pin(self.train_and_score(job, stop, progress))
    }

    /// Cancels the job if it is still queued or running, and removes the handle and the big
    /// files of its directory (the trainer's copy, the model); the small ones (script, result
    /// line, verdict, times) stay for whoever looks into a trial later.
    fn abandon<'a>(&'a self, handle: &'a Path) -> Running<'a, Result<()>> {
        Box::pin(async move {
            if let Some(h) = Handle::read(handle) {
                let active = |state: &State| matches!(state, State::Queued(_) | State::Active);
                if active(&self.state(h.id).await?)
                    && self
                        .name_of(h.id)
                        .await
                        .is_some_and(|n| n.starts_with(&format!("autoresearch-{}-", self.tag)))
                {
                    scancel(h.id).await?;
                    // Its script must not write into the directory once it is cleaned.
                    let waited = Instant::now();
                    while active(&self.state(h.id).await?)
                        && waited.elapsed() < Duration::from_secs(15)
                    {
                        tokio::time::sleep(POLL).await;
                    }
                }
                if h.dir.starts_with(&self.dir) {
                    std::fs::remove_file(h.dir.join("train")).ok();
                    std::fs::remove_file(h.dir.join(MODEL_FILE)).ok();
                    std::fs::remove_dir_all(h.dir.join("export")).ok();
                }
            }
            match std::fs::remove_file(handle) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e.into()),
                _ => Ok(()),
            }
        })
    }

    /// The node's GPU is the one Slurm gives the job.
    fn holdout<'a>(
        &'a self,
        model: &'a Path,
        limit: Duration,
        _gpu: Option<&'a str>,
    ) -> Running<'a, Result<Score, ScoreError>> {
        Box::pin(self.holdout_job(model, limit))
    }
}

/// Where a job is, as far as following it goes.
#[derive(Debug)]
enum State {
    /// Waiting to start, and why (Slurm's reason: `Resources`, `Priority`, ...).
    Queued(String),
    /// Running, or finishing.
    Active,
    /// Over, in this state.
    Ended(String),
    /// Slurm no longer knows it.
    Unknown,
}

enum Ended {
    Done(Done),
    /// No results, and why: the trial's crash reason.
    Gone(String),
    Interrupted,
}

/// A run's job, as its handle file holds it: the id, the directory its results go to, and when
/// it was submitted (unknown for a job found again by its name).
struct Handle {
    id: u64,
    dir: PathBuf,
    submitted: Option<f64>,
}

impl Handle {
    fn read(path: &Path) -> Option<Handle> {
        let text = std::fs::read_to_string(path).ok()?;
        let mut lines = text.lines();
        Some(Handle {
            id: lines.next()?.trim().parse().ok()?,
            dir: PathBuf::from(lines.next()?),
            submitted: lines.next().and_then(|s| s.parse().ok()),
        })
    }

    fn write(&self, path: &Path) -> Result<()> {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        let submitted = self.submitted.map_or(String::new(), |s| format!("{s:.3}"));
        let text = format!("{}\n{}\n{submitted}\n", self.id, self.dir.display());
        prepare::atomic::write(path, text.as_bytes())
    }
}

/// What a job's `done` file says.
struct Done {
    job: u64,
    node: String,
    job_start: f64,
    end: f64,
    train: Option<Phase>,
    eval: Option<Phase>,
}

/// One process of a job: its exit code (the shell's: 128 + n for signal n) and times.
#[derive(Clone, Copy, Default)]
struct Phase {
    rc: i32,
    start: f64,
    end: f64,
}

impl Phase {
    fn seconds(&self) -> f64 {
        (self.end - self.start).max(0.0)
    }

    /// Killed (`timeout -s KILL`) at `limit`.
    fn killed_at(&self, limit: Duration) -> bool {
        self.rc == 128 + libc::SIGKILL && self.seconds() >= limit.as_secs_f64() - 0.5
    }
}

impl Done {
    fn read(dir: &Path) -> Option<Done> {
        let fields = read_fields(&dir.join("done"))?;
        let phase = |name: &str| {
            Some(Phase {
                rc: number(&fields, &format!("{name}_rc"))? as i32,
                start: number(&fields, &format!("{name}_start"))?,
                end: number(&fields, &format!("{name}_end"))?,
            })
        };
        Some(Done {
            job: field(&fields, "job")?.parse().ok()?,
            node: field(&fields, "node").unwrap_or("?").to_string(),
            job_start: number(&fields, "job_start")?,
            end: number(&fields, "end")?,
            train: phase("train"),
            eval: phase("eval"),
        })
    }
}

/// The latency figures of a finished job, for its log.
fn timing(handle: &Handle, done: &Done) -> String {
    let queued = handle
        .submitted
        .map_or("?".into(), |s| format!("{:.2}", done.job_start - s));
    format!(
        "orchestrator: Slurm job {} on node {}: started {queued} s after submission, ran {:.1} s, \
         seen done {:.2} s after it ended",
        handle.id,
        done.node,
        done.end - done.job_start,
        unix_now() - done.end
    )
}

/// Appends a note to a trial's log.
fn note(log: &Path, text: &str) {
    use std::io::Write;
    if let Ok(mut f) = std::fs::OpenOptions::new().append(true).open(log) {
        writeln!(f, "{text}").ok();
    }
}

/// Cuts a finished job's log to its first and last [`LOG_KEEP`] bytes, as `Local` keeps them
/// (the job wrote it whole, on the node).
fn bound_log(log: &Path) -> Result<()> {
    let mut file = std::fs::File::open(log)?;
    let len = file.metadata()?.len();
    let keep = LOG_KEEP as u64;
    if len <= 2 * keep {
        return Ok(());
    }
    let mut head = vec![0; LOG_KEEP];
    file.read_exact(&mut head)?;
    let mut tail = vec![0; LOG_KEEP];
    file.seek(SeekFrom::End(-(keep as i64)))?;
    file.read_exact(&mut tail)?;
    let mut text = head;
    text.extend_from_slice(
        format!(
            "\n[orchestrator: {} bytes of output cut here; the log keeps the first {} KiB and \
             the last {} KiB]\n",
            len - 2 * keep,
            LOG_KEEP >> 10,
            LOG_KEEP >> 10
        )
        .as_bytes(),
    );
    text.extend_from_slice(&tail);
    prepare::atomic::write(log, &text)
}

/// The new complete lines of a log that a job is writing.
struct LogTail {
    path: PathBuf,
    offset: u64,
}

impl LogTail {
    fn new(path: &Path) -> LogTail {
        LogTail {
            path: path.to_path_buf(),
            offset: 0,
        }
    }

    fn feed(&mut self, mut line: impl FnMut(&str)) {
        let Ok(mut file) = std::fs::File::open(&self.path) else {
            return;
        };
        let len = file.metadata().map_or(0, |m| m.len());
        // Far behind (a trainer printing fast): only the latest lines matter for progress.
        self.offset = self.offset.max(len.saturating_sub(64 << 10));
        let mut bytes = Vec::new();
        if file.seek(SeekFrom::Start(self.offset)).is_err() || file.read_to_end(&mut bytes).is_err()
        {
            return;
        }
        let Some(last) = bytes.iter().rposition(|&b| b == b'\n') else {
            return;
        };
        self.offset += last as u64 + 1;
        for l in String::from_utf8_lossy(&bytes[..last]).lines() {
            line(l);
        }
    }
}

/// Cancels a job when dropped before it is disarmed (its future dropped).
struct CancelOnDrop(Option<u64>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        if let Some(id) = self.0 {
            std::process::Command::new("scancel")
                .arg(id.to_string())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .status()
                .ok();
        }
    }
}

async fn stopped(stop: &mut Option<&mut Stop>) {
    match stop {
        Some(stop) => stop.wait().await,
        None => std::future::pending().await,
    }
}

async fn client(program: &str, args: &[&str]) -> Result<std::process::Output> {
    tokio::process::Command::new(program)
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .with_context(|| format!("running {program}"))
}

async fn scancel(id: u64) -> Result<()> {
    let out = client("scancel", &[&id.to_string()]).await?;
    if !out.status.success() {
        bail!(
            "scancel {id}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// A jail's command as one line of shell: `env -i` with exactly its environment (the job's own
/// never reaches it), under `timeout -s KILL` when it has a `limit`. The GPU the node gave the job
/// (`CUDA_VISIBLE_DEVICES`, set by Slurm) replaces this machine's.
fn render(command: &tokio::process::Command, limit: Option<Duration>) -> Result<String> {
    let command = command.as_std();
    let mut line = String::new();
    if let Some(dir) = command.get_current_dir() {
        write!(line, "cd {} && ", quote(dir)?)?;
    }
    if let Some(limit) = limit {
        write!(line, "timeout -s KILL {:.3} ", limit.as_secs_f64())?;
    }
    line.push_str("env -i");
    for (name, value) in command.get_envs() {
        if let Some(value) = value
            && name != "CUDA_VISIBLE_DEVICES"
        {
            let mut pair = name.to_os_string();
            pair.push("=");
            pair.push(value);
            write!(line, " {}", quote(Path::new(&pair))?)?;
        }
    }
    line.push_str(" ${CUDA_VISIBLE_DEVICES+\"CUDA_VISIBLE_DEVICES=$CUDA_VISIBLE_DEVICES\"}");
    write!(line, " {}", quote(Path::new(command.get_program()))?)?;
    for arg in command.get_args() {
        write!(line, " {}", quote(Path::new(arg))?)?;
    }
    // A subshell: `cd` must not move the script, and the pipes around it apply to it whole.
    Ok(format!("( {line} )"))
}

/// One word of shell: as it is when it is plain, else in single quotes.
fn quote(word: &Path) -> Result<String> {
    let word = word.to_str().with_context(|| {
        format!(
            "{} is not UTF-8, which a job's script needs",
            word.display()
        )
    })?;
    let plain = !word.is_empty()
        && word
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_-./=:,+@%".contains(&b));
    Ok(if plain {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    })
}

/// A path as an sbatch filename pattern: `%` is Slurm's, so doubled (unless a backslash in the
/// path turns the patterns off anyway).
fn pattern(path: &Path) -> String {
    let path = path.display().to_string();
    if path.contains('\\') {
        path
    } else {
        path.replace('%', "%%")
    }
}

/// The trainer's result line: its last non-empty stdout line, when that is a JSON object.
fn result_line(stdout: &Path) -> Option<serde_json::Value> {
    let text = read_bounded_tail(stdout, 2 * MAX_LINE as u64);
    let line = text.lines().rev().find(|l| !l.trim().is_empty())?;
    process::result_line(line)
}

fn read_bounded(path: &Path, limit: u64) -> String {
    let mut text = Vec::new();
    if let Ok(file) = std::fs::File::open(path) {
        file.take(limit).read_to_end(&mut text).ok();
    }
    String::from_utf8_lossy(&text).into_owned()
}

fn read_bounded_tail(path: &Path, limit: u64) -> String {
    let mut text = Vec::new();
    if let Ok(mut file) = std::fs::File::open(path) {
        let len = file.metadata().map_or(0, |m| m.len());
        if file
            .seek(SeekFrom::Start(len.saturating_sub(limit)))
            .is_ok()
        {
            file.read_to_end(&mut text).ok();
        }
    }
    String::from_utf8_lossy(&text).into_owned()
}

/// A file of `key=value` words (a job's `done`, the probe's reply); None until it exists.
fn read_fields(path: &Path) -> Option<String> {
    std::fs::read_to_string(path).ok()
}

/// The value of `key=` in `Key=value` text (space- or line-separated, as `scontrol -o` prints).
fn field<'t>(text: &'t str, key: &str) -> Option<&'t str> {
    let prefix = format!("{key}=");
    text.split_whitespace()
        .find_map(|word| word.strip_prefix(prefix.as_str()))
}

fn number(text: &str, key: &str) -> Option<f64> {
    field(text, key)?.parse().ok()
}

/// `ExitStatus` of a shell exit code, shown as `Local`'s are ("exit status: 1").
fn status(rc: i32) -> ExitStatus {
    ExitStatus::from_raw((rc & 0xff) << 8)
}

/// Slurm's `TimeLimit` (`[days-]hours:minutes:seconds`, or minutes) as `N min`.
fn minutes_text(limit: &str) -> String {
    let (days, rest) = limit.split_once('-').unwrap_or(("0", limit));
    let parts: Vec<f64> = rest.split(':').filter_map(|p| p.parse().ok()).collect();
    let Ok(days) = days.parse::<f64>() else {
        return limit.to_string();
    };
    let minutes = match parts[..] {
        [h, m, s] => h * 60.0 + m + s / 60.0,
        [m, s] => m + s / 60.0,
        [m] => m,
        _ => return limit.to_string(),
    };
    format!("{} min", days * 1440.0 + minutes)
}

fn not_shared(dir: &Path, id: u64, what: &str) -> String {
    format!(
        "the probe job {id} did not read back the token the orchestrator wrote for it: {what}. \
         The run directory {} must be on a filesystem shared with the nodes, at the same path \
         (NFS, Lustre, GPFS, ...), as must the repository and the data; see docs/slurm.md. The \
         probe's files are in {}",
        dir.parent().unwrap_or(dir).display(),
        dir.join("probe").display()
    )
}

fn on_path(program: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|path| {
        std::env::split_paths(&path).any(|dir| {
            use std::os::unix::fs::PermissionsExt;
            std::fs::metadata(dir.join(program))
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
    })
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

fn random_token() -> Result<String> {
    let mut bytes = [0u8; 16];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .context("reading /dev/urandom")?;
    Ok(hex::encode(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_are_quoted_for_the_shell() {
        assert_eq!(quote(Path::new("/a/b-c.d")).unwrap(), "/a/b-c.d");
        assert_eq!(quote(Path::new("a b")).unwrap(), "'a b'");
        assert_eq!(quote(Path::new("it's")).unwrap(), r"'it'\''s'");
        assert_eq!(quote(Path::new("$HOME")).unwrap(), "'$HOME'");
        assert_eq!(quote(Path::new("")).unwrap(), "''");
    }

    #[test]
    fn a_rendered_command_runs_with_exactly_its_environment() {
        let mut command = tokio::process::Command::new("/usr/bin/env");
        command
            .env_clear()
            .env("A", "x y")
            .env("B", "it's $HOME")
            .env("CUDA_VISIBLE_DEVICES", "7")
            .current_dir("/tmp");
        let line = render(&command, Some(Duration::from_secs(5))).unwrap();
        let out = std::process::Command::new("bash")
            .arg("-c")
            .arg(&line)
            .env("CUDA_VISIBLE_DEVICES", "1")
            .env("SECRET", "s")
            .output()
            .unwrap();
        let env = String::from_utf8(out.stdout).unwrap();
        let mut vars: Vec<&str> = env.lines().collect();
        vars.sort();
        assert_eq!(
            vars,
            ["A=x y", "B=it's $HOME", "CUDA_VISIBLE_DEVICES=1"],
            "{line}"
        );
        let out = std::process::Command::new("bash")
            .arg("-c")
            .arg(&line)
            .env_remove("CUDA_VISIBLE_DEVICES")
            .output()
            .unwrap();
        assert!(
            !String::from_utf8(out.stdout).unwrap().contains("CUDA"),
            "{line}"
        );
    }

    #[test]
    fn fields_and_limits_are_read_as_slurm_prints_them() {
        let line = "JobId=5 JobName=autoresearch-t-1.0 JobState=TIMEOUT Reason=TimeLimit \
                    ExitCode=0:15 TimeLimit=00:01:00 NodeList=vm";
        assert_eq!(field(line, "JobState"), Some("TIMEOUT"));
        assert_eq!(field(line, "State"), None);
        assert_eq!(minutes_text(field(line, "TimeLimit").unwrap()), "1 min");
        assert_eq!(minutes_text("1-02:03:00"), "1563 min");
        assert_eq!(minutes_text("UNLIMITED"), "UNLIMITED");
        assert_eq!(pattern(Path::new("/r/a%b")), "/r/a%%b");
        assert_eq!(status(137).to_string(), "exit status: 137");
    }

    #[test]
    fn the_result_line_is_the_last_json_object_on_stdout() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("stdout");
        std::fs::write(&path, "step 1\n{\"status\":\"ok\"}\n\n").unwrap();
        assert_eq!(result_line(&path).unwrap()["status"], "ok");
        std::fs::write(&path, "{\"status\":\"ok\"}\nnot json\n").unwrap();
        assert!(result_line(&path).is_none());
    }
}
