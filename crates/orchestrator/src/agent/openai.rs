//! The LLM agent: any OpenAI-compatible chat-completions endpoint, with function calling over
//! the six file and build tools (docs/orchestrator.md) and `history`, the run's past experiments.
//! One conversation per experiment, bounded in rounds and in time, and sized to the model's
//! context: the brief fits with room for the reply, every tool result is cut to its share, and
//! the conversation is compacted each round (the brief, a line per earlier tool call, the latest
//! file read, the last round), so that late rounds cost what early ones did. A bad call or a
//! reply without one gets a short correction; the endpoint's failures are retried, and in the
//! end recorded rather than ending the night.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use serde_json::{Value, json};

use super::brief::{BYTES_PER_TOKEN, cut};
use super::endpoint::{Endpoint, EndpointError};
use super::{Proposal, history};
use crate::cargo_build::{Build, Builder, Rules};
use crate::config::Config;
use crate::ledger;
use crate::text::one_line;
use crate::tools::Workspace;

/// Model turns per experiment, repairs included.
const MAX_ROUNDS: usize = 40;
/// Replies in a row without a usable tool call before the proposal ends with no change.
const MAX_MISSES: u32 = 3;
/// Attempts per request on timeouts, transport errors, 429 and 5xx.
const ATTEMPTS: u32 = 5;
/// Earlier tool calls the compacted conversation lists, a line each.
const PAST_CALLS: usize = 20;
/// Times a request that overflowed the context is shrunk and sent again.
const SHRINKS: u32 = 3;
/// The context assumed when neither autoresearch.toml nor the server states one.
pub const DEFAULT_CONTEXT: u64 = 32_768;
/// The longest reply asked for (`max_tokens`); a quarter of the context where that is less.
const MAX_REPLY: u64 = 2048;
/// The longest one request may take; a local model on a CPU reads about 30 tokens a second.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(900);
/// What a reply without a usable tool call gets back. Small models call tools when asked for a
/// `<tool_call>` block in so many words.
const CORRECTION: &str = "Reply with exactly one tool call, as a <tool_call> block, e.g.\n\
<tool_call>\n{\"name\": \"read_file\", \"arguments\": {\"path\": \"crates/train/src/main.rs\"}}\n</tool_call>\n\
The tools: list_files, read_file, edit_file, write_file, check, history, finish (with a \
one-line description once your change is made).";

#[derive(Clone)]
pub struct OpenAiAgent {
    endpoint: Endpoint,
    model: String,
    /// The `check` tool's build, in the sandbox, into `target_dir`.
    builder: Box<Builder>,
    target_dir: PathBuf,
    /// The run's directory, whose ledger the `history` tool reads.
    run_dir: PathBuf,
    /// autoresearch.toml's `noise_sigma`, which `history` states as the decisions use it.
    noise_sigma: Option<f64>,
    /// The model's context in tokens: the setting, else what the server states (see `connect`).
    context: u64,
    context_setting: Option<u64>,
    proposal_timeout: Duration,
    /// How long the endpoint may keep failing before the run stops.
    outage: Duration,
    /// Since when every request has failed; None while it answers.
    failing_since: Option<Instant>,
    /// The current experiment's conversation; repairs continue it.
    talk: Conversation,
}

/// One experiment's conversation, as compacted: what each request sends.
#[derive(Clone, Default)]
struct Conversation {
    brief: String,
    /// One line per tool call before the last round.
    done: Vec<String>,
    /// The latest file read, when the last round did not read it.
    latest_read: Option<String>,
    /// The file the last round read.
    read_in_last: Option<String>,
    /// The last round: the model's reply and what answered it.
    last: Vec<Value>,
    rounds: usize,
    /// Replies in a row without a usable tool call.
    misses: u32,
    deadline: Option<Instant>,
}

/// How a conversation ended.
enum Turn {
    Finished(String),
    /// Without a change; why, for the record.
    Gave(String),
}

impl OpenAiAgent {
    pub fn new(cfg: &Config, builder: Builder) -> OpenAiAgent {
        let base_url = cfg
            .base_url
            .as_deref()
            .unwrap_or("https://api.openai.com/v1");
        OpenAiAgent {
            endpoint: Endpoint::new(base_url, cfg.api_key.clone()),
            model: cfg.model.clone(),
            builder: Box::new(builder),
            target_dir: cfg.target_dir.clone(),
            run_dir: cfg.run_dir(),
            noise_sigma: cfg.noise_sigma,
            context: cfg.context_tokens.unwrap_or(DEFAULT_CONTEXT),
            context_setting: cfg.context_tokens,
            proposal_timeout: Duration::from_secs_f64(cfg.proposal_timeout),
            outage: Duration::from_secs_f64(cfg.outage),
            failing_since: None,
            talk: Conversation::default(),
        }
    }

