//! The loop with the LLM agent against a scripted OpenAI-compatible server on 127.0.0.1 (a real
//! HTTP server; the orchestrator talks to it over plain HTTP and JSON), with one worker or as many as
//! `AUTORESEARCH_WORKERS` says: each experiment's conversation has its own script (see
//! `common::llm`), and every check finds its record by number. One run walks through:
//!
//! - #1 an improving edit (the sandbox's baseline has a crippled learning rate) is kept;
//! - #2 a worse edit is discarded and preserved under the discarded ref;
//! - #3 a compile error is repaired after the diagnostics are sent back;
//! - #4 an edit outside crates/train/src is refused and nothing outside changes (no change: not
//!   run, and #4 is proposed again), then a malformed tool call is survived, then a panicking
//!   trainer is a crash;
//! - #5 an endless loop in the trainer is killed at the limit the baseline's runs measured and
//!   recorded as a crash, over budget;
//! - a 500 answer is retried; tokens are counted.
//!
//! Only #1 may be kept: #2 and #3 spoil the exported model (see `common::llm::spoil`), so that
//! with several workers, where #2 and #3 may start from the baseline while #1 runs, neither beats
//! its parent and none is re-applied as an experiment of its own.

mod common;

use common::llm::{EXPORT, Script, Server, call, call_raw, edit, finish, spoil, spoiled_export};
use common::{CRIPPLED, GOOD, SERIAL, Sandbox};
use serde_json::json;

const MAIN: &str = "fn main() -> Result<()> {";

#[test]
fn the_llm_agent_through_keep_discard_repair_refusal_and_crashes() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let sandbox = Sandbox::new();
    let main_rs = sandbox.repo.join("crates/train/src/main.rs");
    let source = std::fs::read_to_string(&main_rs).unwrap();
    assert!(
        source.contains(GOOD) && source.contains(MAIN) && source.contains(EXPORT),
        "the script edits these lines"
    );
    // One seed: no noise floor, so any gain is kept (the noise rules are tested in trust.rs). A
    // minute's grace: with several workers the trainers share the machine's cores, and start-up
    // and export take seconds more before the baseline measured them.
    sandbox.crippled_baseline("grace = 60\nnoise_seeds = 1\n");

    // #3's change, first with a typo.
    let spoiled = spoiled_export(1);
    let typo = spoiled.replace("+ favoured\n", "+ favored\n");
    let server = Server::start(Script::new([
        (
            1,
            vec![
                (
                    500,
                    json!({"error": {"message": "try again", "type": "server_error"}}),
                ),
                edit(CRIPPLED, GOOD),
                finish("restore the CPU learning-rate scale"),
            ],
        ),
        (
            2,
            vec![spoil(0), finish("favour one token in the exported model")],
        ),
        (
            3,
            vec![
                edit(EXPORT, &typo),
                finish("favour another token"),
                // The repair round, after the diagnostics.
                edit(&typo, &spoiled),
                finish("favour another token (fixed)"),
            ],
        ),
        (
            4,
            vec![
                call(
                    "write_file",
                    json!({"path": "crates/prepare/src/lib.rs", "content": "// hijacked"}),
                ),
                finish("tried to change the evaluation"),
                // Proposed again: that one changed nothing.
                call_raw("edit_file", "{not json"),
                edit(MAIN, &format!("{MAIN}\n    panic!(\"boom\");")),
                finish("panic at start"),
            ],
        ),
        (
            5,
            vec![
                edit(
                    MAIN,
                    &format!(
                        "{MAIN}\n    loop {{ std::thread::sleep(std::time::Duration::from_secs(1)); }}"
                    ),
                ),
                finish("never return"),
            ],
        ),
    ]));
    let out = sandbox.run_with_llm(&server, "llm", 6, "sk-test-secret-key");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        !stderr.contains("sk-test-secret-key"),
        "the key leaked into the output"
    );

    let records = sandbox.records("llm");
    let record = |seq: u64| common::llm::record(&records, seq);
    assert_eq!(records.len(), 6, "{records:#?}");
    let status = |seq: u64| record(seq)["status"].as_str().unwrap();
    assert_eq!(
        [status(0), status(1), status(2), status(3)],
        ["keep", "keep", "discard", "discard"],
        "{records:#?}"
    );
    assert!(
        record(3)["val_bpb"].as_f64().is_some(),
        "the repaired build ran: {:#?}",
        record(3)
    );
    assert_eq!([status(4), status(5)], ["crash", "crash"]);
    for (seq, description) in [
        (1, "restore the CPU learning-rate scale"),
        (2, "favour one token in the exported model"),
        (4, "panic at start"),
        (5, "never return"),
    ] {
        assert_eq!(record(seq)["description"], description, "{records:#?}");
    }
    let discarded = sandbox.git(&["rev-parse", "refs/autoresearch/llm/discarded/2"]);
    assert_eq!(discarded, record(2)["commit"].as_str().unwrap());
    assert!(
        sandbox.git(&["show", &discarded]).contains("favoured"),
        "the discarded change is kept aside"
    );
    assert!(
        record(4)["reason"].as_str().unwrap().contains("exit"),
        "{:#?}",
        record(4)
    );
    assert!(
        record(5)["reason"]
            .as_str()
            .unwrap()
            .starts_with("over budget: still running after"),
        "{:#?}",
        record(5)
    );
    assert!(record(1)["agent_tokens"].as_u64().unwrap() >= 200);
    // The branch ends at #1, the only change that beat its parent.
    assert_eq!(
        sandbox.git(&["rev-parse", "autoresearch/llm"]),
        record(1)["commit"].as_str().unwrap()
    );

    let script = server.script.lock().unwrap();
    // What experiment `seq`'s conversations were told: the tools' replies and the user's turns.
    let told = |seq: u64, role: &str| -> Vec<String> {
        script
            .requests_of(seq)
            .iter()
            .flat_map(|r| r["messages"].as_array().unwrap())
            .filter(|m| m["role"] == role)
            .map(|m| m["content"].as_str().unwrap_or("").to_string())
            .collect()
    };
    assert!(
        told(4, "tool").iter().any(|t| t.contains("outside")),
        "the refusal reached the model"
    );
    assert!(
        told(4, "tool")
            .iter()
            .any(|t| t.contains("must be a JSON object")),
        "the malformed call got an error back"
    );
    assert!(
        told(3, "user")
            .iter()
            .any(|t| t.contains("does not compile")),
        "the diagnostics were sent back"
    );
    assert_eq!(script.requests[0]["tools"].as_array().unwrap().len(), 7);
    // Nothing outside the trainer changed: not on the run's branch, not in any worktree, not in
    // the checkout.
    assert_eq!(
        sandbox.git(&[
            "diff",
            "--stat",
            "main",
            "autoresearch/llm",
            "--",
            ".",
            ":!crates/train/src"
        ]),
        ""
    );
    for dir in [vec![sandbox.repo.clone()], sandbox.worktrees("llm")].concat() {
        assert!(
            !std::fs::read_to_string(dir.join("crates/prepare/src/lib.rs"))
                .unwrap()
                .contains("hijacked"),
            "{}",
            dir.display()
        );
    }
}
