//! One jail: the files a process may see, what it may write, whether it has a network, and its
//! environment; turned into a command that runs the program inside it. With the sandbox off the
//! same calls return the host's paths and build a plain command with the filtered environment.

use std::ffi::{CString, OsString};
use std::path::{Path, PathBuf};

use super::Sandbox;
use super::limits::Group;

/// System paths every jail reads: programs, libraries (a link where the host has one).
const SYSTEM: &[&str] = &[
    "/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32",
];
/// Of `/etc`, only what the dynamic loader, the C toolchain (Debian's `cc` is an alternative)
/// and user lookups need: not `shadow`, not credentials another program keeps there.
const ETC: &[&str] = &[
    "/etc/ld.so.cache",
    "/etc/ld.so.conf",
    "/etc/ld.so.conf.d",
    "/etc/alternatives",
    "/etc/passwd",
    "/etc/group",
    "/etc/nsswitch.conf",
    "/etc/localtime",
];

/// Kernel settings under `/proc` a process with root's uid could write even without
/// capabilities (`kernel.core_pattern` runs a program of its choice as the host's root, and
/// `vm.panic_on_oom` or the sysrq trigger take the machine down): read-only in every jail.
const KERNEL_KNOBS: &[&str] = &["/proc/sys", "/proc/sysrq-trigger", "/proc/irq", "/proc/bus"];
/// The GPU driver's device nodes every GPU's user needs, beside its own `/dev/nvidia<N>`.
pub(super) const GPU_CONTROL: &[&str] = &[
    "nvidiactl",
    "nvidia-uvm",
    "nvidia-uvm-tools",
    "nvidia-modeset",
    "nvidia-caps",
];

pub struct Jail {
    /// bubblewrap's arguments so far; None with the sandbox off.
    bwrap: Option<(PathBuf, Vec<OsString>)>,
    network: bool,
    env: Vec<(String, String)>,
    chdir: Option<PathBuf>,
    /// The GPU device nodes it gets.
    gpu_devices: Vec<PathBuf>,
    /// The unprivileged uid (and gid) it runs as, when the orchestrator is root.
    user: Option<u32>,
    /// What it writes, handed to `user`.
    writable: Vec<PathBuf>,
    /// The `cgroup.procs` files of its control groups.
    cgroups: Vec<CString>,
    /// Rlimits set before it starts (both soft and hard, so that it cannot raise them).
    rlimits: Vec<(Rlimit, u64)>,
}

type Rlimit = libc::__rlimit_resource_t;

impl Jail {
    pub(super) fn new(sandbox: &Sandbox) -> Jail {
        match &sandbox.bwrap {
            Some(bwrap) => Jail::with_bwrap(sandbox, bwrap),
            None => Jail {
                bwrap: None,
                network: true,
                env: Jail::environment(sandbox),
                chdir: None,
                gpu_devices: Vec::new(),
                user: None,
                writable: Vec::new(),
                cgroups: Vec::new(),
                rlimits: Jail::rlimits(sandbox),
            },
        }
    }

    /// The allow-listed environment, and the GPU memory limit of a libtorch program's allocator.
    fn environment(sandbox: &Sandbox) -> Vec<(String, String)> {
        let mut env = super::env::allowed();
        if let Some((name, value)) = sandbox.resources.gpu_allocator_env() {
            env.push((name.to_string(), value));
        }
        env
    }

    /// Core dumps off (a core of the trainer is a copy of its memory on the host's disk, and a
    /// raised limit plus a core pattern is a known way out); where no control group counts
    /// processes, a process limit for the unprivileged user.
    fn rlimits(sandbox: &Sandbox) -> Vec<(Rlimit, u64)> {
        let mut rlimits = vec![(libc::RLIMIT_CORE, 0)];
        if sandbox.user.is_some() && !sandbox.cgroups.limits_processes() {
            rlimits.push((libc::RLIMIT_NPROC, sandbox.resources.processes));
        }
        rlimits
    }

