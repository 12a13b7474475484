//! The LLM agent: any OpenAI-compatible chat-completions endpoint, with function calling over
//! the six file and build tools (docs/orchestrator.md) and `history`, the run's past experiments.
//! One conversation per experiment (`conversation`, compacted each round), bounded in rounds
//! and in time, and sized to the model's context: the brief fits with room for the reply, and
//! every tool result (`calls`) is cut to its share. A bad call or a reply without one gets a
//! short correction; the endpoint's failures are retried, and in the end recorded rather than
//! ending the night.

use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use serde_json::{Value, json};

use super::Proposal;
use super::brief::{BYTES_PER_TOKEN, cut};
use super::calls::{Calls, tool_specs};
use super::conversation::{CORRECTION, Conversation, SYSTEM};
use super::endpoint::{Endpoint, EndpointError, Wait};
use crate::cargo_build::Builder;
use crate::config::Config;
use crate::cost::Tokens;
use crate::text::one_line;
use crate::tools::Workspace;

/// Model turns per experiment, repairs included.
const MAX_ROUNDS: usize = 40;
/// Replies in a row without a usable tool call before the proposal ends with no change.
const MAX_MISSES: u32 = 3;
/// Attempts per request on timeouts, transport errors, 429 and 5xx.
const ATTEMPTS: u32 = 5;
/// Times a request that overflowed the context is shrunk and sent again.
const SHRINKS: u32 = 3;
/// The context assumed when neither autoresearch.toml nor the server states one.
pub const DEFAULT_CONTEXT: u64 = 32_768;
/// The longest reply asked for (`max_tokens`); a quarter of the context where that is less.
const MAX_REPLY: u64 = 2048;
/// The longest wait for a reply to begin (or, streamed, for its next part); a local model on a
/// CPU reads about 30 tokens a second before it writes the first.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(900);
/// The shortest and longest pause before a proposal while the endpoint keeps failing.
const OUTAGE_PAUSES: (Duration, Duration) = (Duration::from_secs(5), Duration::from_secs(300));

