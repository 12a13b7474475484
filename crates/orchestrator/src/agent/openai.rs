//! The LLM agent: any OpenAI-compatible chat-completions endpoint, with function calling over
//! the six file and build tools (docs/orchestrator.md) and `history`, the run's past experiments. One conversation per
//! experiment, bounded in rounds; every bad call gets an error message back instead of ending
//! the experiment.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Result, bail};
use async_openai::Client;
use async_openai::config::OpenAIConfig;
use serde_json::{Value, json};

use super::{Proposal, history};
use crate::cargo_build::{Build, Builder, Rules};
use crate::config::Config;
use crate::ledger;
use crate::tools::Workspace;

/// Model turns per experiment, repairs included.
const MAX_ROUNDS: usize = 40;
/// Attempts per request on transport errors, 429 and 5xx, with doubling waits from 1 s.
const ATTEMPTS: u32 = 5;

#[derive(Clone)]
pub struct OpenAiAgent {
    client: Client<OpenAIConfig>,
    model: String,
    /// The `check` tool's build, in the sandbox, into `target_dir`.
    builder: Box<Builder>,
    target_dir: PathBuf,
    /// The run's directory, whose ledger the `history` tool reads.
    run_dir: PathBuf,
    /// autoresearch.toml's `noise_sigma`, which `history` states as the decisions use it.
    noise_sigma: Option<f64>,
    /// The current experiment's conversation; repairs continue it.
    messages: Vec<Value>,
    rounds: usize,
}

/// The outcome of one conversation turn sequence.
enum Turn {
    Finished(String),
    OutOfRounds,
}

impl OpenAiAgent {
    pub fn new(cfg: &Config, builder: Builder) -> OpenAiAgent {
        let mut config = OpenAIConfig::new().with_api_key(cfg.api_key.as_deref().unwrap_or("none"));
        if let Some(url) = &cfg.base_url {
            config = config.with_api_base(url.trim_end_matches('/'));
        }
        OpenAiAgent {
            client: Client::with_config(config),
            model: cfg.model.clone(),
            builder: Box::new(builder),
            target_dir: cfg.target_dir.clone(),
            run_dir: cfg.run_dir(),
            noise_sigma: cfg.noise_sigma,
            messages: Vec::new(),
            rounds: 0,
        }
    }

    /// A new conversation from `brief`; returns once the model calls `finish`.
    pub async fn propose(&mut self, brief: String, ws: &Workspace) -> Result<Proposal> {
        self.messages = vec![
            json!({"role": "system", "content": SYSTEM}),
            json!({"role": "user", "content": brief}),
        ];
        self.rounds = 0;
        self.converse(ws).await
    }

    /// Continues the conversation with the compiler's errors.
    pub async fn repair(&mut self, diagnostics: &str, ws: &Workspace) -> Result<Proposal> {
        self.messages.push(json!({"role": "user", "content": format!(
            "The trainer does not compile. Fix these errors, use `check` until it prints ok, then call `finish` again.\n\n{diagnostics}"
        )}));
        self.converse(ws).await
    }