    pub(super) fn with_bwrap(sandbox: &Sandbox, bwrap: &Path) -> Jail {
        let mut args: Vec<OsString> = Vec::new();
        let mut push = |items: &[&dyn AsRef<std::ffi::OsStr>]| {
            args.extend(items.iter().map(|i| i.as_ref().to_os_string()));
        };
        let tmp = sandbox.resources.tmp_bytes.to_string();
        // A private /tmp first: the binds below may lie under the host's /tmp. Its size and
        // /dev/shm's are bounded (a tmpfs is memory); /dev itself is made read-only once its
        // device nodes are in (see `std_command`).
        push(&[&"--size", &tmp, &"--tmpfs", &"/tmp", &"--proc", &"/proc"]);
        for knob in KERNEL_KNOBS {
            push(&[&"--ro-bind-try", knob, knob]);
        }
        push(&[&"--dev", &"/dev", &"--size", &tmp, &"--tmpfs", &"/dev/shm"]);
        for dir in SYSTEM {
            let path = Path::new(dir);
            match std::fs::read_link(path) {
                Ok(target) => push(&[&"--symlink", &target, &path]),
                Err(_) if path.is_dir() => push(&[&"--ro-bind", &path, &path]),
                Err(_) => {}
            }
        }
        for file in ETC {
            push(&[&"--ro-bind-try", file, file]);
        }
        // What the GPU's driver tells through /sys, read-only (/proc/driver/nvidia is in the
        // jail's own /proc).
        push(&[&"--ro-bind-try", &"/sys", &"/sys"]);
        push(&[&"--ro-bind", &sandbox.libtorch_root, &sandbox.libtorch_root]);
        push(&[
            &"--unshare-pid",
            &"--unshare-ipc",
            &"--unshare-uts",
            &"--unshare-cgroup-try",
            &"--die-with-parent",
            &"--new-session",
            &"--cap-drop",
            &"ALL",
        ]);
        Jail {
            bwrap: Some((bwrap.to_path_buf(), args)),
            network: false,
            env: Jail::environment(sandbox),
            chdir: None,
            gpu_devices: sandbox.gpu_devices.clone(),
            user: sandbox.user,
            writable: Vec::new(),
            cgroups: Vec::new(),
            rlimits: Jail::rlimits(sandbox),
        }
    }

    /// Only the device nodes of the GPUs `visible` names (a `CUDA_VISIBLE_DEVICES` value of
    /// indices), and the driver's own; all of them where it names a GPU otherwise (a UUID).
    pub fn gpus(&mut self, visible: &str) {
        let indices: Option<Vec<u32>> = visible.split(',').map(|g| g.trim().parse().ok()).collect();
        let Some(indices) = indices else { return };
        self.gpu_devices.retain(|device| {
            let name = device.file_name().unwrap_or_default().to_string_lossy();
            GPU_CONTROL.contains(&name.as_ref())
                || name
                    .strip_prefix("nvidia")
                    .and_then(|n| n.parse().ok())
                    .is_some_and(|n: u32| indices.contains(&n))
        });
    }

    /// No GPU (the builds).
    pub fn no_gpu(&mut self) {
        self.gpu_devices.clear();
    }

    /// Runs it as the orchestrator's own user: the builds, which write the target directory all
    /// builds share and run compilers on the agent's source but none of its code.
    pub fn as_orchestrator(&mut self) {
        self.user = None;
        // RLIMIT_NPROC counts every process of the user: for root, all of the machine's.
        self.rlimits
            .retain(|&(resource, _)| resource != libc::RLIMIT_NPROC);
    }

    /// Puts it in the control groups of `group` before it starts.
    pub fn join(&mut self, group: &Group) {
        self.cgroups = group.procs_files();
    }

    /// No file it writes may grow past `bytes` (the kernel stops the write with `SIGXFSZ`).
    pub fn file_size_limit(&mut self, bytes: u64) {
        self.rlimits.push((libc::RLIMIT_FSIZE, bytes));
    }

    fn bind(&mut self, flag: &str, host: &Path, inside: &Path) {
        if let Some((_, args)) = &mut self.bwrap {
            args.extend([flag.into(), host.into(), inside.into()]);
        }
    }

    /// `host` readable at the same path; the path the program sees.
    pub fn read(&mut self, host: &Path) -> PathBuf {
        self.bind("--ro-bind", host, host);
        host.to_path_buf()
    }

    /// `host` readable at `inside`; the path the program sees (`host` with the sandbox off).
    pub fn read_as(&mut self, host: &Path, inside: &Path) -> PathBuf {
        self.bind("--ro-bind", host, inside);
        self.seen(host, inside)
    }

    /// Only the files `names` of directory `host`, in a directory `inside`; the directory the
    /// program sees (all of `host` with the sandbox off). A missing one stops the jail at start,
    /// with bubblewrap naming it, rather than leaving the program to guess what is absent.
    pub fn read_files_as(&mut self, host: &Path, names: &[&str], inside: &Path) -> PathBuf {
        for name in names {
            self.bind("--ro-bind", &host.join(name), &inside.join(name));
        }
        self.seen(host, inside)
    }

