//! The environment of the agent's code, from an allow-list: what a build and a libtorch program
//! need to run, and nothing else. `OPENAI_API_KEY`, tokens and proxy settings (which may carry
//! credentials) are not on it, so neither `env!` at build time nor the trainer at run time can
//! read them.

/// Passed on when the orchestrator has them: locale, the toolchain's own settings, and the
/// GPU's and the thread pools' settings.
const ALLOWED: &[&str] = &[
    "PATH",
    "LANG",
    "LC_ALL",
    "LC_CTYPE",
    "TZ",
    "RUST_BACKTRACE",
    "RUSTUP_TOOLCHAIN",
    "RUSTFLAGS",
    "CARGO_BUILD_JOBS",
    "CARGO_INCREMENTAL",
    "CUDA_VISIBLE_DEVICES",
    "CUDA_DEVICE_ORDER",
    "NVIDIA_VISIBLE_DEVICES",
    "NVIDIA_DRIVER_CAPABILITIES",
    "LD_LIBRARY_PATH",
    "OMP_NUM_THREADS",
    "OMP_WAIT_POLICY",
    "GOMP_SPINCOUNT",
    "MKL_NUM_THREADS",
];

/// The allowed variables this process has.
pub fn allowed() -> Vec<(String, String)> {
    ALLOWED
        .iter()
        .filter_map(|name| Some((name.to_string(), std::env::var(name).ok()?)))
        .collect()
}

/// The thread pools' settings for a libtorch program (a trainer, the evaluator), where the person
/// set none. OpenMP's threads otherwise spin at every barrier waiting for each other, so one busy
/// process beside a run slowed it 37-fold on 2 cores; waiting passively, the slow-down follows
/// the load (`scripts/bench/load.sh`). `sharing`: how many such programs share this machine's
/// cores, each then getting its share of them; None where they run elsewhere (a cluster's node,
/// whose cores libtorch counts itself).
pub fn threads(sharing: Option<usize>) -> Vec<(&'static str, String)> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let share = sharing.map(|n| ("OMP_NUM_THREADS", (cores / n.max(1)).max(1).to_string()));
    [("OMP_WAIT_POLICY", "PASSIVE".to_string())]
        .into_iter()
        .chain(share)
        .filter(|(name, _)| std::env::var_os(name).is_none())
        .collect()
}

/// Where cargo and rustup keep their files: `CARGO_HOME` and `RUSTUP_HOME`, else under `HOME`.
pub fn toolchain_homes() -> (std::path::PathBuf, std::path::PathBuf) {
    let home = std::env::var_os("HOME").map_or_else(|| "/root".into(), std::path::PathBuf::from);
    let var = |name: &str, default: &str| {
        std::env::var_os(name).map_or_else(|| home.join(default), std::path::PathBuf::from)
    };
    (var("CARGO_HOME", ".cargo"), var("RUSTUP_HOME", ".rustup"))
}

#[cfg(test)]
mod tests {
    #[test]
    fn keys_tokens_and_proxies_are_not_allowed() {
        for name in [
            "OPENAI_API_KEY",
            "OPENAI_BASE_URL",
            "HF_TOKEN",
            "GITHUB_TOKEN",
            "AWS_SECRET_ACCESS_KEY",
            "HTTP_PROXY",
            "https_proxy",
            "CARGO_REGISTRY_TOKEN",
            "RUSTC_WRAPPER",
        ] {
            assert!(!super::ALLOWED.contains(&name), "{name}");
        }
    }
}