#[derive(Clone)]
pub struct OpenAiAgent {
    endpoint: Endpoint,
    model: String,
    /// What the model's tool calls act on.
    calls: Calls,
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

/// What a round's tool calls came to.
struct Answers {
    /// One of them was usable (see `calls::Outcome`).
    usable: bool,
    /// The file one of them read, as the conversation keeps it.
    read: Option<String>,
    /// The description of a `finish`.
    finished: Option<String>,
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
            .settings
            .base_url
            .as_deref()
            .unwrap_or("https://api.openai.com/v1");
        OpenAiAgent {
            endpoint: Endpoint::new(base_url, cfg.api_key.clone(), cfg.settings.stream()),
            model: cfg.settings.model().to_string(),
            calls: Calls::new(cfg, builder),
            context: cfg.settings.context_tokens.unwrap_or(DEFAULT_CONTEXT),
            context_setting: cfg.settings.context_tokens,
            proposal_timeout: Duration::from_secs_f64(cfg.settings.proposal_timeout()),
            outage: Duration::from_secs_f64(cfg.settings.outage()),
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
        match self
            .endpoint
            .chat(&probe, Wait::at_most(REQUEST_TIMEOUT))
            .await
        {
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
        self.pause_while_failing().await;
        self.talk = Conversation::new(
            brief(self.shares().0),
            Instant::now() + self.proposal_timeout,
        );
        self.converse(Some(brief), ws).await
    }

    /// While the endpoint keeps failing, waits as long as it has failed so far (within
    /// `OUTAGE_PAUSES`, never past the outage's end): an endpoint that refuses every request at
    /// once would otherwise make a crash record per round trip, hundreds a minute, until the
    /// outage ends the run.
    async fn pause_while_failing(&self) {
        let Some(since) = self.failing_since else {
            return;
        };
        let failed = since.elapsed();
        let (shortest, longest) = OUTAGE_PAUSES;
        let pause = failed
            .clamp(shortest, longest)
            .min(self.outage.saturating_sub(failed));
        eprintln!(
            "the LLM endpoint has failed for {:.0} s; asking again in {:.0} s",
            failed.as_secs_f64(),
            pause.as_secs_f64()
        );
        tokio::time::sleep(pause).await;
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

    /// The longest wait for a reply to begin, or for its next part: a third of the proposal's
    /// time at most, so that a request that hangs is retried within the proposal.
    fn patience(&self) -> Duration {
        REQUEST_TIMEOUT.min(self.proposal_timeout / 3)
    }

    async fn converse(
        &mut self,
        brief: Option<&dyn Fn(usize) -> String>,
        ws: &Workspace,
    ) -> Result<Proposal> {
        let mut tokens = Tokens::default();
        let turn = match self.turns(brief, ws, &mut tokens).await {
            Ok(turn) => turn,
            Err(e) => {
                let since = self.failing_since.unwrap_or_else(Instant::now);
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
                description: format!("{why} ({} tool calls made)", self.talk.done.len()),
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
        tokens: &mut Tokens,
    ) -> Result<Turn, EndpointError> {
        let deadline = self.talk.deadline.unwrap_or_else(Instant::now);
        let seconds = self.proposal_timeout.as_secs();
        let out_of_time =
            move |how: &str| Turn::Gave(format!("no change: out of time ({seconds} s){how}"));
        loop {
            if self.talk.rounds >= MAX_ROUNDS {
                return Ok(Turn::Gave(format!(
                    "no change: out of tool rounds ({MAX_ROUNDS})"
                )));
            }
            if Instant::now() >= deadline {
                return Ok(out_of_time(""));
            }
            self.talk.rounds += 1;
            let response = match self.request(brief, deadline).await {
                Err(EndpointError::OutOfTime) => {
                    return Ok(out_of_time(", cut while the model was still replying"));
                }
                response => response?,
            };
            *tokens += Tokens::of_response(&response);
            let (reply, calls) = kept_reply(&response["choices"][0]["message"]);
            let mut round = vec![reply];
            let Answers {
                usable,
                read,
                finished,
            } = self.answer(&calls, ws, &mut round).await;
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
            self.talk.compact(round, read);
        }
    }

    /// Runs the round's tool `calls`, their answers appended to `round`.
    async fn answer(&mut self, calls: &[Value], ws: &Workspace, round: &mut Vec<Value>) -> Answers {
        let mut answers = Answers {
            usable: false,
            read: None,
            finished: None,
        };
        let (_, tool_bytes) = self.shares();
        for call in calls {
            let outcome = self.calls.call(call, ws).await;
            answers.usable |= outcome.usable;
            answers.finished = answers.finished.or(outcome.finish);
            let text = cut(&outcome.reply, tool_bytes / calls.len(), "this result");
            if outcome.read {
                answers.read = Some(text.clone());
            }
            self.talk.done.push(outcome.summary);
            let id = call["id"].as_str().unwrap_or("");
            round.push(json!({"role": "tool", "tool_call_id": id, "content": text}));
        }
        answers
    }

    /// One reply, retried with backoff on transient failures and shrunk when it overflows the
    /// context; Err after `ATTEMPTS` failures in a row, at once on any other error, and
    /// `OutOfTime` when a streamed reply is still coming at `deadline`.
    async fn request(
        &mut self,
        brief: Option<&dyn Fn(usize) -> String>,
        deadline: Instant,
    ) -> Result<Value, EndpointError> {
        let mut wait = Duration::from_secs(2);
        let (mut failures, mut shrinks) = (0, 0);
        loop {
            let body = json!({"model": self.model, "messages": self.talk.messages(),
                "tools": tool_specs(), "max_tokens": self.reply_tokens()});
            let patience = self.patience();
            let error = match self.endpoint.chat(&body, Wait { patience, deadline }).await {
                Ok(response) => {
                    self.failing_since = None;
                    return Ok(response);
                }
                Err(EndpointError::OutOfTime) => {
                    // The endpoint was answering: the time ran out, not the endpoint.
                    self.failing_since = None;
                    return Err(EndpointError::OutOfTime);
                }
                Err(e) => e,
            };
            self.failing_since.get_or_insert_with(Instant::now);
            match &error {
                EndpointError::Status {
                    overflow: Some(stated),
                    ..
                } if shrinks < SHRINKS => {
                    shrinks += 1;
                    self.shrink(brief, *stated, &error);
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

    /// The conversation cut to the context the server `stated` when the request overflowed
    /// (else three quarters of ours): the brief rebuilt where it can be, else cut, and the past
    /// and the last round's results to their shares.
    fn shrink(
        &mut self,
        brief: Option<&dyn Fn(usize) -> String>,
        stated: Option<u64>,
        error: &EndpointError,
    ) {
        self.context = stated
            .filter(|n| *n < self.context)
            .unwrap_or(self.context * 3 / 4);
        eprintln!(
            "LLM request overflowed the context ({error}); shrinking to {} tokens",
            self.context
        );
        let (brief_bytes, tool_bytes) = self.shares();
        let brief = match brief {
            Some(brief) => brief(brief_bytes),
            None => cut(&self.talk.brief, brief_bytes, "the brief"),
        };
        self.talk.shrink(brief, tool_bytes);
    }
}

/// `wait`, from half to all of it at random: workers that failed together retry apart.
fn jitter(wait: Duration) -> Duration {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    wait.mul_f64(0.5 + f64::from(nanos % 1000) / 2000.0)
}

/// The model's `message` as the conversation keeps it (its text cut to a line), and its tool calls.
fn kept_reply(message: &Value) -> (Value, Vec<Value>) {
    let calls = message["tool_calls"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let content = message["content"].as_str().unwrap_or("");
    let mut reply = json!({"role": "assistant", "content": one_line(content, 1000)});
    if !calls.is_empty() {
        reply["tool_calls"] = Value::Array(calls.clone());
    }
    (reply, calls)
}
