//! The sandbox for everything that runs the agent's code: the build of the trainer (cargo, and
//! through it rustc on the agent's source), the trainer, and the protected evaluator (which runs
//! the trainer's TorchScript file). Each runs in a [`Jail`]: through bubblewrap, its own mount,
//! PID, network, IPC and UTS namespaces, no capabilities, a filesystem that holds only what that
//! process needs (system and toolchain paths read-only, its inputs, and its few writable paths),
//! and every process it starts killed with it; the kernel's settings read-only, no core dumps,
//! as the host's `nobody` where the orchestrator is root, and within its [`limits`] (memory,
//! processes, tmpfs sizes, the export's size, a build's time). Without bubblewrap nothing is
//! confined but the environment and the limits; that is allowed only when `sandbox = "off"` is
//! set, and said at start and in the run's first record.
//!
//! The environment of every such process is built from an allow-list ([`env`]), sandbox or not:
//! no API key, token or proxy credential reaches the agent's code.

pub mod env;
mod jail;
mod limits;

pub use jail::Jail;
pub use limits::{Group, Resources, gib, machine_memory};

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::Result;
use serde::{Deserialize, Serialize};

/// `sandbox` in autoresearch.toml.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// A run starts only where the sandbox works (the default).
    #[default]
    Required,
    /// The agent's code runs unconfined (only its environment is filtered), knowingly.
    Off,
}

/// What this machine offers, found once at start.
#[derive(Debug, Clone)]
pub struct Sandbox {
    /// bubblewrap, when it works here; None when the sandbox is off.
    bwrap: Option<PathBuf>,
    /// The directory holding libtorch (site-packages for a PyPI torch, whose CUDA libraries are
    /// its siblings), readable by every jail.
    libtorch_root: PathBuf,
    /// `/dev/nvidia*`, passed to the trainer and the evaluator so that the GPU stays usable
    /// (each trainer only its own GPU's, see [`Jail::gpus`]).
    gpu_devices: Vec<PathBuf>,
    /// The uid the jails run as where the orchestrator is root and the machine allows it
    /// (`nobody`); None: the orchestrator's own.
    user: Option<u32>,
    /// What each jail may consume.
    resources: Resources,
    cgroups: limits::Cgroups,
    /// In words, for the start-up block and the run's first record.
    support: String,
}

/// What the jails mount of libtorch: the `site-packages` it lies in (its libraries load the
/// `nvidia-*` wheels' beside it), else its own directory.
fn libtorch_root(libtorch: &Path) -> PathBuf {
    let libtorch = libtorch.canonicalize().unwrap_or(libtorch.to_path_buf());
    match libtorch.parent() {
        Some(parent)
            if parent
                .file_name()
                .is_some_and(|n| n == "site-packages" || n == "dist-packages") =>
        {
            parent.to_path_buf()
        }
        _ => libtorch,
    }
}

/// This machine's `/dev/nvidia*` nodes.
fn gpu_devices() -> Vec<PathBuf> {
    std::fs::read_dir("/dev")
        .map(|dir| {
            dir.filter_map(|e| e.ok())
                .filter(|e| e.file_name().to_string_lossy().starts_with("nvidia"))
                .map(|e| e.path())
                .collect()
        })
        .unwrap_or_default()
}

/// The host's `nobody` (and `nogroup`), whom the jails run as when the orchestrator is root.
const NOBODY: u32 = 65534;

impl Sandbox {
    /// Finds bubblewrap and checks that it can set up a jail here, as `nobody` where the
    /// orchestrator is root; `libtorch` is the libtorch the builds link (the binaries load it at
    /// run time through their rpath), `readable` what the jails read besides (the data, the run
    /// directory), which `nobody` must be able to reach.
    pub fn detect(
        mode: Mode,
        libtorch: &Path,
        resources: Resources,
        readable: &[&Path],
    ) -> Result<Sandbox> {
        let landlock = match landlock_abi() {
            Some(abi) => format!("Landlock ABI {abi} present but not used"),
            None => "no Landlock".into(),
        };
        let cgroups = limits::Cgroups::detect();
        let limits = describe_limits(&resources, &cgroups);
        let mut sandbox = Sandbox {
            bwrap: None,
            libtorch_root: libtorch_root(libtorch),
            gpu_devices: gpu_devices(),
            user: None,
            resources,
            cgroups,
            support: String::new(),
        };
        if mode == Mode::Off {
            sandbox.support = format!(
                "off (sandbox = \"off\" in autoresearch.toml): the build, the trainer and the \
                 evaluator run unconfined, with an allow-listed environment only; {limits}; \
                 {landlock}"
            );
            return Ok(sandbox);
        }
        let (bwrap, user) = sandbox.jail_user(readable, &landlock)?;
        let version = Command::new(&bwrap)
            .arg("--version")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default();
        sandbox.support = format!(
            "{version} at {}: own mount, pid, network (trainer, evaluator), ipc and uts \
             namespaces, no capabilities, killed with the orchestrator; the trainer, the rule \
             tests and the evaluator run {user} (the build as the orchestrator's user); files: \
             system and toolchain read-only, only each process's inputs and outputs; /proc/sys \
             and /sys read-only, no core dumps; each trainer gets its own GPU's device nodes \
             ({} here); {limits}; {landlock}",
            bwrap.display(),
            sandbox.gpu_devices.len()
        );
        sandbox.bwrap = Some(bwrap);
        Ok(sandbox)
    }

