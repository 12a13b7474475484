//! The LLM agent against a real OpenAI-compatible server: llama.cpp's own (the xllamacpp wheel)
//! serving SmolLM2-135M-Instruct, as scripts/setup-llm.sh installs them into .venv/ (see
//! scripts/llm-server.py). They check shapes and outcomes, never the small model's words:
//!
//! - the protocol: the agent's client learns the context from the server's model list; gets a
//!   tool call back parsed, streamed and not (the model calls the tool it is offered when sampling
//!   greedily and shown the `<tool_call>` block to write), and content-only replies that keep to
//!   `max_tokens`; cuts a streamed reply still coming at its deadline; reads llama.cpp's
//!   context-overflow error (a numeric `code`) as an overflow with the context it states, streamed
//!   and not, and a wrong URL as a misconfiguration. llama.cpp answers any model name with its one
//!   model, so a wrong name is not caught here (tests/llm_failures.rs covers a 404);
//! - the loop: `--agent openai` with a 2,048-token context for two experiments: no request
//!   overflows, each experiment is recorded whatever the model does (printed: the tool calls it
//!   made and how the proposal ended), the run ends as asked.
//!
//! Where setup could not install the wheels they skip, printing why (.venv/llm-unavailable);
//! anywhere else a missing server is a failure.

mod common;

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{SERIAL, Sandbox};
use orchestrator::agent::{Endpoint, EndpointError, Wait};
use serde_json::{Value, json};

/// llama.cpp's server on a free port, killed when dropped.
struct LlamaServer {
    child: Child,
    base_url: String,
    log: PathBuf,
}

impl LlamaServer {
    /// None (after saying why) where setup recorded that the wheels cannot install here. Its log
    /// is named after the `test`.
    fn start(context: u64, test: &str) -> Option<LlamaServer> {
        let venv = prepare::workspace_root().join(".venv");
        let python = venv.join("bin/python");
        let installed = Command::new(&python)
            .args(["-c", "import xllamacpp"])
            .status()
            .is_ok_and(|s| s.success());
        if !installed {
            let why = std::fs::read_to_string(venv.join("llm-unavailable")).unwrap_or_else(|_| {
                panic!("xllamacpp is not in .venv/: run scripts/setup-llm.sh (or scripts/setup.sh)")
            });
            eprintln!("SKIPPED: no llama.cpp server here: {why}");
            return None;
        }
        let log = std::env::temp_dir().join(format!("llm-real-{}-{test}.log", std::process::id()));
        let mut child = Command::new(python)
            .arg(prepare::workspace_root().join("scripts/llm-server.py"))
            .args(["--port", "0", "--ctx", &context.to_string()])
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let address = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| {
                panic!(
                    "the server did not start: {line:?}\n{}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                )
            })
            .to_string();
        Some(LlamaServer {
            child,
            base_url: format!("{address}/v1"),
            log,
        })
    }
}

impl Drop for LlamaServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Runtime::new().unwrap()
}

