//! One jail: the files a process may see, what it may write, whether it has a network, and its
//! environment; turned into a command that runs the program inside it. With the sandbox off the
//! same calls return the host's paths and build a plain command with the filtered environment.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use super::Sandbox;

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

pub struct Jail {
    /// bubblewrap's arguments so far; None with the sandbox off.
    bwrap: Option<(PathBuf, Vec<OsString>)>,
    network: bool,
    env: Vec<(String, String)>,
    chdir: Option<PathBuf>,
}

impl Jail {
    pub(super) fn new(sandbox: &Sandbox) -> Jail {
        match &sandbox.bwrap {
            Some(bwrap) => Jail::with_bwrap(sandbox, bwrap),
            None => Jail {
                bwrap: None,
                network: true,
                env: super::env::allowed(),
                chdir: None,
            },
        }
    }

    pub(super) fn with_bwrap(sandbox: &Sandbox, bwrap: &Path) -> Jail {
        let mut args: Vec<OsString> = Vec::new();
        let mut push = |items: &[&dyn AsRef<std::ffi::OsStr>]| {
            args.extend(items.iter().map(|i| i.as_ref().to_os_string()));
        };
        // A private /tmp first: the binds below may lie under the host's /tmp.
        push(&[&"--tmpfs", &"/tmp", &"--proc", &"/proc", &"--dev", &"/dev"]);
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
        // The GPU: its device nodes, and what its driver tells through /sys (/proc/driver/nvidia
        // is in the jail's own /proc).
        push(&[&"--ro-bind-try", &"/sys", &"/sys"]);
        // `-try`: the list may name devices of other machines (`Sandbox::for_nodes`).
        for device in &sandbox.gpu_devices {
            push(&[&"--dev-bind-try", device, device]);
        }
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
            env: super::env::allowed(),
            chdir: None,
        }
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

    /// The link `path` as it is on the host (its target must be visible in the jail): a build
    /// then sees the very `LIBTORCH` path an unsandboxed build saw, and cargo does not rebuild
    /// libtorch's bindings for a changed variable.
    pub fn link(&mut self, path: &Path) {
        if let (Some((_, args)), Ok(target)) = (&mut self.bwrap, std::fs::read_link(path)) {
            args.extend(["--symlink".into(), target.into(), path.into()]);
        }
    }

    /// `host` writable at the same path.
    pub fn write(&mut self, host: &Path) -> PathBuf {
        self.bind("--bind", host, host);
        host.to_path_buf()
    }

    /// `host` writable at `inside`; the path the program sees.
    pub fn write_as(&mut self, host: &Path, inside: &Path) -> PathBuf {
        self.bind("--bind", host, inside);
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
        command
    }
}
