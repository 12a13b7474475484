//! The evaluator's lock-down, applied once it has read everything it needs and before it
//! deserialises the model (TorchScript can run code at load time): from then on the model's code
//! runs in a process that can open no file but the libraries libtorch may still load, start no
//! program, open no socket and touch no other process. The jail around the evaluator holds only
//! the scored split; this keeps even that, and everything else the jail shows, out of the model's
//! reach.
//!
//! FIXED: part of the protected evaluator (see `main.rs`).

use std::collections::BTreeMap;
use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use landlock::{
    ABI, Access, AccessFs, AccessNet, LandlockStatus, Ruleset, RulesetAttr, RulesetCreatedAttr,
    RulesetStatus, Scope, path_beneath_rules,
};
use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};

/// The newest Landlock ABI asked for; older kernels enforce what they have (best effort).
const LANDLOCK_ABI: ABI = ABI::V7;

/// Where the evaluator's own output goes once stdout and stderr are the model's to waste.
pub struct Outputs {
    /// The verdict: the caller's `--result-fd`, else the original stdout.
    pub verdict: File,
    /// The evaluator's own errors: the original stderr.
    pub errors: File,
}

impl Outputs {
    /// Takes the verdict's descriptor (`result_fd`, else a copy of stdout) and a copy of stderr
    /// before anything else can write there.
    pub fn take(result_fd: Option<i32>) -> Result<Outputs> {
        let verdict = match result_fd {
            // SAFETY: the caller opened this descriptor for us; nothing else in this process owns it.
            Some(fd) => unsafe { File::from_raw_fd(fd) },
            None => duplicate(libc::STDOUT_FILENO)?,
        };
        let errors = duplicate(libc::STDERR_FILENO)?;
        Ok(Outputs { verdict, errors })
    }
}

fn duplicate(fd: i32) -> Result<File> {
    // SAFETY: F_DUPFD_CLOEXEC returns a new descriptor (or -1), which the File then owns.
    let copy = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 3) };
    anyhow::ensure!(
        copy >= 0,
        "duplicating descriptor {fd}: {}",
        std::io::Error::last_os_error()
    );
    Ok(unsafe { File::from_raw_fd(copy) })
}

/// Locks this process down for the model's code (see the module header); what was applied, for
/// the verdict, e.g. `landlock abi 7 + seccomp`. Call it from the main thread before any other
/// thread starts: Landlock binds the calling thread and the threads it starts after.
pub fn lock_down(cuda: bool) -> Result<String> {
    silence_stdout_and_stderr()?;
    let landlock = landlock(cuda)?;
    seccomp()?;
    Ok(format!("{landlock} + seccomp"))
}

/// The model may print: what it prints reaches no one.
fn silence_stdout_and_stderr() -> Result<()> {
    let null = File::options()
        .write(true)
        .open("/dev/null")
        .context("opening /dev/null")?;
    for fd in [libc::STDOUT_FILENO, libc::STDERR_FILENO] {
        // SAFETY: dup2 onto a standard descriptor; the original was copied by `Outputs::take`.
        if unsafe { libc::dup2(null.as_raw_fd(), fd) } == -1 {
            return Err(std::io::Error::last_os_error()).context("redirecting to /dev/null");
        }
    }
    Ok(())
}

/// No file access except reading the library directories (libtorch loads some of its own
/// libraries, and CUDA's, only when first used) and, on CUDA, the GPU's device nodes; no TCP;
/// no abstract unix sockets or signals outside this process.
fn landlock(cuda: bool) -> Result<String> {
    let abi = LANDLOCK_ABI;
    let mut ruleset = Ruleset::default()
        .handle_access(AccessFs::from_all(abi))?
        .handle_access(AccessNet::from_all(abi))?
        .scope(Scope::from_all(abi))?
        .create()?
        .add_rules(path_beneath_rules(
            library_dirs()?,
            AccessFs::from_read(abi),
        ))?;
    if cuda {
        let device = AccessFs::ReadFile | AccessFs::WriteFile | AccessFs::IoctlDev;
        ruleset = ruleset.add_rules(path_beneath_rules(nvidia_nodes()?, device))?;
    }
    let status = ruleset
        .restrict_self()
        .context("applying the Landlock ruleset")?;
    Ok(match (status.ruleset, status.landlock) {
        (RulesetStatus::NotEnforced, _)
        | (_, LandlockStatus::NotEnabled)
        | (_, LandlockStatus::NotImplemented) => "no landlock (not in this kernel)".to_string(),
        (enforced, LandlockStatus::Available { effective_abi, .. }) => {
            let partly = enforced == RulesetStatus::PartiallyEnforced;
            let abi = effective_abi as i32;
            format!(
                "landlock abi {abi}{}",
                if partly { " (partly)" } else { "" }
            )
        }
    })
}

