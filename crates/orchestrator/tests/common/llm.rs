//! A scripted OpenAI-compatible chat-completions server on 127.0.0.1: a real HTTP server that
//! answers each conversation from its experiment's own script and records what it was sent.
//!
//! A conversation's first user message is its brief, which opens with `# Experiment #N`; every
//! request of that conversation (repairs continue it, and a retried request is sent again whole)
//! carries that brief, and is answered with experiment N's next reply. So the script holds
//! whatever the number of workers whose conversations interleave. A proposal that changed
//! nothing is proposed again under the same number: its second conversation takes the replies
//! after its first's. The orchestrator's start-up probe (a request without tools) is answered
//! `ok` and counted apart.

use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Value, json};

/// An HTTP status and its JSON body.
pub type Reply = (u16, Value);

/// Something happening behind the loop's back while the agent thinks (a file written, a wait).
type Hook = Box<dyn FnOnce() + Send>;

#[derive(Default)]
pub struct Script {
    /// Each experiment's replies, by its number, in the order its requests come.
    replies: BTreeMap<u64, VecDeque<Reply>>,
    /// Run just before answering experiment N's request number K (from 0).
    hooks: Vec<(u64, usize, Hook)>,
    /// Every request, in the order they came, the probes left out.
    pub requests: Vec<Value>,
    /// Start-up probes answered.
    pub probes: usize,
    /// What the probe is answered instead of `ok`, when set (a wrong key, say).
    pub probe_reply: Option<Reply>,
}

impl Script {
    /// Experiment N's replies for each `(N, replies)`.
    pub fn new(experiments: impl IntoIterator<Item = (u64, Vec<Reply>)>) -> Script {
        Script {
            replies: experiments
                .into_iter()
                .map(|(n, replies)| (n, replies.into()))
                .collect(),
            ..Default::default()
        }
    }

    /// Runs `hook` just before answering experiment `experiment`'s request number `request`
    /// (from 0). It may block: the server answers other conversations meanwhile.
    pub fn before(
        mut self,
        experiment: u64,
        request: usize,
        hook: impl FnOnce() + Send + 'static,
    ) -> Script {
        self.hooks.push((experiment, request, Box::new(hook)));
        self
    }

    /// Experiment `n`'s requests, in order.
    pub fn requests_of(&self, n: u64) -> Vec<&Value> {
        self.requests
            .iter()
            .filter(|r| experiment(r) == Some(n))
            .collect()
    }
}

/// The experiment a request's conversation proposes: the number its brief opens with.
pub fn experiment(request: &Value) -> Option<u64> {
    let brief = request["messages"]
        .as_array()?
        .iter()
        .find(|m| m["role"] == "user")?["content"]
        .as_str()?;
    let rest = brief.strip_prefix("# Experiment #")?;
    rest[..rest.find(|c: char| !c.is_ascii_digit())?]
        .parse()
        .ok()
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
    /// Runs the loop under `tag` for `experiments` with the LLM agent on `server`, a 2 s budget
    /// (and as many workers as `AUTORESEARCH_WORKERS` says, 1 without it).
    pub fn run_with_llm(&self, server: &Server, tag: &str, experiments: u64, key: &str) -> Output {
        self.llm_command(server, tag, experiments, key)
            .output()
            .unwrap()
    }

    /// The command [`Self::run_with_llm`] runs, for a test to add flags to.
    pub fn llm_command(&self, server: &Server, tag: &str, experiments: u64, key: &str) -> Command {
        let mut command = self.command(&[
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
        ]);
        command
            .env("OPENAI_BASE_URL", &server.base_url)
            .env("OPENAI_API_KEY", key);
        command
    }

    /// Every worktree of the run `tag`, see [`worktrees`].
    pub fn worktrees(&self, tag: &str) -> Vec<PathBuf> {
        worktrees(&self.repo.join("runs").join(tag))
    }

    /// A hook that waits until experiment `seq` of run `tag` is recorded (at most 15 minutes,
    /// then the test's own checks fail): an agent still thinking when another worker's
    /// experiment ends.
    pub fn until_recorded(&self, tag: &str, seq: u64) -> impl FnOnce() + Send + 'static {
        let ledger = self.repo.join("runs").join(tag).join("experiments.jsonl");
        move || {
            let started = Instant::now();
            while started.elapsed() < Duration::from_secs(900) {
                let text = std::fs::read_to_string(&ledger).unwrap_or_default();
                let recorded = text
                    .lines()
                    .any(|line| serde_json::from_str::<Value>(line).is_ok_and(|r| r["seq"] == seq));
                if recorded {
                    return;
                }
                std::thread::sleep(Duration::from_millis(200));
            }
            eprintln!("scripted server: #{seq} was not recorded within 15 minutes");
        }
    }
}

