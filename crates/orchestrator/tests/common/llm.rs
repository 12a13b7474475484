//! A scripted OpenAI-compatible chat-completions server on 127.0.0.1: a real HTTP server that
//! answers each request with the next scripted reply and records what it was sent.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::process::Output;
use std::sync::{Arc, Mutex};

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use serde_json::{Value, json};

#[derive(Default)]
pub struct Script {
    pub replies: VecDeque<(u16, Value)>,
    pub requests: Vec<Value>,
    /// Files written just before answering request number N (from 0): something changing the
    /// repository behind the loop's back while the agent thinks.
    pub writes: Vec<(usize, PathBuf, String)>,
}

pub struct Server {
    pub base_url: String,
    pub script: Arc<Mutex<Script>>,
    _runtime: tokio::runtime::Runtime,
}

impl Server {
    pub fn start(script: Script) -> Server {
        let script = Arc::new(Mutex::new(script));
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let base_url = format!("http://{}/v1", listener.local_addr().unwrap());
        let app = axum::Router::new()
            .route("/v1/chat/completions", post(chat))
            .with_state(script.clone());
        runtime.spawn(async move { axum::serve(listener, app).await.unwrap() });
        Server {
            base_url,
            script,
            _runtime: runtime,
        }
    }
}

impl super::Sandbox {
    /// Runs the loop under `tag` for `experiments` with the LLM agent on `server`, a 2 s budget.
    pub fn run_with_llm(&self, server: &Server, tag: &str, experiments: u64, key: &str) -> Output {
        self.command(&[
            "--agent",
            "openai",
            "--model",
            "scripted",
            "--time-budget",
            "2",
            "--tag",
            tag,
            "--max-experiments",
            &experiments.to_string(),
        ])
        .env("OPENAI_BASE_URL", &server.base_url)
        .env("OPENAI_API_KEY", key)
        .output()
        .unwrap()
    }
}

async fn chat(
    State(script): State<Arc<Mutex<Script>>>,
    Json(request): Json<Value>,
) -> (StatusCode, Json<Value>) {
    let mut script = script.lock().unwrap();
    let n = script.requests.len();
    for (_, path, content) in script.writes.iter().filter(|(at, _, _)| *at == n) {
        std::fs::write(path, content).unwrap();
    }
    script.requests.push(request);
    let (status, body) = script.replies.pop_front().unwrap_or((
        400,
        json!({"error": {"message": "script exhausted", "type": "invalid_request_error"}}),
    ));
    (StatusCode::from_u16(status).unwrap(), Json(body))
}

/// An assistant turn calling `tool` with `args`.
pub fn call(tool: &str, args: Value) -> (u16, Value) {
    call_raw(tool, &args.to_string())
}

pub fn call_raw(tool: &str, arguments: &str) -> (u16, Value) {
    (
        200,
        json!({
            "id": "chatcmpl-1", "object": "chat.completion", "created": 0, "model": "scripted",
            "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {
                "role": "assistant", "content": null,
                "tool_calls": [{"id": format!("call-{tool}"), "type": "function", "function": {"name": tool, "arguments": arguments}}],
            }}],
            "usage": {"prompt_tokens": 90, "completion_tokens": 10, "total_tokens": 100},
        }),
    )
}

/// An edit of the trainer's main.rs.
pub fn edit(old: &str, new: &str) -> (u16, Value) {
    call(
        "edit_file",
        json!({"path": "crates/train/src/main.rs", "old_string": old, "new_string": new}),
    )
}

pub fn finish(description: &str) -> (u16, Value) {
    call("finish", json!({"description": description}))
}