/// The directories libraries may be loaded from: libtorch's directory and its siblings (the
/// Python wheels of CUDA's libraries sit beside torch), found from where libtorch is mapped, and
/// the system's library directories with the loader's cache; and the CPU's description, which
/// OpenMP and libtorch read to size their thread pools and pick kernels (denied, they chose
/// others and an honest model scored 1e-9 apart from its unconfined score).
fn library_dirs() -> Result<Vec<PathBuf>> {
    let maps = std::fs::read_to_string("/proc/self/maps").context("reading /proc/self/maps")?;
    let libtorch = maps
        .lines()
        .filter_map(|line| line.split_whitespace().nth(5))
        .find(|path| path.ends_with("/libtorch_cpu.so"))
        .map(PathBuf::from)
        .context("libtorch_cpu.so is not mapped into the evaluator")?;
    // <dir>/torch/lib/libtorch_cpu.so -> <dir>
    let siblings = libtorch
        .ancestors()
        .nth(3)
        .context("libtorch sits in no directory with siblings")?;
    let system = [
        "/lib",
        "/lib64",
        "/usr/lib",
        "/usr/lib64",
        "/usr/local/lib",
        "/etc/ld.so.cache",
        "/proc/cpuinfo",
        "/sys/devices/system/cpu",
    ];
    Ok(std::iter::once(siblings)
        .chain(system.iter().map(Path::new))
        .filter(|path| path.exists())
        .map(Path::to_path_buf)
        .collect())
}

/// `/dev/nvidia*`: the GPU's control, device and unified-memory nodes.
fn nvidia_nodes() -> Result<Vec<PathBuf>> {
    let mut nodes = Vec::new();
    for entry in std::fs::read_dir("/dev").context("listing /dev")? {
        let path = entry?.path();
        if path
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with("nvidia"))
        {
            nodes.push(path);
        }
    }
    Ok(nodes)
}

/// Refuses (EPERM) what a model has no use for: starting programs or processes (threads are
/// allowed), sockets, and reaching into other processes or the kernel's namespaces. `clone3`
/// fails with ENOSYS instead, which makes glibc start its threads with `clone`, whose flags a
/// filter can see.
fn seccomp() -> Result<()> {
    let arch = TargetArch::try_from(std::env::consts::ARCH)?;
    let always = |calls: &[libc::c_long]| -> BTreeMap<i64, Vec<SeccompRule>> {
        calls.iter().map(|&call| (call, Vec::new())).collect()
    };
    let mut refused = always(&[
        libc::SYS_execve,
        libc::SYS_execveat,
        #[cfg(target_arch = "x86_64")]
        libc::SYS_fork,
        #[cfg(target_arch = "x86_64")]
        libc::SYS_vfork,
        libc::SYS_socket,
        libc::SYS_socketpair,
        libc::SYS_ptrace,
        libc::SYS_process_vm_readv,
        libc::SYS_process_vm_writev,
        libc::SYS_pidfd_open,
        libc::SYS_pidfd_getfd,
        libc::SYS_kcmp,
        libc::SYS_mount,
        libc::SYS_umount2,
        libc::SYS_pivot_root,
        libc::SYS_chroot,
        libc::SYS_unshare,
        libc::SYS_setns,
        libc::SYS_bpf,
        libc::SYS_perf_event_open,
        libc::SYS_userfaultfd,
        libc::SYS_io_uring_setup,
        libc::SYS_keyctl,
        libc::SYS_add_key,
        libc::SYS_request_key,
        libc::SYS_open_by_handle_at,
        libc::SYS_personality,
    ]);
    let new_process = SeccompCondition::new(
        0,
        SeccompCmpArgLen::Qword,
        SeccompCmpOp::MaskedEq(libc::CLONE_THREAD as u64),
        0,
    )?;
    refused.insert(libc::SYS_clone, vec![SeccompRule::new(vec![new_process])?]);
    let filters = [
        (refused, libc::EPERM),
        (always(&[libc::SYS_clone3]), libc::ENOSYS),
    ];
    for (calls, errno) in filters {
        let filter = SeccompFilter::new(
            calls,
            SeccompAction::Allow,
            SeccompAction::Errno(errno as u32),
            arch,
        )?;
        let program = BpfProgram::try_from(filter)?;
        // Every thread, also those libtorch or the CUDA driver started already.
        seccompiler::apply_filter_all_threads(&program).context("applying the seccomp filter")?;
    }
    Ok(())
}
