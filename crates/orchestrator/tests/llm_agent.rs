//! The loop with the LLM agent against a scripted OpenAI-compatible server on 127.0.0.1 (a real
//! HTTP server; the orchestrator talks to it through async-openai). One run walks through:
//!
//! - #1 an improving edit (the sandbox's baseline has a crippled learning rate) is kept;
//! - #2 a worse edit is discarded and preserved under the discarded ref;
//! - #3 a compile error is repaired after the diagnostics are sent back;
//! - an edit outside crates/train/src is refused and nothing outside changes (no change: not run);
//! - #4 a malformed tool call is survived, then a panicking trainer is a crash;
//! - #5 an endless loop in the trainer is killed at the limit and recorded as a crash;
//! - a 500 answer is retried; tokens are counted.

mod common;

use std::collections::VecDeque;

use common::llm::{Script, Server, call, call_raw, edit, finish};
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
        source.contains(GOOD) && source.contains(MAIN),
        "the script edits these lines"
    );
    // One seed: no noise floor, so any gain is kept (the noise rules are tested in trust.rs).
    sandbox.crippled_baseline("grace = 20\nnoise_seeds = 1\n");

    let server = Server::start(Script {
        replies: VecDeque::from([
            (
                500,
                json!({"error": {"message": "try again", "type": "server_error"}}),
            ),
            edit(CRIPPLED, GOOD),
            finish("restore the CPU learning-rate scale"),
            edit(GOOD, "const CPU_LR_SCALE: f64 = 0.0000001;"),
            finish("shrink the learning rate further"),
            edit(GOOD, "const CPU_LR_SCALE: f64 = 0.3 // no semicolon"),
            finish("a slightly larger learning rate"),
            // The repair round, after the diagnostics.
            edit(
                "const CPU_LR_SCALE: f64 = 0.3 // no semicolon",
                "const CPU_LR_SCALE: f64 = 0.3;",
            ),
            finish("a slightly larger learning rate (fixed)"),
            call(
                "write_file",
                json!({"path": "crates/prepare/src/lib.rs", "content": "// hijacked"}),
            ),
            finish("tried to change the evaluation"),
            call_raw("edit_file", "{not json"),
            edit(MAIN, &format!("{MAIN}\n    panic!(\"boom\");")),
            finish("panic at start"),
            edit(
                MAIN,
                &format!(
                    "{MAIN}\n    loop {{ std::thread::sleep(std::time::Duration::from_secs(1)); }}"
                ),
            ),
            finish("never return"),
        ]),
        ..Default::default()
    });
    let out = sandbox.run_with_llm(&server, "llm", 6, "sk-test-secret-key");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        !stderr.contains("sk-test-secret-key"),
        "the key leaked into the output"
    );

    let records = sandbox.records("llm");
    let status: Vec<&str> = records
        .iter()
        .map(|r| r["status"].as_str().unwrap())
        .collect();
    assert_eq!(status[..3], ["keep", "keep", "discard"], "{records:#?}");
    assert_ne!(
        status[3], "crash",
        "the repaired build ran: {:#?}",
        records[3]
    );
    assert_eq!(status[4..], ["crash", "crash"]);
    assert_eq!(
        records[2]["description"],
        "shrink the learning rate further"
    );
    let discarded = sandbox.git(&["rev-parse", "refs/autoresearch/llm/discarded/2"]);
    assert_eq!(discarded, records[2]["commit"].as_str().unwrap());
    assert!(
        sandbox.git(&["show", &discarded]).contains("0.0000001"),
        "the discarded change is kept aside"
    );
    assert!(
        records[4]["reason"].as_str().unwrap().contains("exit"),
        "{:#?}",
        records[4]
    );
    assert!(
        records[5]["reason"].as_str().unwrap().contains("timed out"),
        "{:#?}",
        records[5]
    );
    assert!(records[1]["agent_tokens"].as_u64().unwrap() >= 200);

    let requests = &server.script.lock().unwrap().requests;
    let tool_replies = |i: usize| {
        requests[i]["messages"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|m| m["role"] == "tool")
            .map(|m| m["content"].as_str().unwrap().to_string())
            .collect::<Vec<_>>()
    };
    let all_text: Vec<String> = (0..requests.len()).flat_map(tool_replies).collect();
    assert!(
        all_text.iter().any(|t| t.contains("outside")),
        "the refusal reached the model"
    );
    assert!(
        all_text.iter().any(|t| t.contains("must be a JSON object")),
        "the malformed call got an error back"
    );
    let repair_prompt = requests.iter().any(|r| {
        r["messages"].as_array().unwrap().iter().any(|m| {
            m["role"] == "user"
                && m["content"]
                    .as_str()
                    .unwrap_or("")
                    .contains("does not compile")
        })
    });
    assert!(repair_prompt, "the diagnostics were sent back");
    assert_eq!(requests[0]["tools"].as_array().unwrap().len(), 7);
    // Nothing outside the trainer changed.
    assert_eq!(
        sandbox.git(&[
            "diff",
            "--stat",
            "main",
            "HEAD",
            "--",
            ".",
            ":!crates/train/src"
        ]),
        ""
    );
    assert!(
        !std::fs::read_to_string(sandbox.repo.join("crates/prepare/src/lib.rs"))
            .unwrap()
            .contains("hijacked")
    );
}