/// Experiment `seq`'s record, which must be there once. Records are appended as experiments
/// end, which with several workers is not the order of their numbers.
pub fn record(records: &[Value], seq: u64) -> &Value {
    let mut found = records.iter().filter(|r| r["seq"] == seq);
    let record = found
        .next()
        .unwrap_or_else(|| panic!("#{seq} is not recorded: {records:#?}"));
    assert!(
        found.next().is_none(),
        "#{seq} is recorded twice: {records:#?}"
    );
    record
}

/// Every worktree of the run in `run` (one per worker): `worktree`, then `workers/<k>`.
pub fn worktrees(run: &Path) -> Vec<PathBuf> {
    let mut others: Vec<PathBuf> = std::fs::read_dir(run.join("workers"))
        .into_iter()
        .flatten()
        .map(|e| e.unwrap().path())
        .filter(|p| p.join(".git").exists())
        .collect();
    others.sort();
    [vec![run.join("worktree")], others].concat()
}

async fn chat(State(script): State<Arc<Mutex<Script>>>, Json(request): Json<Value>) -> Response {
    let (status, body) = answer(script, request).await;
    // A rate limit says when to come back, as OpenAI's does.
    let retry_after = (status == StatusCode::TOO_MANY_REQUESTS).then_some([("retry-after", "1")]);
    (status, retry_after, body).into_response()
}

async fn answer(script: Arc<Mutex<Script>>, request: Value) -> (StatusCode, Json<Value>) {
    if request["tools"].is_null() {
        let mut script = script.lock().unwrap();
        script.probes += 1;
        let (status, body) = script.probe_reply.clone().unwrap_or_else(|| content("ok"));
        return (StatusCode::from_u16(status).unwrap(), Json(body));
    }
    let Some(n) = experiment(&request) else {
        script.lock().unwrap().requests.push(request);
        return error("no `# Experiment #N` opens the brief");
    };
    let hook = {
        let mut script = script.lock().unwrap();
        let k = script.requests_of(n).len();
        let at = script.hooks.iter().position(|(e, r, _)| (*e, *r) == (n, k));
        at.map(|at| script.hooks.remove(at).2)
    };
    if let Some(hook) = hook {
        tokio::task::spawn_blocking(hook).await.unwrap();
    }
    let mut script = script.lock().unwrap();
    script.requests.push(request);
    match script.replies.get_mut(&n).and_then(VecDeque::pop_front) {
        Some((status, body)) => (StatusCode::from_u16(status).unwrap(), Json(body)),
        None => error(&format!("script exhausted for experiment #{n}")),
    }
}

fn error(message: &str) -> (StatusCode, Json<Value>) {
    (
        StatusCode::BAD_REQUEST,
        Json(json!({"error": {"message": message, "type": "invalid_request_error"}})),
    )
}

/// An assistant turn of text only, calling no tool.
pub fn content(text: &str) -> Reply {
    (
        200,
        json!({
            "id": "chatcmpl-1", "object": "chat.completion", "created": 0, "model": "scripted",
            "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": text}}],
            "usage": {"prompt_tokens": 90, "completion_tokens": 10, "total_tokens": 100},
        }),
    )
}

/// An assistant turn calling `tool` with `args`.
pub fn call(tool: &str, args: Value) -> Reply {
    call_raw(tool, &args.to_string())
}

pub fn call_raw(tool: &str, arguments: &str) -> Reply {
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
pub fn edit(old: &str, new: &str) -> Reply {
    call(
        "edit_file",
        json!({"path": "crates/train/src/main.rs", "old_string": old, "new_string": new}),
    )
}

pub fn finish(description: &str) -> Reply {
    call("finish", json!({"description": description}))
}

/// The forward pass the trainer hands `runtime::export` to trace for the protected evaluator.
pub const EXPORT: &str = "|tokens| model.forward(tokens)";

/// [`EXPORT`] with the exported logit of `token` raised by 40. The logits are capped to
/// (-15, 15), so the model then puts nearly all its probability on that token, whatever it
/// learned: a loss of at least 10 nats on every other target, where an untrained model has
/// ln 512 = 6.2. Such a change is worse than any parent, and so, with several workers, never
/// beats an older best it started from (which would re-apply it as another experiment and
/// shift the numbers a script answers). Tokens 0 to 3 are the reserved special tokens, which
/// the data never holds.
pub fn spoiled_export(token: u8) -> String {
    format!(
        "|tokens| {{\n        \
         let favoured = Tensor::arange(model.cfg.vocab_size, (Kind::Float, tokens.device()))\n            \
         .eq({token} as i64)\n            .to_kind(Kind::Float)\n            * 40.0;\n        \
         model.forward(tokens) + favoured\n    }}"
    )
}

/// The edit that makes the trainer export a model worse than any other, see [`spoiled_export`].
pub fn spoil(token: u8) -> Reply {
    edit(EXPORT, &spoiled_export(token))
}