    async fn converse(&mut self, ws: &Workspace) -> Result<Proposal> {
        let mut tokens = 0;
        let turn = loop {
            if self.rounds >= MAX_ROUNDS {
                break Turn::OutOfRounds;
            }
            self.rounds += 1;
            let response = self.request().await?;
            tokens += response["usage"]["total_tokens"].as_u64().unwrap_or(0);
            let message = &response["choices"][0]["message"];
            if !message.is_object() {
                bail!(
                    "the endpoint answered without a message: {}",
                    truncate(&response.to_string(), 300)
                );
            }
            let calls = message["tool_calls"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            self.messages.push(json!({
                "role": "assistant",
                "content": message["content"].as_str().unwrap_or(""),
                "tool_calls": if calls.is_empty() { Value::Null } else { Value::Array(calls.clone()) },
            }));
            if calls.is_empty() {
                self.messages.push(json!({"role": "user", "content": "Use the tools to make your change, then call `finish`."}));
                continue;
            }
            let mut finished = None;
            for call in &calls {
                let (reply, finish) = self.call_tool(call, ws).await;
                finished = finished.or(finish);
                self.messages.push(json!({"role": "tool", "tool_call_id": call["id"].as_str().unwrap_or(""), "content": reply}));
            }
            if let Some(description) = finished {
                break Turn::Finished(description);
            }
        };
        match turn {
            Turn::Finished(description) => Ok(Proposal {
                description,
                tokens,
            }),
            Turn::OutOfRounds => Ok(Proposal {
                description: "unfinished proposal (out of tool rounds)".into(),
                tokens,
            }),
        }
    }

    async fn request(&self) -> Result<Value> {
        let request = json!({"model": self.model, "messages": self.messages, "tools": tool_specs(), "stream": false});
        let mut wait = Duration::from_secs(1);
        for attempt in 1..=ATTEMPTS {
            match self
                .client
                .chat()
                .create_byot::<_, Value>(request.clone())
                .await
            {
                Ok(response) => return Ok(response),
                Err(e) if attempt < ATTEMPTS && retryable(&e) => {
                    eprintln!(
                        "LLM request failed ({}); retrying in {} s",
                        redact(&e.to_string()),
                        wait.as_secs()
                    );
                    tokio::time::sleep(wait).await;
                    wait *= 2;
                }
                Err(e) => bail!(
                    "the LLM endpoint failed: {}. Check OPENAI_BASE_URL, OPENAI_API_KEY and --model, or use --agent offline",
                    redact(&e.to_string())
                ),
            }
        }
        unreachable!("the last attempt returns")
    }

    /// The `check` tool: the build's errors, else the rule tests' failures, else "ok".
    async fn check(&self, repo: &Path) -> String {
        let checked = match self.builder.trainer(repo, &self.target_dir).await {
            Ok(Build::Built { .. }) => self.builder.rule_tests(repo, &self.target_dir).await,
            Ok(Build::Failed { diagnostics }) => return truncate(&diagnostics, 8000),
            Err(e) => Err(e),
        };
        match checked {
            Ok(Rules::Hold) => "ok".into(),
            Ok(Rules::Broken(report)) => format!(
                "it builds, but breaks the trainer's rule tests (a change that breaks them is \
                 never kept):\n{}",
                truncate(&report, 8000)
            ),
            Err(e) => format!("error: {e:#}"),
        }
    }

    /// Runs one tool call; the reply for the model, and the description if it was `finish`.
    async fn call_tool(&self, call: &Value, ws: &Workspace) -> (String, Option<String>) {
        let name = call["function"]["name"].as_str().unwrap_or("");
        let args: Value = match call["function"]["arguments"]
            .as_str()
            .map(serde_json::from_str)
        {
            Some(Ok(v @ Value::Object(_))) => v,
            _ => {
                return (
                    format!("error: the arguments of `{name}` must be a JSON object"),
                    None,
                );
            }
        };
        let arg = |key: &str| {
            args[key]
                .as_str()
                .ok_or_else(|| format!("error: `{name}` needs a string argument `{key}`"))
        };
        let reply = match name {
            "list_files" => ws.list_files(),
            "read_file" => arg("path").and_then(|p| ws.read_file(p)),
            "edit_file" => {
                arg("path").and_then(|p| ws.edit_file(p, arg("old_string")?, arg("new_string")?))
            }
            "write_file" => arg("path").and_then(|p| ws.write_file(p, arg("content")?)),
            "check" => Ok(self.check(ws.repo()).await),
            "history" => ledger::read_records(&self.run_dir)
                .map(|records| {
                    history(&records, ledger::noise_in_force(&records, self.noise_sigma))
                })
                .map_err(|e| format!("error: {e:#}")),
            "finish" => {
                return match arg("description") {
                    Ok(d) => (
                        "finished".into(),
                        Some(d.lines().next().unwrap_or("").trim().to_string()),
                    ),
                    Err(e) => (e, None),
                };
            }
            other => Err(format!(
                "error: there is no tool `{other}`; use list_files, read_file, edit_file, write_file, check, history or finish"
            )),
        };
        (
            reply.unwrap_or_else(|e| {
                if e.starts_with("error") {
                    e
                } else {
                    format!("error: {e}")
                }
            }),
            None,
        )
    }
}

fn retryable(e: &async_openai::error::OpenAIError) -> bool {
    use async_openai::error::OpenAIError;
    match e {
        OpenAIError::Reqwest(_) => true,
        OpenAIError::ApiError(api) => {
            api.status_code.as_u16() == 429 || api.status_code.is_server_error()
        }
        _ => false,
    }
}

/// Error texts can quote request headers; the key never leaves this process.
fn redact(text: &str) -> String {
    match std::env::var("OPENAI_API_KEY") {
        Ok(key) if key.len() >= 4 => text.replace(&key, "[redacted]"),
        _ => text.to_string(),
    }
}

fn truncate(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}\n[... {} more bytes]", &text[..end], text.len() - end)
}

fn tool_specs() -> Value {
    let tool = |name: &str, description: &str, params: &[&str]| {
        let properties: serde_json::Map<String, Value> = params
            .iter()
            .map(|p| (p.to_string(), json!({"type": "string"})))
            .collect();
        json!({"type": "function", "function": {
            "name": name, "description": description,
            "parameters": {"type": "object", "properties": properties, "required": params},
        }})
    };
    json!([
        tool(
            "list_files",
            "List the repository's files; the ones you may edit are marked.",
            &[]
        ),
        tool(
            "read_file",
            "Read a file (path relative to the repository root).",
            &["path"]
        ),
        tool(
            "edit_file",
            "Replace the one exact occurrence of old_string with new_string in a file under crates/train/src/.",
            &["path", "old_string", "new_string"]
        ),
        tool(
            "write_file",
            "Create or overwrite a file under crates/train/src/.",
            &["path", "content"]
        ),
        tool(
            "check",
            "Build the trainer and run its rule tests (crates/train/rules.rs, fixed: causality, shapes, every parameter trained, the loss falls, the export loads and matches the model); returns the compiler's errors, the failing tests, or ok.",
            &[]
        ),
        tool(
            "history",
            "The run so far: the best kept experiments and the latest ones, with val_bpb, delta against the best before, and the keep rule with the noise floor.",
            &[]
        ),
        tool(
            "finish",
            "End your proposal with a one-line description of the change.",
            &["description"]
        ),
    ])
}

const SYSTEM: &str = "You are an autonomous ML researcher improving a GPT trainer written in Rust \
(crates/train/src, on libtorch through tch). Each experiment you make ONE change with the tools; \
the orchestrator then trains it for a fixed wall-clock budget and keeps it only if validation \
bits per byte (val_bpb, lower is better) improves. You may edit only files under crates/train/src/. \
Never change the evaluation (the prepare crate), the manifests, or the trainer's contract (a causal \
model; stop at the budget; one JSON result line on stdout). Run `check` before `finish` and fix \
every compiler error. Call `history` to see which experiments were kept, discarded or crashed \
and by how much, so you build on what worked and do not repeat what failed. Finish with a \
one-line description of what you changed.";