    /// The link `path` at its host path, pointing straight at what it resolves to (which must be
    /// visible in the jail; the links of a chain in between are not): a build then sees the very
    /// `LIBTORCH` path an unsandboxed build saw, and cargo does not rebuild libtorch's bindings
    /// for a changed variable.
    pub fn link(&mut self, path: &Path) {
        let is_link = path.symlink_metadata().is_ok_and(|m| m.is_symlink());
        if let (Some((_, args)), true, Ok(target)) = (&mut self.bwrap, is_link, path.canonicalize())
        {
            args.extend(["--symlink".into(), target.into(), path.into()]);
        }
    }

    /// `host` writable at the same path.
    pub fn write(&mut self, host: &Path) -> PathBuf {
        self.write_as(host, host)
    }

    /// `host` writable at `inside`; the path the program sees.
    pub fn write_as(&mut self, host: &Path, inside: &Path) -> PathBuf {
        self.bind("--bind", host, inside);
        self.writable.push(host.to_path_buf());
        self.seen(host, inside)
    }

    fn seen(&self, host: &Path, inside: &Path) -> PathBuf {
        if self.bwrap.is_some() {
            inside.to_path_buf()
        } else {
            host.to_path_buf()
        }
    }

    /// Lets the program reach the network (the build's index checks are offline; nothing in the
    /// loop needs this but a deliberately networked executor).
    pub fn network(&mut self) {
        self.network = true;
    }

    pub fn env(&mut self, name: &str, value: impl Into<String>) {
        self.env.retain(|(n, _)| n != name);
        self.env.push((name.to_string(), value.into()));
    }

    /// The working directory, which must be visible in the jail.
    pub fn chdir(&mut self, dir: &Path) {
        self.chdir = Some(dir.to_path_buf());
    }

    /// `program` (a path inside the jail) with `args`, ready to spawn: the environment is the
    /// jail's alone, also bubblewrap's own (its PID 1's `/proc/1/environ` is readable inside).
    pub fn command(&self, program: &Path, args: &[OsString]) -> tokio::process::Command {
        tokio::process::Command::from(self.std_command(program, args))
    }

    pub(super) fn std_command(&self, program: &Path, args: &[OsString]) -> std::process::Command {
        let mut command = match &self.bwrap {
            Some((bwrap, jail_args)) => {
                let mut command = std::process::Command::new(bwrap);
                command.args(jail_args);
                // `-try`: the list may name devices of other machines (`Sandbox::for_nodes`).
                for device in &self.gpu_devices {
                    command.arg("--dev-bind-try").arg(device).arg(device);
                }
                command.args(["--remount-ro", "/dev"]);
                if !self.network {
                    command.arg("--unshare-net");
                }
                if let Some(dir) = &self.chdir {
                    command.arg("--chdir").arg(dir);
                }
                // The jail's root is a tmpfs holding the mount points: read-only once they are
                // made, so that only `/tmp` and the binds asked for are writable.
                command.args(["--remount-ro", "/"]);
                command.arg("--").arg(program);
                command
            }
            None => {
                let mut command = std::process::Command::new(program);
                if let Some(dir) = &self.chdir {
                    command.current_dir(dir);
                }
                command
            }
        };
        command
            .args(args)
            .env_clear()
            .envs(self.env.iter().map(|(k, v)| (k, v)));
        self.before_exec(&mut command);
        command
    }

