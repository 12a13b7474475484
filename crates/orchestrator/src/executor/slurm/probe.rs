//! The probe job at start: can a job read and write the run directory, and run a jail there?

use std::fmt::Write as _;
use std::io::Read;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use super::Slurm;
use super::cli::{CancelOnDrop, State, scancel};
use super::files::{field, number, read_fields, unix_now};
use super::follow::POLL;
use super::script::render;

/// How long the probe job may take to come back before the run stops.
pub(super) const PROBE_WAIT: Duration = Duration::from_secs(120);

impl Slurm {
    /// The probe job `id`'s reply (`reply`, its fields), once it is there; an error that says
    /// what to do when the job ended without one, or waited or ran too long.
    async fn probe_reply(&self, id: u64, reply: &Path) -> Result<String> {
        let waited = Instant::now();
        let mut said = String::new();
        let mut last: State;
        loop {
            if let Some(fields) = read_fields(reply) {
                return Ok(fields);
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
                    if let Some(fields) = read_fields(reply) {
                        return Ok(fields);
                    }
                    let why = self.ended(id, &ended).await;
                    bail!(not_shared(
                        &self.run_dir.slurm_dir(),
                        id,
                        &format!("it ended ({why})")
                    ));
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
                        &self.run_dir.slurm_dir(),
                        id,
                        &format!(
                            "it ran for over {} s without writing back",
                            PROBE_WAIT.as_secs()
                        )
                    )),
                }
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// The probe job's script: it reads back the token in `dir` and runs a jail like a trial's,
    /// with what the jails read from the shared filesystem.
    fn probe_script(&self, dir: &Path) -> Result<String> {
        let mut jail = self.trainers.sandbox.jail();
        for path in self.evaluator.paths() {
            jail.read(path);
        }
        let jail = render(&jail.command(Path::new("/usr/bin/true"), &[]), None)?;
        let mut script = self.header(
            dir,
            "the probe: can a job read and write the run directory, and run a jail?",
        )?;
        writeln!(
            script,
            "{{\n  echo \"start=$(now)\"\n  echo \"node=$(hostname)\"\n  echo \"token=$(cat token)\"\n  \
             if out=$({jail} 2>&1); then echo jail=ok; else echo \"jail=$(printf %s \"$out\" | tr '\\n' ' ' | head -c 2000)\"; fi\n\
             }} > reply.partial && mv -f reply.partial reply"
        )?;
        Ok(script)
    }

    /// The probe job: the run directory must be shared with the nodes, and the jails must work
    /// there. Stops the run with what to do otherwise.
    pub(super) async fn probe(&self) -> Result<()> {
        let dir = self.run_dir.slurm_probe();
        std::fs::remove_dir_all(&dir).ok();
        std::fs::create_dir_all(&dir)?;
        let token = random_token()?;
        std::fs::write(dir.join("token"), &token)?;
        let script = self.probe_script(&dir)?;
        let reply = dir.join("reply");
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
        let fields = self.probe_reply(id, &reply).await?;
        let node = field(&fields, "node").unwrap_or("?");
        if field(&fields, "token") != Some(token.as_str()) {
            bail!(not_shared(
                &self.run_dir.slurm_dir(),
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
}

pub(super) fn not_shared(dir: &Path, id: u64, what: &str) -> String {
    format!(
        "the probe job {id} did not read back the token the orchestrator wrote for it: {what}. \
         The run directory {} must be on a filesystem shared with the nodes, at the same path \
         (NFS, Lustre, GPFS, ...), as must the repository and the data; see docs/slurm.md. The \
         probe's files are in {}",
        dir.parent().unwrap_or(dir).display(),
        dir.join("probe").display()
    )
}

pub(super) fn random_token() -> Result<String> {
    let mut bytes = [0u8; 16];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .context("reading /dev/urandom")?;
    Ok(hex::encode(bytes))
}