    /// At start, before the baseline: learns the model's context, and stops the run at once on
    /// a wrong key, model or URL. An endpoint that does not answer yet is only reported: the run
    /// goes on and records each proposal it fails.
    pub async fn connect(&mut self) -> Result<()> {
        let (context, from) = match self.context_setting {
            Some(n) => (n, "autoresearch.toml's context_tokens"),
            None => match self.endpoint.context_tokens(&self.model).await {
                Some(n) => (n, "the server"),
                None => (
                    DEFAULT_CONTEXT,
                    "the default; set context_tokens to change it",
                ),
            },
        };
        self.context = context;
        eprintln!(
            "LLM: model {}, context {context} tokens ({from})",
            self.model
        );
        let probe = json!({"model": self.model, "max_tokens": 1,
            "messages": [{"role": "user", "content": "Say ok."}]});
        match self.endpoint.chat(&probe, REQUEST_TIMEOUT).await {
            Ok(_) => Ok(()),
            Err(e) if e.misconfigured() => bail!(
                "the LLM endpoint refused the model {:?}: {e}. Check OPENAI_BASE_URL, \
                 OPENAI_API_KEY and --model, or use --agent offline",
                self.model
            ),
            Err(e) => {
                eprintln!(
                    "warning: the LLM endpoint did not answer ({e}); the run goes on, and \
                     records each proposal it fails"
                );
                Ok(())
            }
        }
    }

    /// A new conversation from the brief `brief(max_bytes)` builds; returns once the model calls
    /// `finish`, or gives up (a proposal that is not finished, which changes nothing).
    pub async fn propose(
        &mut self,
        brief: &dyn Fn(usize) -> String,
        ws: &Workspace,
    ) -> Result<Proposal> {
        self.talk = Conversation {
            brief: brief(self.shares().0),
            deadline: Some(Instant::now() + self.proposal_timeout),
            ..Conversation::default()
        };
        self.converse(Some(brief), ws).await
    }

    /// Continues the conversation with the compiler's errors.
    pub async fn repair(&mut self, diagnostics: &str, ws: &Workspace) -> Result<Proposal> {
        let (_, tool_bytes) = self.shares();
        self.talk.last.push(json!({"role": "user", "content": format!(
            "The trainer does not compile. Fix these errors, use `check` until it prints ok, then call `finish` again.\n\n{}",
            cut(diagnostics, tool_bytes, "the compiler's errors")
        )}));
        self.talk.misses = 0;
        self.talk.deadline = Some(Instant::now() + self.proposal_timeout);
        self.converse(None, ws).await
    }

    /// The bytes of the brief, and of each of the latest file read and the last round's tool
    /// results, that fit in the context beside the system prompt, the tools' specifications, the
    /// reply asked for and the compacted past.
    fn shares(&self) -> (usize, usize) {
        let overhead =
            (SYSTEM.len() + tool_specs().to_string().len() + CORRECTION.len()) / BYTES_PER_TOKEN;
        let left = self
            .context
            .saturating_sub(self.reply_tokens() + overhead as u64)
            .max(256) as usize
            * BYTES_PER_TOKEN;
        (left / 2, left / 5)
    }

    fn reply_tokens(&self) -> u64 {
        MAX_REPLY.min(self.context / 4)
    }

    async fn converse(
        &mut self,
        brief: Option<&dyn Fn(usize) -> String>,
        ws: &Workspace,
    ) -> Result<Proposal> {
        let mut tokens = 0;
        let turn = self.turns(brief, ws, &mut tokens).await;
        let turn = match turn {
            Ok(turn) => {
                self.failing_since = None;
                turn
            }
            Err(e) => {
                let since = *self.failing_since.get_or_insert_with(Instant::now);
                if since.elapsed() >= self.outage {
                    bail!(
                        "the LLM endpoint has failed for {:.1} hours, the latest time with: {e}. \
                         The run stops here; --resume continues it",
                        since.elapsed().as_secs_f64() / 3600.0
                    );
                }
                Turn::Gave(format!("LLM failure: {e}"))
            }
        };
        Ok(match turn {
            Turn::Finished(description) => Proposal {
                description,
                tokens,
                finished: true,
            },
            Turn::Gave(why) => Proposal {
                description: why,
                tokens,
                finished: false,
            },
        })
    }

