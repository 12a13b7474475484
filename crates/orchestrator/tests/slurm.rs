//! End-to-end runs with `--executor slurm` on a real one-node Slurm cluster on this machine
//! (`scripts/slurm-local.sh start`, which each test calls: it is idempotent, and the cluster is
//! left running for the next test). Nothing about Slurm is mocked.
//!
//! - `trials_run_as_slurm_jobs`: baseline and one experiment, each trial one job (its id in its
//!   handle file and in `squeue` while it runs), scored and recorded; nothing left queued.
//! - `a_killed_orchestrator_finds_its_jobs_again`: kill -9 while the baseline's job runs, let the
//!   job finish, resume (its results are taken); kill -9 while experiment 1's job runs, resume at
//!   once (the job is re-attached through its handle); kill -9 while experiment 2's job runs and
//!   remove its handle (a kill right after sbatch), resume (the job is found by its name); no
//!   trial is submitted twice, no experiment recorded twice. The model's shapes are fixed there
//!   (see `shapes_fixed`), so that no experiment's job crashes before the orchestrator is back.
//! - `a_job_slurm_ends_at_its_time_limit_is_a_crash`: a running job's time limit lowered to 1
//!   minute with `scontrol update`; Slurm ends it (TIMEOUT) and the experiment is recorded as a
//!   crash naming the limit.
//! - `the_probe_stops_a_run_the_nodes_cannot_serve`: a run directory the job cannot see (a
//!   private mount, as on a machine whose disk the nodes do not share), and a partition that does
//!   not exist, each stop the run at start with what to do.
//! - `workers_keep_jobs_in_flight_and_find_them_again`: `--workers 2` on the stand-in trainer
//!   (tests/common/standin.rs): two trial jobs run at once; kill -9 with both in flight, resume:
//!   both found again; each trial submitted once, each experiment recorded once.
//! - `a_trial_over_the_partitions_time_limit_stops_the_run`: a partition whose `MaxTime` is under
//!   the trials' `--time` (set for the test with `scontrol update`, put back after): the job would
//!   wait for ever (`PartitionTimeLimit`); the run stops saying so.
//!
//! The latency figures (probe and trials: submission to start, job end to the orchestrator
//! seeing it) are printed; run with `--nocapture` to see them.

mod common;
#[path = "common/standin.rs"]
mod standin;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{SERIAL, Sandbox};

/// Starts (or finds) the local cluster; its `SLURM_CONF`.
fn cluster() -> String {
    let script = prepare::workspace_root().join("scripts/slurm-local.sh");
    let out = Command::new(&script).arg("start").output().unwrap();
    assert!(
        out.status.success(),
        "{} start: {}",
        script.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("export SLURM_CONF="))
        .expect("start prints export SLURM_CONF=...")
        .trim_matches(['"', '\''])
        .to_string()
}

struct Run {
    sandbox: Sandbox,
    conf: String,
    tag: &'static str,
}

impl Run {
    fn new(tag: &'static str) -> Run {
        Run {
            conf: cluster(),
            sandbox: Sandbox::new(),
            tag,
        }
    }

    /// The orchestrator with `--executor slurm`, the offline agent, 1 noise seed and `extra`.
    fn command(&self, budget: &str, extra: &[&str]) -> Command {
        let args = [
            &[
                "--executor",
                "slurm",
                "--agent",
                "offline",
                "--noise-seeds",
                "1",
                "--workers",
                "1",
                "--time-budget",
                budget,
                "--tag",
                self.tag,
            ][..],
            extra,
        ]
        .concat();
        let mut command = self.sandbox.command(&args);
        command.env("SLURM_CONF", &self.conf);
        command
    }

