//! Early stopping in the real loop (git, sandboxed builds, the executor and its watch, the
//! evaluator, the ledger) on the stand-in trainer of `common/standin.rs`, whose loss falls to its
//! scripted score as it "trains" (a second of sleep per progress line, so the points come at the
//! same counted seconds however loaded the machine), with the LLM agent scripted on 127.0.0.1
//! (see `common::llm`). One night walks through:
//!
//! - the baseline's three seeds record their curves: the best's level and the spread between
//!   seeds that the rule is calibrated on;
//! - #1 a doomed change (the learning rate times 100, which would diverge at half its budget) is
//!   stopped early: a discard with the point it was stopped at (`stopped`) and its curve, never
//!   scored, never kept (the branch stays at the baseline, the change is kept aside under the
//!   discarded ref), its log and the agent's history saying why;
//! - #2 a change that alters nothing the trainer computes is not stopped: it trains its whole
//!   budget and is scored.

mod common;
#[path = "common/standin.rs"]
mod standin;

use common::llm::{Script, Server, edit, finish};
use serde_json::Value;
use standin::Standin;

const TAG: &str = "early";
/// Progress lines come a second apart: five seconds put two inside the judged 20-50%.
const BUDGET: f64 = 5.0;
const LR: &str = "const CPU_LR: f64 = 0.01;";
const DOOMED_LR: &str = "const CPU_LR: f64 = 1.0;";
const WARMUP: &str = "const CPU_WARMUP: i64 = 10;";
const SAME_WARMUP: &str = "const CPU_WARMUP: i64 = 5 + 5;";

#[test]
fn a_doomed_change_is_stopped_early_and_a_harmless_one_is_not() {
    let standin = Standin::new();
    // No re-runs side by side: #2, level with the baseline, is settled on its first run.
    standin.settings("rerun_share = 0\n");
    let server = Server::start(Script::new([
        (1, vec![edit(LR, DOOMED_LR), finish("learning rate x 100")]),
        (
            2,
            vec![edit(WARMUP, SAME_WARMUP), finish("the warm-up as a sum")],
        ),
    ]));
    let out = standin
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
    let records = standin.records(TAG);
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
    let rule = doomed["rule"].as_str().unwrap();
    assert!(rule.starts_with("stopped early at"), "{rule}");
    assert!(rule.contains("probe loss"), "compared on the probe: {rule}");
    assert_eq!(stopped["probe"], true);
    let trials = doomed["trials"].as_array().unwrap();
    assert_eq!(trials.len(), 1, "only its first run, stopped: {doomed:#}");
    assert!(trials[0]["val_bpb"].is_null());
    let curve = trials[0]["curve"].as_array().unwrap();
    let last = curve.last().expect("the curve up to the stop");
    assert!(
        last["seconds"].as_f64().unwrap() < 0.5 * BUDGET + 0.5,
        "{last}"
    );
    let log = std::fs::read_to_string(standin.run_dir(TAG).join("logs/1.log")).unwrap();
    assert!(log.contains("orchestrator: stopped early at"), "{log}");
    assert!(
        !log.contains("diverged"),
        "stopped before it diverged: {log}"
    );
    // Never kept: the branch is still at the baseline, the change kept aside.
    let commit = |r: &Value| r["commit"].as_str().unwrap().to_string();
    let branch = standin.git(&["rev-parse", &format!("autoresearch/{TAG}")]);
    assert_eq!(branch.trim(), commit(&records[0]));
    let aside = standin.git(&["rev-parse", &format!("refs/autoresearch/{TAG}/discarded/1")]);
    assert_eq!(aside.trim(), commit(doomed));
    // The agent proposing #2 was told where #1 stopped.
    let script = server.script.lock().unwrap();
    let brief = script.requests_of(2)[0]["messages"].to_string();
    assert!(brief.contains("#1 discard [stopped early at"), "{brief}");

    let harmless = &records[2];
    assert!(harmless["stopped"].is_null(), "{harmless:#}");
    assert!(harmless["val_bpb"].as_f64().is_some(), "{harmless:#}");
    assert_full_curve(&harmless["trials"][0]);
}

/// A run that trained its whole budget, with its curve recorded up to the end.
fn assert_full_curve(trial: &Value) {
    assert!(trial["val_bpb"].as_f64().is_some(), "{trial:#}");
    let curve = trial["curve"].as_array().unwrap();
    assert!(curve.len() >= BUDGET as usize, "{trial:#}");
    let last = &curve[curve.len() - 1];
    assert!(last["seconds"].as_f64().unwrap() >= BUDGET, "{last}");
    assert!(last["loss"].as_f64().is_some(), "{last}");
}
