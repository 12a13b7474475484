//! What one jail may consume, and the control groups that hold it to that: each jail that runs
//! the agent's code (its build, the trainer, the rule tests, the evaluator running the trainer's
//! model) gets a group of its own, made before it starts and removed after it, with a memory
//! limit (swap included) and a process limit. The kernel enforces both: a memory hog is killed by
//! the group's OOM killer, a fork bomb's forks fail, and the rest of the machine does not notice.
//! The group then says which limit was hit. GPU memory is libtorch's own to hold, through its
//! caching allocator's settings in the jail's environment ([`Resources::gpu_allocator_env`]).
//!
//! cgroup v2 is used where the orchestrator's own group lets it make children with the memory and
//! pids controllers, else cgroup v1's memory and pids hierarchies where they are mounted and
//! writable (as root); on neither, only the rlimits the jail sets itself hold.

use std::ffi::CString;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{Context, Result};

const GIB: f64 = (1u64 << 30) as f64;

/// What each jail may consume; `[limits]` in autoresearch.toml.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Resources {
    /// Memory of all its processes, swap and its tmpfs files included.
    pub memory_bytes: u64,
    /// Processes and threads at once.
    pub processes: u64,
    /// The trainer's export directory, all files together.
    pub export_bytes: u64,
    /// Each of the jail's tmpfs mounts (`/tmp`, `/dev/shm`).
    pub tmp_bytes: u64,
    /// Wall-clock seconds of one build (cargo and the compilers it starts).
    pub build_seconds: u64,
    /// The share of its GPU's memory a trainer's or the evaluator's libtorch may allocate (the
    /// CUDA caching allocator's `per_process_memory_fraction`); None: the whole device.
    pub gpu_memory_share: Option<f64>,
}

impl Resources {
    /// The environment that holds libtorch's CUDA caching allocator to `gpu_memory_share`: read
    /// by the allocator when it starts, before the program's first allocation on the GPU.
    pub fn gpu_allocator_env(&self) -> Option<(&'static str, String)> {
        self.gpu_memory_share.map(|share| {
            (
                GPU_ALLOCATOR_ENV,
                format!("per_process_memory_fraction:{share}"),
            )
        })
    }

    /// The GPU memory limit in words, for crash reasons and the sandbox line.
    pub fn describe_gpu_memory(&self) -> String {
        match self.gpu_memory_share {
            Some(share) => format!("{share} of its GPU's memory (limits.gpu_memory_share)"),
            None => "the whole GPU's memory".into(),
        }
    }
}

/// libtorch's CUDA caching allocator's settings.
pub const GPU_ALLOCATOR_ENV: &str = "PYTORCH_CUDA_ALLOC_CONF";

/// `bytes` in GiB, one decimal, as the limits are named in crash reasons.
pub fn gib(bytes: u64) -> String {
    format!("{:.1} GiB", bytes as f64 / GIB)
}

/// The memory of this machine, from `/proc/meminfo`.
pub fn machine_memory() -> Option<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    let kib: u64 = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kib * 1024)
}

/// How this machine lets jails be grouped, found once at start.
#[derive(Debug, Clone)]
pub enum Cgroups {
    /// Children of the orchestrator's own cgroup v2 group, which delegates memory and pids.
    V2 {
        parent: PathBuf,
    },
    /// Children of the orchestrator's groups in cgroup v1's memory and pids hierarchies.
    V1 {
        memory: Option<PathBuf>,
        pids: Option<PathBuf>,
    },
    None,
}

/// Names every group this process makes apart.
static NEXT_GROUP: AtomicU64 = AtomicU64::new(0);

impl Cgroups {
    pub fn detect() -> Cgroups {
        let own = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
        let v2 = own
            .lines()
            .find_map(|l| l.strip_prefix("0::"))
            .map(|path| Path::new("/sys/fs/cgroup").join(path.trim_start_matches('/')));
        if let Some(parent) = v2
            && Path::new("/sys/fs/cgroup/cgroup.controllers").is_file()
            && creatable(&parent, "memory.max")
            && creatable(&parent, "pids.max")
        {
            return Cgroups::V2 { parent };
        }
        let v1 = |controller: &str| {
            own.lines()
                .find_map(|l| {
                    let (_, rest) = l.split_once(':')?;
                    let (names, path) = rest.split_once(':')?;
                    names.split(',').any(|n| n == controller).then_some(path)
                })
                .map(|path| {
                    Path::new("/sys/fs/cgroup")
                        .join(controller)
                        .join(path.trim_start_matches('/'))
                })
                .filter(|dir| creatable(dir, "cgroup.procs"))
        };
        match (v1("memory"), v1("pids")) {
            (None, None) => Cgroups::None,
            (memory, pids) => Cgroups::V1 { memory, pids },
        }
    }

