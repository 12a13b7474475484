//! What a GPU run depends on, checked on a machine without one.
//!
//! - `both_binaries_load_libtorch_cuda`: `train` and `evaluate` list libtorch_cuda.so as needed
//!   whenever the libtorch they were built against has it; without it libtorch never registers
//!   its CUDA backend and a GPU machine would train on the CPU.
//! - `asking_for_cuda_without_a_gpu_fails_at_once`: `AUTORESEARCH_DEVICE=cuda` where no GPU is
//!   visible exits non-zero with one line that says why, before any work; so does a device name
//!   that is neither cpu nor cuda.
//! - `the_evaluator_scores_causal_exports_and_rejects_peeking_ones_in_any_precision`: tiny
//!   TorchScript models, causal or peeking at the next token, in float32 and bfloat16: the causal
//!   ones are scored with a probe difference of exactly 0, the peeking ones are refused.
//!
//! That CUDA autocast computes in bfloat16 is tested beside the shim (`runtime/lib.rs`).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use tch::{CModule, Device, Kind, Tensor, nn};

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

/// A tiny language model over the tiny dataset's contract, computing in `kind`: a running mean of
/// token embeddings (causal), plus the next token's embedding when it `peeks`.
fn export_tiny_model(dir: &Path, kind: Kind, peeks: bool, vocab: i64, seq_len: i64) -> PathBuf {
    tch::manual_seed(0);
    let mut vs = nn::VarStore::new(Device::Cpu);
    let wte = nn::embedding(vs.root() / "wte", vocab, 16, Default::default());
    let head = nn::linear(vs.root() / "head", 16, vocab, Default::default());
    vs.set_kind(kind);
    vs.freeze();
    let positions = Tensor::arange_start(1, seq_len + 1, (kind, Device::Cpu)).view([1, -1, 1]);
    let example = Tensor::zeros([1, seq_len], (Kind::Int64, Device::Cpu));
    let module = CModule::create_by_tracing("Tiny", "forward", &[example], &mut |x| {
        let e = x[0].apply(&wte); // (1, T, 16)
        let mut h = e.cumsum(1, kind) / &positions;
        if peeks {
            h = h + e.roll([-1], [1]);
        }
        vec![h.apply(&head).to_kind(Kind::Float)]
    })
    .unwrap();
    let path = dir.join(format!(
        "{kind:?}-{}.pt",
        if peeks { "peek" } else { "causal" }
    ));
    module.save(&path).unwrap();
    path
}

#[test]
fn the_evaluator_scores_causal_exports_and_rejects_peeking_ones_in_any_precision() {
    let dir = tempfile::tempdir().unwrap();
    let data = prepare::fixtures::tiny_dataset(dir.path()).unwrap();
    let contract = prepare::Dataset::open(&data).unwrap().contract().clone();
    let (vocab, seq_len) = (contract.vocab_size as i64, contract.seq_len as i64);
    for kind in [Kind::Float, Kind::BFloat16] {
        for peeks in [false, true] {
            let model = export_tiny_model(dir.path(), kind, peeks, vocab, seq_len);
            let out = Command::new(env!("CARGO_BIN_EXE_evaluate"))
                .arg(&model)
                .arg("val")
                .env(prepare::DATA_ENV, &data)
                .output()
                .unwrap();
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(out.status.success(), "{kind:?}: {stderr}");
            let score: serde_json::Value = serde_json::from_slice(out.stdout.trim_ascii()).unwrap();
            if peeks {
                assert_eq!(score["causal"], false, "{kind:?} peeking: {score}");
                assert!(score["bpb"].is_null(), "{score}");
                assert!(score["probe_max_diff"].as_f64().unwrap() > 0.01, "{score}");
            } else {
                assert_eq!(score["causal"], true, "{kind:?} causal: {score}");
                assert_eq!(score["probe_max_diff"], 0.0, "{score}");
                let bpb = score["bpb"].as_f64().unwrap();
                assert!(bpb > 0.0 && bpb < 20.0, "{score}");
            }
        }
    }
}