    /// In the child, before bubblewrap (or the program) starts: into its control groups (while
    /// still root), its rlimits, then its unprivileged user. bubblewrap run by that user makes
    /// an unprivileged user namespace whose root is the host's `nobody`, where bubblewrap run
    /// by root would map the jail to the host's root.
    fn before_exec(&self, command: &mut std::process::Command) {
        use std::os::unix::process::CommandExt;
        let user = self.user;
        if let Some(uid) = user {
            for path in &self.writable {
                // A failure shows as the jail's own error when it writes there.
                std::os::unix::fs::chown(path, Some(uid), Some(uid)).ok();
            }
        }
        let (cgroups, rlimits) = (self.cgroups.clone(), self.rlimits.clone());
        // SAFETY: only async-signal-safe calls (open, write, close, setrlimit, setgroups,
        // setgid, setuid) on data made before the fork.
        unsafe {
            command.pre_exec(move || {
                super::limits::join(&cgroups)?;
                for &(resource, value) in &rlimits {
                    let limit = libc::rlimit {
                        rlim_cur: value,
                        rlim_max: value,
                    };
                    if libc::setrlimit(resource, &limit) == -1 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                if let Some(id) = user
                    && (libc::setgroups(0, std::ptr::null()) == -1
                        || libc::setgid(id) == -1
                        || libc::setuid(id) == -1)
                {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sandbox::{Resources, limits::Cgroups};

    fn sandbox() -> Sandbox {
        let devices = [
            "nvidia0",
            "nvidia1",
            "nvidia12",
            "nvidiactl",
            "nvidia-uvm",
            "nvidia-caps",
        ];
        Sandbox {
            bwrap: Some("/usr/bin/bwrap".into()),
            libtorch_root: "/opt/libtorch".into(),
            gpu_devices: devices.iter().map(|d| Path::new("/dev").join(d)).collect(),
            user: None,
            resources: Resources {
                memory_bytes: 1 << 30,
                processes: 100,
                export_bytes: 1 << 30,
                tmp_bytes: 1 << 20,
                build_seconds: 60,
                gpu_memory_share: Some(0.5),
            },
            cgroups: Cgroups::None,
            support: String::new(),
        }
    }

    fn args(jail: &Jail) -> String {
        let command = jail.std_command(Path::new("/usr/bin/true"), &[]);
        let args: Vec<_> = command.get_args().map(|a| a.to_string_lossy()).collect();
        args.join(" ")
    }

    #[test]
    fn a_trainer_sees_only_its_own_gpu_and_the_drivers_nodes() {
        let sandbox = sandbox();
        let mut jail = sandbox.jail();
        jail.gpus("1");
        let seen = args(&jail);
        for node in ["nvidia1", "nvidiactl", "nvidia-uvm", "nvidia-caps"] {
            assert!(
                seen.contains(&format!("--dev-bind-try /dev/{node} ")),
                "{node}: {seen}"
            );
        }
        for node in ["nvidia0", "nvidia12"] {
            assert!(!seen.contains(&format!("/dev/{node} ")), "{node}: {seen}");
        }
        // A GPU named by its UUID: which node it is cannot be told, so all stay.
        let mut jail = sandbox.jail();
        jail.gpus("GPU-5a1c");
        assert!(args_of_all(&jail));
        let mut jail = sandbox.jail();
        jail.no_gpu();
        assert!(!args(&jail).contains("nvidia"));
    }

    #[test]
    fn libtorch_s_gpu_allocator_is_held_to_its_share() {
        let command = sandbox()
            .jail()
            .std_command(Path::new("/usr/bin/true"), &[]);
        let set: Vec<_> = command.get_envs().collect();
        assert!(set.contains(&(
            std::ffi::OsStr::new("PYTORCH_CUDA_ALLOC_CONF"),
            Some(std::ffi::OsStr::new("per_process_memory_fraction:0.5"))
        )));
    }

    #[test]
    fn a_chain_of_links_is_recreated_as_one_to_its_end() {
        let dir = tempfile::tempdir().unwrap();
        let torch = dir.path().join("site-packages/torch");
        std::fs::create_dir_all(&torch).unwrap();
        let (first, second) = (dir.path().join(".libtorch"), dir.path().join("torch-link"));
        std::os::unix::fs::symlink(&torch, &second).unwrap();
        std::os::unix::fs::symlink(&second, &first).unwrap();
        let mut jail = sandbox().jail();
        jail.link(&first);
        let torch = torch.canonicalize().unwrap();
        let expected = format!("--symlink {} {}", torch.display(), first.display());
        assert!(args(&jail).contains(&expected), "{}", args(&jail));
    }

    fn args_of_all(jail: &Jail) -> bool {
        let args = args(jail);
        ["nvidia0", "nvidia1", "nvidia12"]
            .iter()
            .all(|n| args.contains(&format!("--dev-bind-try /dev/{n} ")))
    }

    #[test]
    fn kernel_settings_and_dev_are_read_only_and_the_tmpfs_sized() {
        let args = args(&sandbox().jail());
        for knob in KERNEL_KNOBS {
            assert!(
                args.contains(&format!("--ro-bind-try {knob} {knob}")),
                "{args}"
            );
        }
        assert!(args.contains("--size 1048576 --tmpfs /tmp"), "{args}");
        assert!(args.contains("--size 1048576 --tmpfs /dev/shm"), "{args}");
        assert!(args.contains("--remount-ro /dev"), "{args}");
        // Kernel settings covered after /proc is mounted, not before (a bind under a later
        // mount would be hidden by it).
        assert!(args.find("--proc /proc") < args.find("--ro-bind-try /proc/sys"));
    }
}