    /// Spawned, its stderr into `name` in the run's parent directory (read afterwards).
    fn spawn<'n>(
        &self,
        budget: &str,
        extra: &[&str],
        name: &'n str,
    ) -> (std::process::Child, &'n str) {
        let stderr = std::fs::File::create(self.sandbox.repo.join(name)).unwrap();
        let child = self
            .command(budget, extra)
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .unwrap();
        (child, name)
    }

    fn stderr(&self, name: &str) -> String {
        std::fs::read_to_string(self.sandbox.repo.join(name)).unwrap_or_default()
    }

    fn run_dir(&self) -> PathBuf {
        self.sandbox.repo.join("runs").join(self.tag)
    }

    /// `runs/<tag>/slurm/jobs.log`: (job id, what it ran) per submission.
    fn submitted(&self) -> Vec<(u64, String)> {
        std::fs::read_to_string(self.run_dir().join("slurm/jobs.log"))
            .unwrap_or_default()
            .lines()
            .map(|l| {
                let mut words = l.split_whitespace();
                (
                    words.next().unwrap().parse().unwrap(),
                    words.next().unwrap().to_string(),
                )
            })
            .collect()
    }

    /// Our jobs Slurm still has queued or running: (id, name, state).
    fn queued(&self) -> Vec<(u64, String, String)> {
        let prefix = format!("autoresearch-{}-", self.tag);
        squeue(&self.conf, &["-o", "%i|%j|%T"])
            .lines()
            .filter_map(|l| {
                let mut parts = l.split('|');
                let id = parts.next()?.trim().parse().ok()?;
                Some((id, parts.next()?.to_string(), parts.next()?.to_string()))
            })
            .filter(|(_, name, _)| name.starts_with(&prefix))
            .collect()
    }

    /// The job of experiment `seq`'s run `index` once it is running, from its handle file
    /// (checked against what Slurm says of it), or None.
    fn running(&self, seq: u64, index: usize) -> Option<u64> {
        let handle = find_file(&self.run_dir(), &format!("{seq}.{index}.job"))?;
        let id: u64 = std::fs::read_to_string(handle)
            .ok()?
            .lines()
            .next()?
            .parse()
            .ok()?;
        let name = format!("autoresearch-{}-{seq}.{index}", self.tag);
        self.queued()
            .iter()
            .any(|(i, n, state)| *i == id && *n == name && state == "RUNNING")
            .then_some(id)
    }

    /// Waits for [`Run::running`], failing after `limit`.
    fn wait_running(&self, seq: u64, index: usize, child: &mut (std::process::Child, &str)) -> u64 {
        let (child, name) = child;
        let started = Instant::now();
        loop {
            if let Some(id) = self.running(seq, index) {
                return id;
            }
            if let Some(status) = child.try_wait().unwrap() {
                panic!(
                    "the orchestrator ended ({status}) before experiment {seq}'s job ran: {}",
                    self.stderr(name)
                );
            }
            assert!(
                started.elapsed() < Duration::from_secs(900),
                "experiment {seq}'s job never ran"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// The latency notes the executor wrote into the trials' logs, printed for the report.
    fn figures(&self, stderr: &str) {
        for line in stderr.lines().filter(|l| l.contains("probe job")) {
            eprintln!("figure | {line}");
        }
        let logs = self.run_dir().join("logs");
        let mut names: Vec<_> = std::fs::read_dir(&logs)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        names.sort();
        for log in names {
            for line in std::fs::read_to_string(&log).unwrap_or_default().lines() {
                if line.starts_with("orchestrator: Slurm job") {
                    eprintln!(
                        "figure | {}: {line}",
                        log.file_name().unwrap().to_string_lossy()
                    );
                }
            }
        }
    }
}

/// Our trial jobs Slurm is running now (not the probe's or a holdout's).
fn running_trials(conf: &str, tag: &str) -> Vec<u64> {
    let prefix = format!("autoresearch-{tag}-");
    squeue(conf, &["-t", "RUNNING", "-o", "%i|%j"])
        .lines()
        .filter_map(|l| {
            let (id, name) = l.split_once('|')?;
            let run = name.strip_prefix(&prefix)?;
            run.starts_with(|c: char| c.is_ascii_digit())
                .then(|| id.trim().parse().ok())?
        })
        .collect()
}

fn squeue(conf: &str, args: &[&str]) -> String {
    let out = Command::new("squeue")
        .arg("-h")
        .args(args)
        .env("SLURM_CONF", conf)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn find_file(dir: &Path, name: &str) -> Option<PathBuf> {
    for entry in std::fs::read_dir(dir).ok()?.flatten() {
        let path = entry.path();
        if path.file_name().is_some_and(|n| n == name) {
            return Some(path);
        }
        if entry.file_type().is_ok_and(|t| t.is_dir())
            && !path.ends_with("worktree")
            && let Some(found) = find_file(&path, name)
        {
            return Some(found);
        }
    }
    None
}

fn records(run: &Run) -> Vec<serde_json::Value> {
    run.sandbox.records(run.tag)
}

#[test]
fn trials_run_as_slurm_jobs() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let run = Run::new("slurm-full");
    let mut child = run.spawn("2", &["--max-experiments", "2"], "stderr.txt");
    // While each trial runs, its handle names the job, which Slurm runs under the trial's name.
    let baseline = run.wait_running(0, 0, &mut child);
    let experiment = run.wait_running(1, 0, &mut child);
    let status = child.0.wait().unwrap();
    let stderr = run.stderr("stderr.txt");
    assert!(status.success(), "{stderr}");

    let records = records(&run);
    let seqs: Vec<u64> = records.iter().map(|r| r["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, [0, 1], "{stderr}");
    for r in &records {
        if r["status"] != "crash" {
            assert!(r["val_bpb"].as_f64().is_some_and(|b| b > 0.0), "{r}");
            let trial = &r["trials"][0];
            assert!(trial["val_bpb"].as_f64().is_some(), "{r}");
            assert!(
                trial["eval_seconds"].as_f64().is_some_and(|s| s > 0.0),
                "{r}"
            );
        }
    }
    assert_eq!(records[0]["status"], "keep", "{stderr}");
    // The baseline is a new best, so its holdout ran as a job too.
    assert!(records[0]["test_bpb"].as_f64().is_some(), "{}", records[0]);

    // One job per trial, each submitted once, as printed.
    let submitted = run.submitted();
    let trials: Vec<&(u64, String)> = submitted
        .iter()
        .filter(|(_, what)| !what.starts_with("holdout"))
        .collect();
    assert_eq!(
        trials,
        [
            &(baseline, "0.0".to_string()),
            &(experiment, "1.0".to_string())
        ],
        "{stderr}"
    );
    assert!(submitted.iter().any(|(_, what)| what == "holdout-0.0"));
    assert!(
        stderr.contains(&format!("job {baseline} submitted")),
        "{stderr}"
    );
    assert!(stderr.contains("probe job"), "{stderr}");
    // The job's own script ran the jails; its results are where the orchestrator read them.
    let dir = run.run_dir().join("slurm/0.0");
    let script = std::fs::read_to_string(dir.join("job.sh")).unwrap();
    assert!(script.contains("--result-fd 3"), "{script}");
    assert!(script.contains("env -i"), "{script}");
    assert!(
        !dir.join("train").exists(),
        "the job removes its trainer's copy"
    );

    // Nothing of ours is left in the queue.
    assert_eq!(run.queued(), [], "jobs left behind");
    run.figures(&stderr);
}

/// Commits the trainer with the model's integer shapes written as expressions, which the offline
/// search leaves alone (it tunes plain numbers): a shape that does not fit the others (a head size
/// that does not divide the width) crashes within a second, and a job that ends before the
/// orchestrator is back cannot show its re-attachment. The search tunes the other constants.
fn shapes_fixed(sandbox: &Sandbox) {
    let main_rs = sandbox.repo.join("crates/train/src/main.rs");
    let source = std::fs::read_to_string(&main_rs).unwrap();
    let shapes = ["CPU_DEPTH", "CPU_DEVICE_BATCH", "ASPECT_RATIO", "HEAD_DIM"];
    let fixed: Vec<String> = source
        .lines()
        .map(|line| {
            let shape = shapes
                .iter()
                .find(|name| line.starts_with(&format!("const {name}: i64 = ")));
            match (shape, line.split_once(';')) {
                (Some(_), Some((head, tail))) => format!("{head} * 1;{tail}"),
                _ => line.to_string(),
            }
        })
        .collect();
    assert_eq!(
        fixed.iter().filter(|l| l.contains(" * 1;")).count(),
        shapes.len(),
        "the trainer's shapes moved"
    );
    std::fs::write(&main_rs, fixed.join("\n") + "\n").unwrap();
    sandbox.git(&["commit", "--quiet", "-am", "the model's shapes fixed"]);
}

#[test]
fn a_killed_orchestrator_finds_its_jobs_again() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let run = Run::new("slurm-resume");
    shapes_fixed(&run.sandbox);
    let args = ["--max-experiments", "3"];
    let resume = [&args[..], &["--resume"]].concat();
    // Long enough for a resume (start-up, the probe, the build) to find a job still running.
    let budget = "20";

    // Killed while the baseline's job runs; the job runs on and leaves its results.
    let mut child = run.spawn(budget, &args, "stderr-1.txt");
    let baseline = run.wait_running(0, 0, &mut child);
    child.0.kill().unwrap(); // SIGKILL
    child.0.wait().unwrap();
    let started = Instant::now();
    while run.queued().iter().any(|(id, ..)| *id == baseline) {
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "job {baseline} never ended"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(records(&run).len(), 0);

    // Resumed: the baseline's results are taken; killed again while experiment 1's job runs.
    let mut child = run.spawn(budget, &resume, "stderr-2.txt");
    let first = run.wait_running(1, 0, &mut child);
    child.0.kill().unwrap();
    child.0.wait().unwrap();
    let stderr = run.stderr("stderr-2.txt");
    assert!(
        stderr.contains(&format!(
            "job {baseline} finished while the orchestrator was away"
        )),
        "{stderr}"
    );
    assert_eq!(records(&run).len(), 1, "{stderr}");

    // Resumed at once: the job, still running, is re-attached through its handle and followed to
    // its end; killed again while experiment 2's job runs.
    let mut child = run.spawn(budget, &resume, "stderr-3.txt");
    let second = run.wait_running(2, 0, &mut child);
    child.0.kill().unwrap();
    child.0.wait().unwrap();
    let stderr = run.stderr("stderr-3.txt");
    assert!(
        stderr.contains(&format!("re-attached to job {first}\n")),
        "{stderr}"
    );
    assert_eq!(records(&run).len(), 2, "{stderr}");

    // As if the kill had come between sbatch and the handle's write: the job is found by its
    // name and directory.
    std::fs::remove_file(find_file(&run.run_dir(), "2.0.job").unwrap()).unwrap();
    let out = run.command(budget, &resume).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!("re-attached to job {second}, found by its name")),
        "{stderr}"
    );
    let seqs: Vec<u64> = records(&run)
        .iter()
        .map(|r| r["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, [0, 1, 2], "{stderr}");
    assert!(records(&run)[0]["val_bpb"].as_f64().is_some());
    // Each trial was submitted once, whatever the kills.
    let trials: Vec<(u64, String)> = run
        .submitted()
        .into_iter()
        .filter(|(_, what)| !what.starts_with("holdout"))
        .collect();
    assert_eq!(
        trials,
        [
            (baseline, "0.0".to_string()),
            (first, "1.0".to_string()),
            (second, "2.0".to_string())
        ]
    );
    assert_eq!(run.queued(), [], "jobs left behind");
    run.figures(&stderr);
}

#[test]
fn a_job_slurm_ends_at_its_time_limit_is_a_crash() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let run = Run::new("slurm-timeout");
    // A baseline of 2 s (a failed baseline stops the run rather than being recorded), then the
    // run resumed with a budget far past what the test waits for, so that experiment 1's job runs
    // until Slurm ends it: its own limit is 15 minutes, lowered below to 1.
    let out = run
        .command("2", &["--max-experiments", "1"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut child = run.spawn("600", &["--max-experiments", "2", "--resume"], "stderr.txt");
    let id = run.wait_running(1, 0, &mut child);
    // Slurm's unit is the minute, and it checks limits every 30 s: about 1-1.5 min from here.
    let out = Command::new("scontrol")
        .args(["update", &format!("JobId={id}"), "TimeLimit=1"])
        .env("SLURM_CONF", &run.conf)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let status = child.0.wait().unwrap();
    let stderr = run.stderr("stderr.txt");
    assert!(status.success(), "{stderr}");
    let records = records(&run);
    assert_eq!(records.len(), 2, "{stderr}");
    assert_eq!(records[1]["status"], "crash", "{}", records[1]);
    let reason = records[1]["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains(&format!(
            "Slurm: TIMEOUT at the job's time limit of 1 min (job {id})"
        )),
        "{}",
        records[1]
    );
    let log = std::fs::read_to_string(run.run_dir().join("logs/1.log")).unwrap();
    assert!(
        log.contains("DUE TO TIME LIMIT") && log.contains("orchestrator: Slurm: TIMEOUT"),
        "{log}"
    );
    assert_eq!(run.queued(), [], "jobs left behind");
}

#[test]
fn the_probe_stops_a_run_the_nodes_cannot_serve() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let run = Run::new("slurm-probe");
    // The run directory on a mount only the orchestrator sees (a private mount namespace with a
    // tmpfs over runs/): the job, started by slurmd, finds nothing there, as on a cluster whose
    // nodes do not share the submitting machine's disk.
    let runs = run.sandbox.repo.join("runs");
    std::fs::create_dir_all(&runs).unwrap();
    let orchestrator = run.command("2", &["--max-experiments", "1"]);
    let mut command = Command::new("unshare");
    command
        .args(["--mount", "--propagation", "private", "--", "sh", "-c"])
        .arg("mount -t tmpfs tmpfs \"$0\" && exec \"$@\"")
        .arg(&runs)
        .arg(orchestrator.get_program())
        .args(orchestrator.get_args())
        .current_dir(orchestrator.get_current_dir().unwrap());
    for (name, value) in orchestrator.get_envs() {
        match value {
            Some(value) => command.env(name, value),
            None => command.env_remove(name),
        };
    }
    let started = Instant::now();
    let out = command.output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("did not read back the token")
            && stderr.contains("must be on a filesystem shared with the nodes"),
        "{stderr}"
    );
    assert!(started.elapsed() < Duration::from_secs(300));
    eprintln!("message | {}", stderr.trim());
    assert_eq!(records(&run).len(), 0);
    assert!(
        !runs.join(run.tag).exists(),
        "the run directory was on the private mount only"
    );

    // A partition the cluster does not have: sbatch's refusal, and where to fix it.
    let run = Run::new("slurm-partition");
    run.sandbox
        .settings("[slurm]\npartition = \"no-such-partition\"\n");
    let out = run
        .command("2", &["--max-experiments", "1"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("sbatch refused the job autoresearch-slurm-partition-probe")
            && stderr.contains("invalid partition")
            && stderr.contains("[slurm] in autoresearch.toml"),
        "{stderr}"
    );
    eprintln!("message | {}", stderr.trim());
    assert_eq!(run.queued(), [], "jobs left behind");
}

#[test]
fn workers_keep_jobs_in_flight_and_find_them_again() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let conf = cluster();
    let standin = standin::Standin::new();
    let tag = "slurm-workers";
    let args = [
        "--executor",
        "slurm",
        "--agent",
        "offline",
        "--tag",
        tag,
        "--time-budget",
        "10",
        "--max-experiments",
        "4",
        "--workers",
        "2",
        "--noise-seeds",
        "1",
    ];
    let stderr = standin.root().join("stderr.txt");
    let mut child = standin
        .command(&args)
        .env("SLURM_CONF", &conf)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&stderr).unwrap())
        .spawn()
        .unwrap();
    // Two trial jobs running at once (the local cluster has 2 CPUs, a job takes 1), then kill -9.
    let started = Instant::now();
    let in_flight = loop {
        let running = running_trials(&conf, tag);
        if running.len() >= 2 {
            break running;
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!(
                "the run ended ({status}) before two jobs ran at once: {}",
                std::fs::read_to_string(&stderr).unwrap()
            );
        }
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "never two jobs at once"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    child.kill().unwrap();
    child.wait().unwrap();
    let out = standin
        .command(&[&args[..], &["--resume"]].concat())
        .env("SLURM_CONF", &conf)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    for id in &in_flight {
        // Found again: still running, or finished meanwhile (both of the cluster's CPUs are
        // theirs, so the resume's probe waits for one of them to end).
        assert!(
            stderr.contains(&format!("re-attached to job {id}\n"))
                || stderr.contains(&format!(
                    "job {id} finished while the orchestrator was away"
                )),
            "job {id}: {stderr}"
        );
    }
    let seqs: Vec<u64> = standin
        .records(tag)
        .iter()
        .map(|r| r["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs.len(), 4, "{stderr}");
    assert_eq!(
        seqs.iter().collect::<std::collections::BTreeSet<_>>().len(),
        4,
        "{seqs:?}"
    );
    // No trial was submitted twice.
    let journal = std::fs::read_to_string(standin.run_dir(tag).join("slurm/jobs.log")).unwrap();
    let mut runs: Vec<&str> = journal
        .lines()
        .filter_map(|l| l.split_whitespace().nth(1))
        .filter(|run| !run.starts_with("holdout"))
        .collect();
    let submitted = runs.len();
    runs.sort();
    runs.dedup();
    assert_eq!(runs.len(), submitted, "{journal}");
    assert!(
        squeue(&conf, &["-o", "%j"])
            .lines()
            .all(|n| !n.contains(tag)),
        "jobs left behind"
    );
}

/// Puts the partition's `MaxTime` back when dropped, whatever the test did.
struct MaxTime<'c>(&'c str);

impl MaxTime<'_> {
    fn set<'c>(conf: &'c str, limit: &str) -> MaxTime<'c> {
        let out = Command::new("scontrol")
            .args(["update", "PartitionName=debug", &format!("MaxTime={limit}")])
            .env("SLURM_CONF", conf)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        MaxTime(conf)
    }
}

