//! One experiment's conversation with the LLM, compacted so that late rounds cost what early
//! ones did: each request sends the system prompt, the brief, a line per earlier tool call, the
//! latest file read, and the last round (the model's reply and what answered it).

use std::time::Instant;

use serde_json::{Value, json};

use super::brief::cut;

/// Earlier tool calls the compacted conversation lists, a line each.
const PAST_CALLS: usize = 20;

pub const SYSTEM: &str = "You are an autonomous ML researcher improving a GPT trainer written in Rust \
(crates/train/src, on libtorch through tch). Each experiment you make ONE change with the tools; \
the orchestrator then trains it for a fixed wall-clock budget and keeps it only if validation \
bits per byte (val_bpb, lower is better) improves. You may edit only files under crates/train/src/. \
Never change the evaluation (the prepare crate), the manifests, or the trainer's contract (a causal \
model; stop at the budget; one JSON result line on stdout). Run `check` before `finish` and fix \
every compiler error. Call `history` to see which experiments were kept, discarded or crashed \
and by how much, so you build on what worked and do not repeat what failed. Finish with a \
one-line description of what you changed.";

/// What a reply without a usable tool call gets back. Small models call tools when shown the
/// `<tool_call>` block to write.
pub const CORRECTION: &str = "Reply with exactly one tool call, as a <tool_call> block, e.g.\n\
<tool_call>\n{\"name\": \"read_file\", \"arguments\": {\"path\": \"crates/train/src/main.rs\"}}\n</tool_call>\n\
The tools: list_files, read_file, edit_file, write_file, check, history, finish (with a \
one-line description once your change is made).";

#[derive(Clone, Default)]
pub struct Conversation {
    pub brief: String,
    /// One line per tool call, the last round's included.
    pub done: Vec<String>,
    /// The latest file read, when the last round did not read it.
    latest_read: Option<String>,
    /// The file the last round read.
    read_in_last: Option<String>,
    /// The last round: the model's reply and what answered it.
    pub last: Vec<Value>,
    pub rounds: usize,
    /// Replies in a row without a usable tool call.
    pub misses: u32,
    pub deadline: Option<Instant>,
}

impl Conversation {
    pub fn new(brief: String, deadline: Instant) -> Conversation {
        Conversation {
            brief,
            deadline: Some(deadline),
            ..Conversation::default()
        }
    }

    /// What a request sends now: the system prompt, the brief, the compacted past, the last round.
    pub fn messages(&self) -> Vec<Value> {
        let mut messages = vec![
            json!({"role": "system", "content": SYSTEM}),
            json!({"role": "user", "content": self.brief}),
        ];
        let last_calls = self.last.iter().filter(|m| m["role"] == "tool").count();
        let earlier = &self.done[..self.done.len().saturating_sub(last_calls)];
        let earlier = &earlier[earlier.len().saturating_sub(PAST_CALLS)..];
        if !earlier.is_empty() || self.latest_read.is_some() {
            let mut past = format!("Done so far in this proposal:\n{}", earlier.join("\n"));
            if let Some(read) = &self.latest_read {
                past += &format!("\n\nThe latest file you read:\n{read}");
            }
            messages.push(json!({"role": "user", "content": past}));
        }
        messages.extend(self.last.iter().cloned());
        messages
    }

    /// The last round becomes `round`, and the one before it the past: a line per call
    /// (already in `done`), and its file read unless `read` (this round's) is another.
    pub fn compact(&mut self, round: Vec<Value>, read: Option<String>) {
        self.last = round;
        let previous_read = std::mem::replace(&mut self.read_in_last, read);
        if self.read_in_last.is_some() {
            self.latest_read = None;
        } else if previous_read.is_some() {
            self.latest_read = previous_read;
        }
    }

    /// Cut to a smaller context: the brief to `brief`, the latest file read and each message of
    /// the last round to half of `tool_bytes`.
    pub fn shrink(&mut self, brief: String, tool_bytes: usize) {
        self.brief = brief;
        self.latest_read = self
            .latest_read
            .take()
            .map(|read| cut(&read, tool_bytes / 2, "this file"));
        for message in &mut self.last {
            if let Some(text) = message["content"].as_str() {
                message["content"] = Value::String(cut(text, tool_bytes / 2, "this message"));
            }
        }
    }
}
