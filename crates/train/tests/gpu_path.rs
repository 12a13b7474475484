//! What a GPU run depends on, checked on a machine without one.
//!
//! - `both_binaries_load_libtorch_cuda`: `train` and `evaluate` list libtorch_cuda.so as needed
//!   whenever the libtorch they were built against has it; without it libtorch never registers
//!   its CUDA backend and a GPU machine would train on the CPU.
//! - `asking_for_cuda_without_a_gpu_fails_at_once`: `AUTORESEARCH_DEVICE=cuda` where no GPU is
//!   visible exits non-zero with one line that says why, before any work; so does a device name
//!   that is neither cpu nor cuda.
//!
//! That CUDA autocast computes in bfloat16 is tested beside the shim (`runtime/lib.rs`); that the
//! evaluator's verdict holds whatever the precision of an export, in `tests/evaluator.rs`.

use std::process::{Command, Output};

fn needed_libraries(binary: &str) -> Vec<String> {
    let out = Command::new("readelf")
        .args(["-d", binary])
        .output()
        .expect("readelf (binutils) runs");
    assert!(out.status.success(), "readelf -d {binary}");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains("(NEEDED)"))
        .filter_map(|l| Some(l.split_once('[')?.1.trim_end_matches(']').to_string()))
        .collect()
}

#[test]
fn both_binaries_load_libtorch_cuda() {
    let libtorch = prepare::workspace_root().join(".libtorch/lib");
    assert!(
        libtorch.join("libtorch_cpu.so").exists(),
        "no libtorch at {}",
        libtorch.display()
    );
    let has_cuda = libtorch.join("libtorch_cuda.so").exists();
    for binary in [env!("CARGO_BIN_EXE_train"), env!("CARGO_BIN_EXE_evaluate")] {
        let needed = needed_libraries(binary);
        assert!(needed.iter().any(|l| l == "libtorch_cpu.so"), "{needed:?}");
        assert_eq!(
            needed.iter().any(|l| l == "libtorch_cuda.so"),
            has_cuda,
            "{binary} needs {needed:?}; libtorch has libtorch_cuda.so: {has_cuda}"
        );
    }
}

fn run_with_device(binary: &str, device: &str, args: &[&str]) -> Output {
    let dir = tempfile::tempdir().unwrap();
    Command::new(binary)
        .args(args)
        .env(prepare::DEVICE_ENV, device)
        .env_remove("RUST_BACKTRACE")
        .env_remove("RUST_LIB_BACKTRACE")
        .env(
            prepare::DATA_ENV,
            dir.path().join("no-data-needed-before-the-device"),
        )
        .output()
        .unwrap()
}

#[test]
fn asking_for_cuda_without_a_gpu_fails_at_once() {
    if tch::Cuda::is_available() {
        eprintln!("skipped: this machine has a CUDA device");
        return;
    }
    let cases = [
        (env!("CARGO_BIN_EXE_train"), &[][..]),
        (env!("CARGO_BIN_EXE_evaluate"), &["model.pt", "val"][..]),
    ];
    for (binary, args) in cases {
        for (device, says) in [("cuda", "sees no CUDA device"), ("tpu", "is not a device")] {
            let out = run_with_device(binary, device, args);
            let stderr = String::from_utf8_lossy(&out.stderr);
            let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
            assert!(!out.status.success(), "{binary} with {device}: {stderr}");
            assert_eq!(lines.len(), 1, "one line, got {stderr:?}");
            assert!(
                lines[0].contains(prepare::DEVICE_ENV) && lines[0].contains(says),
                "{stderr}"
            );
            assert!(out.stdout.is_empty(), "no result line");
        }
    }
}