    /// In words, for the sandbox line of the run's first record.
    pub fn describe(&self) -> String {
        match self {
            Cgroups::V2 { .. } => "a cgroup v2 group per jail (memory.max, pids.max)".into(),
            Cgroups::V1 { memory, pids } => format!(
                "a cgroup v1 group per jail ({})",
                [
                    memory.as_ref().map(|_| "memory.limit_in_bytes"),
                    pids.as_ref().map(|_| "pids.max"),
                ]
                .into_iter()
                .flatten()
                .collect::<Vec<_>>()
                .join(", ")
            ),
            Cgroups::None => "no cgroups (none writable here)".into(),
        }
    }

    pub fn limits_memory(&self) -> bool {
        matches!(
            self,
            Cgroups::V2 { .. }
                | Cgroups::V1 {
                    memory: Some(_),
                    ..
                }
        )
    }

    pub fn limits_processes(&self) -> bool {
        matches!(self, Cgroups::V2 { .. } | Cgroups::V1 { pids: Some(_), .. })
    }

    /// A new group for one jail, holding it to `resources`; None where there are no cgroups.
    pub fn group(&self, resources: &Resources) -> Result<Option<Group>> {
        let name = format!(
            "autoresearch-{}-{}",
            std::process::id(),
            NEXT_GROUP.fetch_add(1, Ordering::Relaxed)
        );
        let memory = resources.memory_bytes.to_string();
        let processes = resources.processes.to_string();
        let mut group = Group {
            dirs: Vec::new(),
            memory: None,
            processes: None,
            events: Vec::new(),
        };
        match self {
            Cgroups::None => return Ok(None),
            Cgroups::V2 { parent } => {
                let dir = group.make(parent, &name)?;
                write(&dir, "memory.max", &memory)?;
                write_if_present(&dir, "memory.swap.max", "0")?;
                write(&dir, "pids.max", &processes)?;
                group.memory = Some(resources.memory_bytes);
                group.processes = Some(resources.processes);
                group.events = vec![
                    (dir.join("memory.events"), "oom_kill", Hit::Memory),
                    (dir.join("pids.events"), "max", Hit::Processes),
                ];
            }
            Cgroups::V1 { memory: mem, pids } => {
                if let Some(parent) = mem {
                    let dir = group.make(parent, &name)?;
                    write(&dir, "memory.limit_in_bytes", &memory)?;
                    // Swap counts as memory: the limit is on both together where the kernel
                    // accounts swap (memsw must not be below the plain limit, so it comes second).
                    write_if_present(&dir, "memory.memsw.limit_in_bytes", &memory)?;
                    group.memory = Some(resources.memory_bytes);
                    group
                        .events
                        .push((dir.join("memory.oom_control"), "oom_kill", Hit::Memory));
                }
                if let Some(parent) = pids {
                    let dir = group.make(parent, &name)?;
                    write(&dir, "pids.max", &processes)?;
                    group.processes = Some(resources.processes);
                    group
                        .events
                        .push((dir.join("pids.events"), "max", Hit::Processes));
                }
            }
        }
        Ok(Some(group))
    }
}

/// Whether a child group of `parent` can be made here and has `file` (its controller).
fn creatable(parent: &Path, file: &str) -> bool {
    let probe = parent.join(format!("autoresearch-probe-{}", std::process::id()));
    let works = std::fs::create_dir(&probe).is_ok() && probe.join(file).exists();
    std::fs::remove_dir(&probe).ok();
    works
}

fn write(dir: &Path, file: &str, value: &str) -> Result<()> {
    let path = dir.join(file);
    std::fs::write(&path, value).with_context(|| format!("writing {value} to {}", path.display()))
}

fn write_if_present(dir: &Path, file: &str, value: &str) -> Result<()> {
    if dir.join(file).exists() {
        write(dir, file, value)?;
    }
    Ok(())
}

#[derive(Debug, Clone, Copy)]
enum Hit {
    Memory,
    Processes,
}

/// One jail's control groups (one per v1 hierarchy, or one v2 group); removed on drop, after
/// whatever still runs in them is killed.
pub struct Group {
    dirs: Vec<PathBuf>,
    memory: Option<u64>,
    processes: Option<u64>,
    /// Counter files and the counter in them that tells a limit was hit.
    events: Vec<(PathBuf, &'static str, Hit)>,
}

impl Group {
    fn make(&mut self, parent: &Path, name: &str) -> Result<PathBuf> {
        let dir = parent.join(name);
        std::fs::create_dir(&dir).with_context(|| format!("creating {}", dir.display()))?;
        self.dirs.push(dir.clone());
        Ok(dir)
    }

    /// The `cgroup.procs` files a child writes `0` to before it execs, to join the group.
    pub fn procs_files(&self) -> Vec<CString> {
        self.dirs
            .iter()
            .map(|d| CString::new(d.join("cgroup.procs").into_os_string().into_encoded_bytes()))
            .collect::<Result<_, _>>()
            .expect("cgroup paths hold no NUL")
    }

