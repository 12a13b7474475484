//! The trainer binary end to end on `prepare`'s tiny dataset with a budget of a few seconds.
//!
//! - `prints_one_result_line_with_every_field`: exit 0, exactly one stdout line with the fields of
//!   docs/contract.md, and no val_bpb: the trainer never scores itself.
//! - `the_exported_model_is_scored_by_the_protected_evaluator`: with `AUTORESEARCH_EXPORT` the
//!   trainer saves TorchScript; the protected `evaluate` binary finds it causal and scores the
//!   validation and the test split.
//! - `a_diverging_setting_exits_non_zero`: a copy of the workspace with absurd learning rates
//!   is built under another package name (sharing this target dir, so only the two local crates
//!   compile) and must stop with status `diverged` and a non-zero exit.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::{json_line, output_ok};

const REQUIRED: [&str; 12] = [
    "schema",
    "status",
    "training_seconds",
    "total_seconds",
    "peak_memory_mb",
    "num_steps",
    "num_params",
    "train_tokens",
    "tokens_per_second",
    "mfu_percent",
    "device",
    "contract",
];

fn tiny_data() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let data = fixtures::tiny_dataset(dir.path()).unwrap();
    (dir, data)
}

fn run(binary: &Path, data: &Path) -> Output {
    Command::new(binary)
        .env(prepare::DATA_ENV, data)
        .env(prepare::TIME_BUDGET_ENV, "3")
        .output()
        .unwrap()
}

#[test]
fn prints_one_result_line_with_every_field() {
    let (_dir, data) = tiny_data();
    let out = run(Path::new(env!("CARGO_BIN_EXE_train")), &data);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let result = json_line(&out);
    for field in REQUIRED {
        assert!(result.get(field).is_some(), "missing {field} in {result}");
    }
    assert_eq!(result["status"], "ok");
    assert_eq!(result["device"], "cpu");
    assert_eq!(result["time_budget_s"], 3.0);
    let dataset = prepare::Dataset::open(&data).unwrap();
    assert_eq!(result["contract"], dataset.contract_hash());
    assert!(result.get("val_bpb").is_none(), "{result}");
    assert!(result["training_seconds"].as_f64().unwrap() >= 3.0);
    let uncounted = dataset.contract().uncounted_steps() as u64;
    assert!(result["num_steps"].as_u64().unwrap() > uncounted);
    assert!(
        stderr.contains("%)") && stderr.contains("not exported"),
        "progress lines: {stderr}"
    );
}

#[test]
fn the_exported_model_is_scored_by_the_protected_evaluator() {
    let (dir, data) = tiny_data();
    let model = dir.path().join("model.pt");
    let out = output_ok(
        Command::new(env!("CARGO_BIN_EXE_train"))
            .env(prepare::DATA_ENV, &data)
            .env(prepare::TIME_BUDGET_ENV, "2")
            .env(prepare::EXPORT_ENV, &model),
    );
    assert_eq!(json_line(&out)["status"], "ok");
    let evaluate = |split: &str| {
        json_line(&output_ok(
            Command::new(env!("CARGO_BIN_EXE_evaluate"))
                .arg(&model)
                .arg(split)
                .env(prepare::DATA_ENV, &data),
        ))
    };
    let val = evaluate("val");
    assert_eq!(val["causal"], true, "{val}");
    assert_eq!(val["probe_max_diff"], 0.0, "{val}");
    let bpb = val["bpb"].as_f64().unwrap();
    assert!(bpb > 0.0 && bpb < 8.0, "{val}");
    let test = evaluate("test");
    assert_eq!(test["split"], "test");
    assert!(test["bpb"].as_f64().unwrap() > 0.0);
}

#[test]
fn a_diverging_setting_exits_non_zero() {
    let (_dir, data) = tiny_data();
    let workspace = tempfile::tempdir().unwrap();
    let root = prepare::workspace_root();
    fixtures::copy_workspace(workspace.path()).unwrap();
    let main_rs = workspace.path().join("crates/train/src/main.rs");
    let source = std::fs::read_to_string(&main_rs).unwrap();
    let diverging =
        ["EMBEDDING_LR", "MATRIX_LR", "UNEMBEDDING_LR"]
            .iter()
            .fold(source, |s, name| {
                let line = s
                    .lines()
                    .find(|l| l.starts_with(&format!("const {name}: f64 = ")))
                    .unwrap()
                    .to_string();
                s.replace(&line, &format!("const {name}: f64 = 1e30;"))
            });
    std::fs::write(&main_rs, diverging).unwrap();
    // Another package name, so the build does not overwrite this workspace's train binary.
    let manifest = workspace.path().join("crates/train/Cargo.toml");
    let renamed = std::fs::read_to_string(&manifest)
        .unwrap()
        .replace("name = \"train\"", "name = \"diverging-train\"");
    std::fs::write(&manifest, renamed).unwrap();

    // This test binary lives in <target>/release/deps; building there reuses tch and libtorch's
    // wrapper, which only stay valid with the same LIBTORCH value.
    let target = std::env::current_exe()
        .unwrap()
        .ancestors()
        .nth(3)
        .unwrap()
        .to_path_buf();
    output_ok(
        Command::new(env!("CARGO"))
            .args([
                "build",
                "--release",
                "-p",
                "diverging-train",
                "--bin",
                "diverging-train",
                "--manifest-path",
            ])
            .arg(workspace.path().join("Cargo.toml"))
            .env("CARGO_TARGET_DIR", &target)
            .env("LIBTORCH", root.join(".libtorch")),
    );
    let out = run(&target.join("release/diverging-train"), &data);
    assert!(!out.status.success(), "a diverging run must fail");
    assert_eq!(json_line(&out)["status"], "diverged");
}