    /// Bubblewrap, once a jail works here, and whom the jails run as, in words: the host's
    /// `nobody` where the orchestrator is root and that works, else the orchestrator's user.
    fn jail_user(&mut self, readable: &[&Path], landlock: &str) -> Result<(PathBuf, String)> {
        // SAFETY: geteuid has no preconditions.
        let root = unsafe { libc::geteuid() } == 0;
        let as_nobody = if root {
            self.user = Some(NOBODY);
            let probed = probe(self, readable);
            self.user = None;
            Some(probed)
        } else {
            None
        };
        Ok(match as_nobody {
            Some(Ok(bwrap)) => {
                self.user = Some(NOBODY);
                (
                    bwrap,
                    "as the host's nobody (uid 65534, an unprivileged user namespace)".into(),
                )
            }
            Some(Err(why)) => match probe(self, readable) {
                Ok(bwrap) => (
                    bwrap,
                    format!(
                        "as root, without capabilities, as nobody cannot run it here ({why}): \
                         kernel settings are read-only, but a root uid reaches files a user's \
                         would not"
                    ),
                ),
                Err(why) => return Err(no_sandbox(&why, landlock)),
            },
            None => match probe(self, readable) {
                Ok(bwrap) => (bwrap, "as the orchestrator's own unprivileged user".into()),
                Err(why) => return Err(no_sandbox(&why, landlock)),
            },
        })
    }

    /// What the sandbox does here, in words.
    pub fn support(&self) -> &str {
        &self.support
    }

    pub fn confined(&self) -> bool {
        self.bwrap.is_some()
    }

    pub fn resources(&self) -> &Resources {
        &self.resources
    }

    /// A control group for one jail, holding it to [`Sandbox::resources`] ([`Jail::join`]);
    /// None where this machine has no cgroups the orchestrator may use.
    pub fn group(&self) -> Result<Option<Group>> {
        self.cgroups.group(&self.resources)
    }

    /// This sandbox for jails that run on a cluster's nodes rather than here (the Slurm
    /// executor builds their command lines here and writes them into a job's script). The GPU
    /// device nodes are the node's business: a login node may have none, a node several, so
    /// every usual name is passed where the node has it (bubblewrap's `--dev-bind-try`), and
    /// the job's own GPU is the one Slurm's cgroup lets it open (`ConstrainDevices`). A job runs
    /// as the person who submitted it, not root, and within the memory Slurm gives it: no user
    /// to drop to and no cgroups of the orchestrator's.
    pub fn for_nodes(&self) -> Sandbox {
        let mut devices: Vec<PathBuf> = jail::GPU_CONTROL
            .iter()
            .map(|d| Path::new("/dev").join(d))
            .chain((0..16).map(|n| PathBuf::from(format!("/dev/nvidia{n}"))))
            .collect();
        devices.extend(self.gpu_devices.iter().cloned());
        devices.sort();
        devices.dedup();
        Sandbox {
            gpu_devices: devices,
            user: None,
            cgroups: limits::Cgroups::None,
            ..self.clone()
        }
    }

    /// A new jail: system and toolchain paths and libtorch readable, a private `/tmp`, no
    /// network unless [`Jail::network`] is called.
    pub fn jail(&self) -> Jail {
        Jail::new(self)
    }
}

/// Why a run cannot start without `sandbox = "off"`, and what to do.
fn no_sandbox(why: &str, landlock: &str) -> anyhow::Error {
    anyhow::anyhow!(
        "no sandbox for the agent's code on this machine: {why}. Install bubblewrap \
         (scripts/setup.sh does, as root: apt-get install bubblewrap; elsewhere ask your \
         administrator, or allow unprivileged user namespaces), or set sandbox = \"off\" \
         in autoresearch.toml to run the agent's code unconfined ({landlock})"
    )
}

/// The limits in force, in words.
fn describe_limits(resources: &Resources, cgroups: &limits::Cgroups) -> String {
    let memory = if cgroups.limits_memory() {
        format!("memory {} per jail", gib(resources.memory_bytes))
    } else {
        "memory unlimited".into()
    };
    let processes = if cgroups.limits_processes() {
        format!("{} processes per jail", resources.processes)
    } else {
        format!(
            "{} processes per user (RLIMIT_NPROC, only where the jails run as nobody)",
            resources.processes
        )
    };
    format!(
        "limits: {} ({memory}, {processes}); the trainer's export {} (RLIMIT_FSIZE and its \
         directory checked every second); /tmp and /dev/shm tmpfs {} each; a build {} s",
        cgroups.describe(),
        gib(resources.export_bytes),
        gib(resources.tmp_bytes),
        resources.build_seconds
    )
}

/// bubblewrap's path when a minimal jail reading `readable` runs `true`, else why not.
fn probe(sandbox: &Sandbox, readable: &[&Path]) -> Result<PathBuf, String> {
    let bwrap = ["/usr/bin/bwrap", "/bin/bwrap", "/usr/local/bin/bwrap"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
        .ok_or("bubblewrap (bwrap) is not installed")?;
    let mut jail = Jail::with_bwrap(sandbox, &bwrap);
    for path in readable {
        jail.read(path);
    }
    let out = jail
        .std_command(Path::new("/usr/bin/true"), &[])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{} does not start: {e}", bwrap.display()))?;
    if !out.status.success() {
        return Err(format!(
            "{} cannot set up a jail here ({})",
            bwrap.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(bwrap)
}

/// The Landlock ABI version the kernel offers, reported (not used: the mount namespace already
/// decides what each process sees).
fn landlock_abi() -> Option<i64> {
    const LANDLOCK_CREATE_RULESET_VERSION: libc::c_uint = 1;
    // SAFETY: with a null attribute and size 0 and the VERSION flag, the call only returns a
    // number; it creates nothing.
    let abi = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<libc::c_void>(),
            0usize,
            LANDLOCK_CREATE_RULESET_VERSION,
        )
    };
    (abi > 0).then_some(abi)
}