    /// The conversation's rounds until `finish` or a limit; Err when the endpoint fails.
    async fn turns(
        &mut self,
        brief: Option<&dyn Fn(usize) -> String>,
        ws: &Workspace,
        tokens: &mut u64,
    ) -> Result<Turn, EndpointError> {
        let deadline = self.talk.deadline.unwrap_or_else(Instant::now);
        loop {
            if self.talk.rounds >= MAX_ROUNDS {
                return Ok(Turn::Gave(format!(
                    "no change: out of tool rounds ({MAX_ROUNDS})"
                )));
            }
            if Instant::now() >= deadline {
                return Ok(Turn::Gave(format!(
                    "no change: out of time ({} s)",
                    self.proposal_timeout.as_secs()
                )));
            }
            self.talk.rounds += 1;
            let response = self.request(brief, deadline).await?;
            *tokens += response["usage"]["total_tokens"].as_u64().unwrap_or(0);
            let message = &response["choices"][0]["message"];
            let calls = message["tool_calls"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            let content = message["content"].as_str().unwrap_or("");
            let mut reply = json!({"role": "assistant", "content": one_line(content, 1000)});
            if !calls.is_empty() {
                reply["tool_calls"] = Value::Array(calls.clone());
            }
            let mut round = vec![reply];
            let mut usable = false;
            let mut read = None;
            let mut finished = None;
            let (_, tool_bytes) = self.shares();
            for call in &calls {
                let outcome = self.call_tool(call, ws).await;
                usable |= outcome.usable;
                finished = finished.or(outcome.finish);
                let text = cut(&outcome.reply, tool_bytes / calls.len(), "this result");
                if outcome.read {
                    read = Some(text.clone());
                }
                self.talk.done.push(outcome.summary);
                round.push(json!({"role": "tool", "tool_call_id": call["id"].as_str().unwrap_or(""), "content": text}));
            }
            if let Some(description) = finished {
                return Ok(Turn::Finished(description));
            }
            if usable {
                self.talk.misses = 0;
            } else {
                self.talk.misses += 1;
                if self.talk.misses >= MAX_MISSES {
                    return Ok(Turn::Gave(format!(
                        "no change: the model answered {MAX_MISSES} times in a row without a \
                         usable tool call"
                    )));
                }
                round.push(json!({"role": "user", "content": CORRECTION}));
            }
            // The round before this one becomes the past: a line per call, and its file read
            // unless this round read another.
            self.talk.last = round;
            let previous_read = std::mem::replace(&mut self.talk.read_in_last, read);
            if self.talk.read_in_last.is_some() {
                self.talk.latest_read = None;
            } else if previous_read.is_some() {
                self.talk.latest_read = previous_read;
            }
        }
    }

    /// What a request sends now: the system prompt, the brief, the compacted past, the last round.
    fn messages(&self) -> Vec<Value> {
        let mut messages = vec![
            json!({"role": "system", "content": SYSTEM}),
            json!({"role": "user", "content": self.talk.brief}),
        ];
        let last_calls = self
            .talk
            .last
            .iter()
            .filter(|m| m["role"] == "tool")
            .count();
        let earlier = &self.talk.done[..self.talk.done.len().saturating_sub(last_calls)];
        let earlier = &earlier[earlier.len().saturating_sub(PAST_CALLS)..];
        if !earlier.is_empty() || self.talk.latest_read.is_some() {
            let mut past = format!("Done so far in this proposal:\n{}", earlier.join("\n"));
            if let Some(read) = &self.talk.latest_read {
                past += &format!("\n\nThe latest file you read:\n{read}");
            }
            messages.push(json!({"role": "user", "content": past}));
        }
        messages.extend(self.talk.last.iter().cloned());
        messages
    }

    /// One reply, retried with backoff on transient failures and shrunk when it overflows the
    /// context; Err after `ATTEMPTS` failures in a row, or at once on any other error.
    async fn request(
        &mut self,
        brief: Option<&dyn Fn(usize) -> String>,
        deadline: Instant,
    ) -> Result<Value, EndpointError> {
        let mut wait = Duration::from_secs(2);
        let (mut failures, mut shrinks) = (0, 0);
        loop {
            let body = json!({"model": self.model, "messages": self.messages(), "tools": tool_specs(),
                "max_tokens": self.reply_tokens(), "stream": false});
            let left = deadline.saturating_duration_since(Instant::now());
            let error = match self.endpoint.chat(&body, left.min(REQUEST_TIMEOUT)).await {
                Ok(response) => return Ok(response),
                Err(e) => e,
            };
            match &error {
                EndpointError::Status {
                    overflow: Some(stated),
                    ..
                } if shrinks < SHRINKS => {
                    shrinks += 1;
                    self.context = stated
                        .filter(|n| *n < self.context)
                        .unwrap_or(self.context * 3 / 4);
                    eprintln!(
                        "LLM request overflowed the context ({error}); shrinking to {} tokens",
                        self.context
                    );
                    self.shrink(brief);
                }
                e if e.transient() && failures + 1 < ATTEMPTS => {
                    failures += 1;
                    let pause = match e {
                        EndpointError::Status {
                            retry_after: Some(after),
                            ..
                        } => *after,
                        _ => jitter(wait),
                    };
                    if Instant::now() + pause >= deadline {
                        return Err(error);
                    }
                    eprintln!(
                        "LLM request failed ({error}); retrying in {:.1} s",
                        pause.as_secs_f64()
                    );
                    tokio::time::sleep(pause).await;
                    wait = (wait * 2).min(Duration::from_secs(120));
                }
                _ => return Err(error),
            }
        }
    }

    /// The conversation cut to the (smaller) context: the brief rebuilt where it can be, else
    /// cut, and the past and the last round's results to their shares.
    fn shrink(&mut self, brief: Option<&dyn Fn(usize) -> String>) {
        let (brief_bytes, tool_bytes) = self.shares();
        self.talk.brief = match brief {
            Some(brief) => brief(brief_bytes),
            None => cut(&self.talk.brief, brief_bytes, "the brief"),
        };
        self.talk.latest_read = self
            .talk
            .latest_read
            .take()
            .map(|read| cut(&read, tool_bytes / 2, "this file"));
        for message in &mut self.talk.last {
            if let Some(text) = message["content"].as_str() {
                message["content"] = Value::String(cut(text, tool_bytes / 2, "this message"));
            }
        }
    }

    /// The `check` tool: the build's errors, else the rule tests' failures, else "ok".
    async fn check(&self, repo: &Path) -> String {
        let checked = match self.builder.trainer(repo, &self.target_dir).await {
            Ok(Build::Built { .. }) => self.builder.rule_tests(repo, &self.target_dir).await,
            Ok(Build::Failed { diagnostics, .. }) => return diagnostics,
            Err(e) => Err(e),
        };
        match checked {
            Ok(Rules::Hold) => "ok".into(),
            Ok(Rules::Broken(report)) => format!(
                "it builds, but breaks the trainer's rule tests (a change that breaks them is \
                 never kept):\n{}",
                report
            ),
            Err(e) => format!("error: {e:#}"),
        }
    }

    /// Runs one tool call.
    async fn call_tool(&self, call: &Value, ws: &Workspace) -> Outcome {
        let name = call["function"]["name"].as_str().unwrap_or("");
        let args: Option<Value> = call["function"]["arguments"]
            .as_str()
            .and_then(|a| serde_json::from_str(a).ok())
            .or_else(|| Some(call["function"]["arguments"].clone()))
            .filter(Value::is_object);
        let summary_of = |reply: &str| {
            let path = args.as_ref().and_then(|a| a["path"].as_str()).unwrap_or("");
            format!("{name} {path}: {}", one_line(reply, 120))
        };
        let Some(args) = args.clone() else {
            let reply = format!("error: the arguments of `{name}` must be a JSON object");
            return Outcome::miss(summary_of(&reply), reply);
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
                    Ok(d) => Outcome {
                        finish: Some(d.lines().next().unwrap_or("").trim().to_string()),
                        ..Outcome::used(summary_of("finished"), "finished".into())
                    },
                    Err(e) => Outcome::miss(summary_of(&e), e),
                };
            }
            other => {
                let reply = format!(
                    "error: there is no tool `{other}`; use list_files, read_file, edit_file, write_file, check, history or finish"
                );
                return Outcome::miss(summary_of(&reply), reply);
            }
        };
        let read = name == "read_file" && reply.is_ok();
        let reply = reply.unwrap_or_else(|e| {
            if e.starts_with("error") {
                e
            } else {
                format!("error: {e}")
            }
        });
        Outcome {
            read,
            ..Outcome::used(summary_of(&reply), reply)
        }
    }
}

/// One tool call's effect on the conversation.
struct Outcome {
    reply: String,
    /// The call named a tool and gave it arguments it could read (its effect may be an error).
    usable: bool,
    /// The description, if the call was `finish`.
    finish: Option<String>,
    /// A file's text, which the compacted conversation keeps until another is read.
    read: bool,
    /// One line for the compacted conversation.
    summary: String,
}

impl Outcome {
    fn used(summary: String, reply: String) -> Outcome {
        Outcome {
            reply,
            usable: true,
            finish: None,
            read: false,
            summary,
        }
    }

    fn miss(summary: String, reply: String) -> Outcome {
        Outcome {
            usable: false,
            ..Outcome::used(summary, reply)
        }
    }
}

/// `wait`, from half to all of it at random: workers that failed together retry apart.
fn jitter(wait: Duration) -> Duration {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    wait.mul_f64(0.5 + f64::from(nanos % 1000) / 2000.0)
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
