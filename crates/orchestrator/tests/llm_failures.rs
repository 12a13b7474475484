//! The LLM agent against a scripted server that fails in each way a real one does, one worker,
//! replies unstreamed (`stream = false`; tests/llm_agent.rs and llm_time.rs stream them):
//!
//! - #1 meets llama.cpp's context overflow (a numeric `code`, the context it has), a rate limit
//!   with Retry-After and a 503, and still makes its change: the brief is rebuilt to the stated
//!   context and every request asks for a bounded reply;
//! - #2 answers in prose, calls a tool that does not exist and sends arguments that do not parse:
//!   each gets a correction, then the proposal ends unfinished and is recorded, not run;
//! - #3's endpoint fails every attempt: recorded as an LLM failure with the server's message;
//! - #4 runs as usual: the night went on.
//!
//! An endpoint that refuses every request at once (a 400 to each) is asked again after pauses
//! that grow with the outage, until `outage_hours` ends the run: a few records, not hundreds.
//!
//! A wrong key (401) or a model the server does not have (404, as OpenAI and vLLM answer; llama.cpp
//! answers any name, see tests/llm_real.rs) stops the run at start, before the baseline.

mod common;

use common::llm::{Script, Server, call, call_raw, content, edit, finish, spoil};
use common::{CRIPPLED, GOOD, SERIAL, Sandbox};
use serde_json::{Value, json};

fn overflow(n_ctx: u64) -> (u16, Value) {
    (
        400,
        json!({"error": {"code": 400, "message": "request (11916 tokens) exceeds the available context size (8192 tokens), try increasing it",
            "type": "exceed_context_size_error", "n_prompt_tokens": 11916, "n_ctx": n_ctx}}),
    )
}

fn failing(status: u16, message: &str) -> (u16, Value) {
    (
        status,
        json!({"error": {"code": status, "message": message, "type": "server_error"}}),
    )
}

#[test]
fn every_failure_of_the_llm_is_survived_and_recorded() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let sandbox = Sandbox::new();
    sandbox.crippled_baseline("grace = 60\nnoise_seeds = 1\nstream = false\n");
    let server = Server::start(Script::new([
        (
            1,
            vec![
                overflow(4096),
                failing(429, "slow down"),
                failing(503, "loading the model"),
                edit(CRIPPLED, GOOD),
                finish("restore the CPU learning-rate scale"),
            ],
        ),
        (
            2,
            vec![
                content("I would make the model bigger."),
                call("summon", json!({})),
                call_raw("edit_file", "{not json"),
            ],
        ),
        (3, vec![failing(500, "the server is on fire"); 5]),
        (4, vec![spoil(0), finish("favour one token")]),
    ]));
    let out = sandbox
        .llm_command(&server, "fail", 5, "sk-test")
        .args(["--workers", "1"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");

    let records = sandbox.records("fail");
    let record = |seq: u64| common::llm::record(&records, seq);
    let status = |seq: u64| record(seq)["status"].as_str().unwrap().to_string();
    assert_eq!(
        (0..5).map(status).collect::<Vec<_>>(),
        ["keep", "keep", "crash", "crash", "discard"],
        "{records:#?}"
    );
    let reason = |seq: u64| record(seq)["reason"].as_str().unwrap_or("").to_string();
    assert!(
        reason(2).contains("without a usable tool call"),
        "{:#?}",
        record(2)
    );
    assert!(
        reason(3).contains("LLM failure") && reason(3).contains("the server is on fire"),
        "{:#?}",
        record(3)
    );
    assert_eq!(
        record(1)["description"],
        "restore the CPU learning-rate scale"
    );

    let script = server.script.lock().unwrap();
    assert_eq!(script.probes, 1, "one probe at start");
    assert!(
        script
            .requests
            .iter()
            .all(|r| r["max_tokens"].as_u64().is_some() && r["stream"] == false),
        "every request bounds its reply, and asks for it whole"
    );
    let brief = |r: &Value| r["messages"][1]["content"].as_str().unwrap().len();
    let first = script.requests_of(1);
    assert_eq!(first.len(), 5);
    assert!(
        brief(first[1]) < brief(first[0]) && brief(first[1]) <= 4096 * 3 / 2,
        "the brief was rebuilt to the stated context: {} then {} bytes",
        brief(first[0]),
        brief(first[1])
    );
    let told: Vec<String> = script
        .requests_of(2)
        .iter()
        .filter_map(|r| r["messages"].as_array().unwrap().last())
        .map(|m| m["content"].as_str().unwrap_or("").to_string())
        .collect();
    assert!(
        told[1..].iter().all(|t| t.contains("<tool_call>")),
        "each miss got the correction: {told:#?}"
    );
    assert_eq!(
        script.requests_of(3).len(),
        5,
        "five attempts, then recorded"
    );
}

#[test]
fn a_wrong_key_or_model_stops_the_run_before_the_baseline() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let refusals = [
        (
            failing(401, "Incorrect API key provided"),
            "HTTP 401: Incorrect API key provided",
        ),
        (
            (
                404,
                json!({"error": {"message": "The model `scripted` does not exist or you do not have access to it.",
                    "type": "invalid_request_error", "code": "model_not_found"}}),
            ),
            "HTTP 404: The model `scripted` does not exist",
        ),
    ];
    for (refusal, said) in refusals {
        let sandbox = Sandbox::new();
        let mut script = Script::new([]);
        script.probe_reply = Some(refusal);
        let server = Server::start(script);
        let out = sandbox.run_with_llm(&server, "refused", 2, "sk-wrong");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success());
        assert!(
            stderr.contains(said)
                && stderr.contains("OPENAI_API_KEY")
                && stderr.contains("--model"),
            "{stderr}"
        );
        assert!(sandbox.records("refused").is_empty(), "nothing ran");
    }
}

#[test]
fn an_endpoint_that_refuses_every_request_is_asked_less_often_until_the_outage_ends_the_run() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let sandbox = Sandbox::new();
    // 18 s of outage: #1 fails at once, #2 and #3 after 5 s each, #4 after 8 s, at its end.
    sandbox
        .crippled_baseline("grace = 60\nnoise_seeds = 1\nstream = false\noutage_hours = 0.005\n");
    let server = Server::start(Script::new([]));
    let out = sandbox
        .llm_command(&server, "refusing", 100, "sk-test")
        .args(["--workers", "1"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "the outage ends the run: {stderr}");
    assert!(
        stderr.contains("has failed for") && stderr.contains("--resume continues it"),
        "{stderr}"
    );
    assert!(stderr.contains("asking again in 5 s"), "{stderr}");
    let records = sandbox.records("refusing");
    let crashes: Vec<&Value> = records[1..].iter().collect();
    assert!(
        (2..=4).contains(&crashes.len()),
        "a few records over 18 s, not one per round trip: {} of them",
        crashes.len()
    );
    for crash in crashes {
        assert_eq!(crash["status"], "crash");
        let reason = crash["reason"].as_str().unwrap_or("");
        assert!(reason.contains("script exhausted"), "{reason}");
    }
    let requests = server.script.lock().unwrap().requests.len();
    assert!(requests <= 5, "{requests} requests");
}