impl Drop for MaxTime<'_> {
    fn drop(&mut self) {
        Command::new("scontrol")
            .args(["update", "PartitionName=debug", "MaxTime=UNLIMITED"])
            .env("SLURM_CONF", self.0)
            .status()
            .ok();
    }
}

#[test]
fn a_trial_over_the_partitions_time_limit_stops_the_run() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let conf = cluster();
    let standin = standin::Standin::new();
    let tag = "slurm-maxtime";
    // The local cluster does not refuse such jobs at submission (no EnforcePartLimits): they
    // would wait for ever with the reason PartitionTimeLimit. The probe (1 minute) passes.
    let _limit = MaxTime::set(&conf, "1");
    let out = standin
        .command(&[
            "--executor",
            "slurm",
            "--agent",
            "offline",
            "--tag",
            tag,
            "--time-budget",
            "2",
            "--max-experiments",
            "1",
            "--noise-seeds",
            "1",
        ])
        .env("SLURM_CONF", &conf)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("PartitionTimeLimit") && stderr.contains("lower the budget or grace"),
        "{stderr}"
    );
    eprintln!(
        "message | {}",
        stderr
            .lines()
            .rev()
            .find(|l| l.contains("PartitionTimeLimit"))
            .unwrap()
    );
    assert!(
        squeue(&conf, &["-o", "%j"])
            .lines()
            .all(|n| !n.contains(tag)),
        "jobs left behind"
    );
}