    /// Which limit the jail ran into, as the crash's reason; None while it keeps to them.
    pub fn exceeded(&self) -> Option<String> {
        self.events.iter().find_map(|(file, key, hit)| {
            let text = std::fs::read_to_string(file).ok()?;
            let count: u64 = text
                .lines()
                .find_map(|l| l.strip_prefix(key)?.trim().parse().ok())?;
            (count > 0).then(|| match hit {
                Hit::Memory => format!("out of memory (limit {})", gib(self.memory.unwrap_or(0))),
                Hit::Processes => format!(
                    "process limit reached (limit {} processes)",
                    self.processes.unwrap_or(0)
                ),
            })
        })
    }

    /// In words, for logs: "memory 6.0 GiB, 4096 processes".
    pub fn describe(&self) -> String {
        [
            self.memory.map(|m| format!("memory {}", gib(m))),
            self.processes.map(|p| format!("{p} processes")),
        ]
        .into_iter()
        .flatten()
        .collect::<Vec<_>>()
        .join(", ")
    }
}

/// Moves the calling process into the groups whose `cgroup.procs` files are `procs`: called in
/// a child between fork and exec, so it only opens, writes and closes.
pub fn join(procs: &[CString]) -> std::io::Result<()> {
    for file in procs {
        // SAFETY: a NUL-terminated path and a one-byte buffer, both alive for the calls.
        unsafe {
            let fd = libc::open(file.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
            if fd < 0 {
                return Err(std::io::Error::last_os_error());
            }
            let written = libc::write(fd, b"0".as_ptr().cast(), 1);
            libc::close(fd);
            if written != 1 {
                return Err(std::io::Error::last_os_error());
            }
        }
    }
    Ok(())
}

impl Drop for Group {
    fn drop(&mut self) {
        // The jail's PID namespace ends its processes with it, but a group is not removable
        // until the kernel has reaped them all: kill what is left and wait a moment for it.
        for _ in 0..100 {
            for dir in &self.dirs {
                for pid in std::fs::read_to_string(dir.join("cgroup.procs"))
                    .unwrap_or_default()
                    .lines()
                    .filter_map(|p| p.parse::<i32>().ok())
                {
                    // SAFETY: kill(2) on a pid listed in this jail's own group.
                    unsafe {
                        libc::kill(pid, libc::SIGKILL);
                    }
                }
            }
            self.dirs.retain(|d| std::fs::remove_dir(d).is_err());
            if self.dirs.is_empty() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resources(memory_bytes: u64, processes: u64) -> Resources {
        Resources {
            memory_bytes,
            processes,
            export_bytes: 1 << 30,
            tmp_bytes: 1 << 30,
            build_seconds: 60,
            gpu_memory_share: None,
        }
    }

    /// Runs `script` in a new group with `resources`; what the group says after, and whether
    /// its directories are gone once dropped.
    fn run_in_group(resources: Resources, script: &str) -> Option<(Option<String>, bool)> {
        use std::os::unix::process::CommandExt;
        let cgroups = Cgroups::detect();
        let group = cgroups.group(&resources).unwrap()?;
        let procs = group.procs_files();
        let mut command = std::process::Command::new("/bin/sh");
        command.args(["-c", script]);
        // SAFETY: join only opens, writes and closes.
        unsafe {
            command.pre_exec(move || join(&procs));
        }
        command.output().unwrap();
        let verdict = group.exceeded();
        let dirs = group.dirs.clone();
        drop(group);
        Some((verdict, dirs.iter().all(|d| !d.exists())))
    }

    #[test]
    fn a_memory_hog_is_killed_and_named() {
        // 64 MiB of tmpfs-free anonymous memory: a shell string doubled until it is too big.
        let Some((verdict, removed)) = run_in_group(
            resources(64 << 20, 1000),
            "x=0123456789abcdef; while :; do x=$x$x; done",
        ) else {
            eprintln!("no cgroups here: nothing to test");
            return;
        };
        assert_eq!(verdict.as_deref(), Some("out of memory (limit 0.1 GiB)"));
        assert!(removed);
    }

    #[test]
    fn a_fork_bomb_stops_at_the_process_limit() {
        let Some((verdict, removed)) = run_in_group(
            resources(1 << 30, 20),
            "for i in $(seq 40); do sleep 2 & done; wait",
        ) else {
            eprintln!("no cgroups here: nothing to test");
            return;
        };
        assert_eq!(
            verdict.as_deref(),
            Some("process limit reached (limit 20 processes)")
        );
        assert!(removed);
    }

    #[test]
    fn within_its_limits_a_group_says_nothing() {
        let Some((verdict, removed)) = run_in_group(resources(1 << 30, 100), "sleep 0.1 & wait")
        else {
            eprintln!("no cgroups here: nothing to test");
            return;
        };
        assert_eq!(verdict, None);
        assert!(removed);
    }
}
