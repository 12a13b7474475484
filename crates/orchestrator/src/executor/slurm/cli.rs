//! Slurm's commands (`sbatch`, `squeue`, `scontrol`, `sacct`, `scancel`) and its words for where
//! a job is.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, bail};

use super::Slurm;
use crate::executor::Job;

/// Added to a job's limits for its own start and end before rounding up to whole minutes.
pub(super) const TIME_MARGIN: Duration = Duration::from_secs(30);
/// Why a job waits that no waiting resolves: a limit of the partition, account or QOS it was
/// submitted over (where the cluster does not refuse such jobs at submission).
pub(super) const HOPELESS: [&str; 9] = [
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
pub(super) const CLIENTS: [&str; 4] = ["sbatch", "squeue", "scontrol", "scancel"];

/// Where a job is, as far as following it goes.
#[derive(Debug)]
pub(super) enum State {
    /// Waiting to start, and why (Slurm's reason: `Resources`, `Priority`, ...).
    Queued(String),
    /// Running, or finishing.
    Active,
    /// Over, in this state.
    Ended(String),
    /// Slurm no longer knows it.
    Unknown,
}

impl Slurm {
    /// Submits `script` (written to `dir/job.sh`) as `name`, allowed `limit` plus a margin, with
    /// the trials' GPU when `gpu`; its output goes to `output`. The job's id.
    pub(super) async fn sbatch(
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

    /// The options a job is submitted with, `--gres` only for one that uses the GPU.
    pub(super) fn options(&self, gpu: bool) -> Vec<String> {
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
    pub(super) fn shown_options(&self, gpu: bool) -> String {
        let options = self.options(gpu);
        let shown: Vec<&str> = options
            .iter()
            .map(String::as_str)
            .filter(|o| *o != "--parsable")
            .collect();
        shown.join(" ")
    }

    pub(super) fn job_name(&self, job: &Job) -> String {
        format!("autoresearch-{}-{}.{}", self.tag, job.seq, job.index)
    }

    /// Where job `id` is: one `squeue` for any job Slurm still knows, finished ones included.
    pub(super) async fn state(&self, id: u64) -> Result<State> {
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
    pub(super) async fn final_info(&self, id: u64) -> Option<String> {
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

    pub(super) async fn name_of(&self, id: u64) -> Option<String> {
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
    pub(super) async fn queued_by_name(&self, name: &str, dir: &Path) -> Result<Option<u64>> {
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
    pub(super) fn journal(&self, id: u64, run: &str) {
        use std::io::Write;
        let line = format!("{id} {run} {}\n", chrono::Local::now().to_rfc3339());
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.run_dir.slurm_journal())
            .and_then(|mut f| f.write_all(line.as_bytes()))
            .ok();
    }
}

/// Cancels a job when dropped before it is disarmed (its future dropped).
pub(super) struct CancelOnDrop(pub(super) Option<u64>);

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

pub(super) async fn client(program: &str, args: &[&str]) -> Result<std::process::Output> {
    tokio::process::Command::new(program)
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .with_context(|| format!("running {program}"))
}

pub(super) async fn scancel(id: u64) -> Result<()> {
    let out = client("scancel", &[&id.to_string()]).await?;
    if !out.status.success() {
        bail!(
            "scancel {id}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// A path as an sbatch filename pattern: `%` is Slurm's, so doubled (unless a backslash in the
/// path turns the patterns off anyway).
pub(super) fn pattern(path: &Path) -> String {
    let path = path.display().to_string();
    if path.contains('\\') {
        path
    } else {
        path.replace('%', "%%")
    }
}

/// Slurm's `TimeLimit` (`[days-]hours:minutes:seconds`, or minutes) as `N min`.
pub(super) fn minutes_text(limit: &str) -> String {
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

pub(super) fn on_path(program: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|path| {
        std::env::split_paths(&path).any(|dir| {
            use std::os::unix::fs::PermissionsExt;
            std::fs::metadata(dir.join(program))
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
    })
}
