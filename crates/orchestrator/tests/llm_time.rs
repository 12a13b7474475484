//! The LLM agent's time bounds against a scripted server that is slow in each way a real one is,
//! one worker, replies streamed (the default), `proposal_timeout = 15` (so a request waits at most
//! a third of it, 5 s, for each part of its reply) and `outage_hours = 0.001` (3.6 s):
//!
//! - #1's first request gets nothing for 8 s: it is given up after 5 s and retried, and the change
//!   is made and kept;
//! - #2's reply is still streaming (one fragment every half second, 50 s in all) when the
//!   proposal's time runs out: it is cut then, not when the reply ends, and the proposal is
//!   recorded unfinished, out of time, not run;
//! - #3's endpoint answers 429 five times (Retry-After 1 s): it has failed for longer than the
//!   outage allows, so the run stops, saying `--resume` continues it, with #3 not recorded;
//! - resumed, #3 is proposed again (the model answers in prose, so it is recorded unfinished)
//!   and the run ends as asked.

mod common;

use std::time::Duration;

use common::llm::{Script, Server, content, edit, finish};
use common::{CRIPPLED, GOOD, SERIAL, Sandbox};
use serde_json::json;

#[test]
fn a_slow_endpoint_is_retried_cut_at_the_proposals_time_and_an_outage_ends_the_night() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let sandbox = Sandbox::new();
    sandbox.crippled_baseline(
        "grace = 60\nnoise_seeds = 1\nproposal_timeout = 15\noutage_hours = 0.001\n",
    );
    let rate_limited = (
        429,
        json!({"error": {"code": 429, "message": "slow down", "type": "rate_limit_error"}}),
    );
    let mut third = vec![rate_limited; 5];
    third.extend(vec![content("I would add a layer."); 3]);
    let script = Script::new([
        (
            1,
            vec![
                content("never sent"),
                edit(CRIPPLED, GOOD),
                finish("restore the CPU learning-rate scale"),
            ],
        ),
        (2, vec![content(&"a long, slow answer ".repeat(25))]),
        (3, third),
    ])
    .paced(1, 0, Duration::from_secs(8))
    .paced(2, 0, Duration::from_millis(500));
    let server = Server::start(script);
    let run = |extra: &[&str]| {
        let args = [
            &[
                "--agent",
                "openai",
                "--model",
                "scripted",
                "--time-budget",
                "2",
                "--tag",
                "slow",
                "--max-experiments",
                "4",
                "--workers",
                "1",
            ][..],
            extra,
        ]
        .concat();
        sandbox
            .command(&args)
            .env("OPENAI_BASE_URL", &server.base_url)
            .output()
            .unwrap()
    };

    let out = run(&[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("no answer within 5 s); retrying"),
        "#1's silent request was given up and retried: {stderr}"
    );
    assert!(
        stderr.contains("has failed for") && stderr.contains("--resume continues it"),
        "{stderr}"
    );
    let records = sandbox.records("slow");
    let record = |seq: u64| common::llm::record(&records, seq);
    assert_eq!(records.len(), 3, "#3 is not recorded: {records:#?}");
    assert_eq!(record(1)["status"], "keep", "{:#?}", record(1));
    assert_eq!(record(2)["status"], "crash", "{:#?}", record(2));
    let reason = record(2)["reason"].as_str().unwrap_or("");
    assert!(
        reason.contains("out of time (15 s), cut while the model was still replying"),
        "{reason}"
    );
    let thought = record(2)["think_seconds"].as_f64().unwrap();
    assert!(
        thought < 40.0,
        "cut at the proposal's 15 s, not when the 50-s reply ended: {thought} s"
    );
    {
        let script = server.script.lock().unwrap();
        assert_eq!(script.requests_of(1).len(), 3, "one retry");
        assert_eq!(script.requests_of(2).len(), 1, "a cut reply is not retried");
        assert_eq!(script.requests_of(3).len(), 5, "five attempts");
        assert!(
            script.requests.iter().all(|r| r["stream"] == true),
            "streamed by default"
        );
    }

    let out = run(&["--resume"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let records = sandbox.records("slow");
    assert_eq!(records.len(), 4, "{records:#?}");
    let third = common::llm::record(&records, 3);
    assert!(
        third["reason"]
            .as_str()
            .unwrap_or("")
            .contains("without a usable tool call"),
        "{third:#?}"
    );
    assert_eq!(
        server.script.lock().unwrap().probes,
        2,
        "a probe each start"
    );
}
