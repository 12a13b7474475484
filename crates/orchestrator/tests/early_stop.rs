//! Early stopping in the loop, on the real trainer (CPU, `prepare`'s tiny data) with the LLM
//! agent scripted on 127.0.0.1 (see `common::llm`). One night walks through:
//!
//! - the baseline's three seeds record their curves: the best's level and the spread between
//!   seeds that the rule is calibrated on;
//! - #1 a doomed change (the learning rate divided by 2500) is stopped early: a discard with the
//!   point it was stopped at (`stopped`) and its curve, never scored, never kept (the branch stays
//!   at the baseline, the change is kept aside under the discarded ref), its log saying why;
//! - #2 a change that alters nothing the trainer computes is not stopped: it trains its whole
//!   budget and is scored.

mod common;

use common::llm::{Script, Server, edit, finish};
use common::{CRIPPLED, GOOD, SERIAL, Sandbox};
use serde_json::Value;

const TAG: &str = "early";
/// Long enough for a few progress lines (one a second) inside the judged part of the budget.
const BUDGET: f64 = 8.0;
const DEPTH: &str = "const CPU_DEPTH: i64 = 2;";
const SAME_DEPTH: &str = "const CPU_DEPTH: i64 = 1 + 1;";

#[test]
fn a_doomed_change_is_stopped_early_and_a_harmless_one_is_not() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let sandbox = Sandbox::new();
    let source = std::fs::read_to_string(sandbox.repo.join("crates/train/src/main.rs")).unwrap();
    assert!(
        source.contains(GOOD) && source.contains(DEPTH),
        "the script edits these lines"
    );
    // No re-runs side by side: #2, level with the baseline, is settled on its first run. A
    // minute's grace for the loaded machine.
    std::fs::write(
        sandbox.repo.join("autoresearch.toml"),
        "grace = 60\nrerun_share = 0\n",
    )
    .unwrap();
    sandbox.git(&["add", "autoresearch.toml"]);
    sandbox.git(&["commit", "--quiet", "-m", "settings"]);
    let server = Server::start(Script::new([
        (
            1,
            vec![edit(GOOD, CRIPPLED), finish("a far lower learning rate")],
        ),
        (
            2,
            vec![edit(DEPTH, SAME_DEPTH), finish("the depth as a sum")],
        ),
    ]));
    let out = sandbox
        .command(&[
            "--agent",
            "openai",
            "--model",
            "scripted",
            "--time-budget",
            &BUDGET.to_string(),
            "--tag",
            TAG,
            "--max-experiments",
            "3",
        ])
        .env("OPENAI_BASE_URL", &server.base_url)
        .env("OPENAI_API_KEY", "sk-test")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let records = sandbox.records(TAG);
    assert_eq!(records.len(), 3, "{stderr}");

    for trial in records[0]["trials"].as_array().unwrap() {
        assert_full_curve(trial);
    }

    let doomed = &records[1];
    assert_eq!(doomed["status"], "discard", "{doomed:#}");
    assert!(doomed["val_bpb"].is_null() && doomed["test_bpb"].is_null());
    let stopped = &doomed["stopped"];
    let progress = stopped["progress"].as_f64().unwrap();
    assert!((0.2..=0.5).contains(&progress), "{stopped}");
    assert!(stopped["loss"].as_f64().unwrap() > stopped["best_loss"].as_f64().unwrap());
    assert!(
        doomed["rule"]
            .as_str()
            .unwrap()
            .starts_with("stopped early at")
    );
    let trials = doomed["trials"].as_array().unwrap();
    assert_eq!(trials.len(), 1, "only its first run, stopped: {doomed:#}");
    assert!(trials[0]["val_bpb"].is_null());
    let curve = trials[0]["curve"].as_array().unwrap();
    let last = curve.last().expect("the curve up to the stop");
    assert!(
        last["seconds"].as_f64().unwrap() <= 0.5 * BUDGET + 1.5,
        "{last}"
    );
    let log = std::fs::read_to_string(sandbox.repo.join(format!("runs/{TAG}/logs/1.log"))).unwrap();
    assert!(log.contains("orchestrator: stopped early at"), "{log}");
    // Never kept: the branch is still at the baseline, the change kept aside.
    let commit = |r: &Value| r["commit"].as_str().unwrap().to_string();
    let branch = sandbox.git(&["rev-parse", &format!("autoresearch/{TAG}")]);
    assert_eq!(branch.trim(), commit(&records[0]));
    let aside = sandbox.git(&["rev-parse", &format!("refs/autoresearch/{TAG}/discarded/1")]);
    assert_eq!(aside.trim(), commit(doomed));

    let harmless = &records[2];
    assert!(harmless["stopped"].is_null(), "{harmless:#}");
    assert!(harmless["val_bpb"].as_f64().is_some(), "{harmless:#}");
    assert_full_curve(&harmless["trials"][0]);
}

/// A run that trained its whole budget with its curve recorded up to the end.
fn assert_full_curve(trial: &Value) {
    assert!(trial["val_bpb"].as_f64().is_some(), "{trial:#}");
    let curve = trial["curve"].as_array().unwrap();
    assert!(curve.len() >= 3, "{trial:#}");
    let last = &curve[curve.len() - 1];
    assert!(last["seconds"].as_f64().unwrap() >= BUDGET, "{last}");
    assert!(last["loss"].as_f64().is_some(), "{last}");
}