#[test]
fn the_agents_client_speaks_to_llama_cpp() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let Some(server) = LlamaServer::start(2048, "protocol") else {
        return;
    };
    let whole = Endpoint::new(&server.base_url, None, false);
    let streamed = Endpoint::new(&server.base_url, None, true);
    let minute = || Wait::at_most(Duration::from_secs(60));
    runtime().block_on(async {
        assert_eq!(whole.context_tokens("smollm2").await, Some(2048));

        // The model calls the tool it is offered when sampling greedily and shown the block.
        let tools = json!([{"type": "function", "function": {"name": "read_file",
            "description": "Read a file", "parameters": {"type": "object",
            "properties": {"path": {"type": "string"}}, "required": ["path"]}}}]);
        let block = "<tool_call>\n{\"name\": \"read_file\", \"arguments\": {\"path\": \"crates/train/src/main.rs\"}}\n</tool_call>";
        let ask = json!({"model": "smollm2", "max_tokens": 60, "temperature": 0, "tools": tools,
            "messages": [{"role": "user", "content": format!("Reply with exactly this and nothing else:\n{block}")}]});
        for endpoint in [&whole, &streamed] {
            let reply = endpoint.chat(&ask, minute()).await.unwrap();
            let choice = &reply["choices"][0];
            let calls = choice["message"]["tool_calls"]
                .as_array()
                .unwrap_or_else(|| panic!("no tool call: {reply:#}"));
            assert_eq!(calls.len(), 1, "{reply:#}");
            assert_eq!(choice["finish_reason"], "tool_calls", "{reply:#}");
            assert!(calls[0]["id"].is_string(), "{reply:#}");
            assert_eq!(calls[0]["function"]["name"], "read_file", "{reply:#}");
            let arguments: Value =
                serde_json::from_str(calls[0]["function"]["arguments"].as_str().unwrap()).unwrap();
            assert!(arguments["path"].is_string(), "{reply:#}");
            assert!(reply["usage"]["total_tokens"].as_u64().unwrap() > 0);
        }

        // Content only, bounded by max_tokens.
        let say = json!({"model": "smollm2", "max_tokens": 12,
            "messages": [{"role": "user", "content": "Say something about the sea."}]});
        for endpoint in [&whole, &streamed] {
            let reply = endpoint.chat(&say, minute()).await.unwrap();
            let message = &reply["choices"][0]["message"];
            assert!(message["content"].is_string(), "{reply:#}");
            assert!(message["tool_calls"].is_null(), "{reply:#}");
            let written = reply["usage"]["completion_tokens"].as_u64().unwrap();
            assert!(written <= 12, "max_tokens holds: {reply:#}");
        }

        // A streamed reply still coming at its deadline is cut then (`ignore_eos`, llama.cpp's
        // own, makes it long: 1,500 tokens take half a minute here).
        let long = json!({"model": "smollm2", "max_tokens": 1500, "ignore_eos": true,
            "messages": [{"role": "user", "content": "Tell a long story."}]});
        let started = Instant::now();
        let wait = Wait {
            patience: Duration::from_secs(60),
            deadline: started + Duration::from_secs(2),
        };
        match streamed.chat(&long, wait).await {
            Err(EndpointError::OutOfTime) => {}
            other => panic!("not cut at its deadline: {other:?}"),
        }
        assert!(started.elapsed() < Duration::from_secs(15));

        let too_long = json!({"model": "smollm2", "max_tokens": 8,
            "messages": [{"role": "user", "content": "word ".repeat(4000)}]});
        for endpoint in [&whole, &streamed] {
            match endpoint.chat(&too_long, minute()).await {
                Err(EndpointError::Status {
                    status: 400,
                    overflow: Some(Some(2048)),
                    ..
                }) => {}
                other => panic!("not an overflow stating 2048 tokens: {other:?}"),
            }
        }

        // llama.cpp serves its one model whatever the name asked for, so a wrong name is not
        // caught here (tests/llm_failures.rs has a server answer 404, as OpenAI's and vLLM's do).
        let any_name = json!({"model": "no-such-model", "max_tokens": 2,
            "messages": [{"role": "user", "content": "hi"}]});
        assert!(whole.chat(&any_name, minute()).await.is_ok());

        let wrong = Endpoint::new(&format!("{}/nope", server.base_url), None, true);
        let error = wrong.chat(&any_name, minute()).await.unwrap_err();
        assert!(error.misconfigured(), "{error:?}");
    });
}

#[test]
fn a_night_on_a_small_local_model_goes_on_whatever_it_says() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let Some(server) = LlamaServer::start(2048, "night") else {
        return;
    };
    let sandbox = Sandbox::new();
    sandbox.crippled_baseline(
        "grace = 60\nnoise_seeds = 1\ncontext_tokens = 2048\nproposal_timeout = 150\n",
    );
    let out = sandbox
        .command(&[
            "--agent",
            "openai",
            "--model",
            "smollm2",
            "--time-budget",
            "2",
            "--tag",
            "local",
            "--max-experiments",
            "3",
            "--workers",
            "1",
        ])
        .env("OPENAI_BASE_URL", &server.base_url)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(!stderr.contains("overflowed the context"), "{stderr}");
    let records = sandbox.records("local");
    assert_eq!(records.len(), 3, "{records:#?}");
    for seq in 1..3 {
        let record = common::llm::record(&records, seq);
        eprintln!(
            "#{seq} {} ({} tokens, {:.0} s thinking): {} {}",
            record["status"],
            record["agent_tokens"],
            record["think_seconds"].as_f64().unwrap_or(0.0),
            record["description"],
            record["reason"]
        );
    }
    eprintln!("llama.cpp's log: {}", server.log.display());
}
