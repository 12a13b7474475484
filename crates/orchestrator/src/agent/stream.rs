//! A streamed chat completion (`stream: true`, server-sent events) put back together into the
//! reply an unstreamed request gets, so the agent reads both alike: `delta.content` appended,
//! `delta.tool_calls` fragments gathered by their `index` (the first names the call, the rest
//! append to its arguments), and the usage the last event carries (`stream_options`).

use serde_json::{Value, json};

/// A streamed reply, as far as it has come.
#[derive(Default)]
pub struct Assembly {
    /// The bytes of a line not yet ended (a chunk may end anywhere, even inside a character).
    partial: Vec<u8>,
    content: String,
    calls: Vec<Value>,
    finish_reason: Value,
    usage: Value,
    done: bool,
}

impl Assembly {
    /// Takes the next bytes of the stream; Err with the event's body when the server sends an
    /// error in the stream (llama.cpp and vLLM do, once the stream has begun).
    pub fn feed(&mut self, bytes: &[u8]) -> Result<(), Value> {
        self.partial.extend_from_slice(bytes);
        while let Some(end) = self.partial.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = self.partial.drain(..=end).collect();
            let line = String::from_utf8_lossy(&line);
            // Comments (`: ping`), `event:` and `id:` lines and blank separators carry nothing.
            let Some(data) = line.trim_end().strip_prefix("data:") else {
                continue;
            };
            self.event(data.trim())?;
        }
        Ok(())
    }

    /// The server said `[DONE]`.
    pub fn done(&self) -> bool {
        self.done
    }

    /// The reply as a request without streaming gets it.
    pub fn reply(self) -> Value {
        let mut message = json!({"role": "assistant", "content": self.content});
        if !self.calls.is_empty() {
            message["tool_calls"] = Value::Array(self.calls);
        }
        json!({
            "choices": [{"index": 0, "finish_reason": self.finish_reason, "message": message}],
            "usage": self.usage,
        })
    }

    fn event(&mut self, data: &str) -> Result<(), Value> {
        if data == "[DONE]" {
            self.done = true;
            return Ok(());
        }
        let Ok(event) = serde_json::from_str::<Value>(data) else {
            return Ok(());
        };
        if !event["error"].is_null() {
            return Err(event);
        }
        if event["usage"].is_object() {
            self.usage = event["usage"].clone();
        }
        let choice = &event["choices"][0];
        if !choice["finish_reason"].is_null() {
            self.finish_reason = choice["finish_reason"].clone();
        }
        if let Some(text) = choice["delta"]["content"].as_str() {
            self.content.push_str(text);
        }
        for fragment in choice["delta"]["tool_calls"]
            .as_array()
            .into_iter()
            .flatten()
        {
            self.call_fragment(fragment);
        }
        Ok(())
    }

    fn call_fragment(&mut self, fragment: &Value) {
        // Without an index (some servers send each call whole), an id starts a call.
        let index = fragment["index"].as_u64().map_or_else(
            || {
                let starts = fragment["id"].is_string() || self.calls.is_empty();
                self.calls.len() - usize::from(!starts)
            },
            |i| i as usize,
        );
        while self.calls.len() <= index {
            self.calls.push(json!({"id": "", "type": "function",
                "function": {"name": "", "arguments": ""}}));
        }
        let call = &mut self.calls[index];
        if let Some(id) = fragment["id"].as_str() {
            call["id"] = id.into();
        }
        let function = &fragment["function"];
        if let Some(name) = function["name"].as_str() {
            call["function"]["name"] = name.into();
        }
        let arguments = match &function["arguments"] {
            Value::String(text) => text.clone(),
            Value::Null => String::new(),
            whole => whole.to_string(),
        };
        let so_far = call["function"]["arguments"].as_str().unwrap_or("");
        call["function"]["arguments"] = format!("{so_far}{arguments}").into();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(value: Value) -> String {
        format!("data: {value}\n\n")
    }

    #[test]
    fn fragments_come_together_by_index_across_chunk_boundaries() {
        let stream = [
            ": ping\n\n".to_string(),
            event(json!({"choices": [{"index": 0, "delta": {"role": "assistant", "content": null}}]})),
            event(json!({"choices": [{"index": 0, "delta": {"content": "Reading é"}}]})),
            event(json!({"choices": [{"index": 0, "delta": {"content": " two files."}}]})),
            event(
                json!({"choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "id": "a", "type": "function",
                "function": {"name": "read_file", "arguments": "{\"pa"}}]}}]}),
            ),
            event(
                json!({"choices": [{"index": 0, "delta": {"tool_calls": [{"index": 1, "id": "b", "type": "function",
                "function": {"name": "list_files", "arguments": "{}"}}]}}]}),
            ),
            event(
                json!({"choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0,
                "function": {"arguments": "th\": \"x\"}"}}]}}]}),
            ),
            event(json!({"choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]})),
            event(json!({"choices": [], "usage": {"total_tokens": 42}})),
            "data: [DONE]\n\n".to_string(),
        ]
        .concat();
        let mut assembly = Assembly::default();
        // Three bytes at a time: lines, events and the two-byte `é` are all split somewhere.
        for chunk in stream.as_bytes().chunks(3) {
            assert!(!assembly.done());
            assembly.feed(chunk).unwrap();
        }
        assert!(assembly.done());
        let reply = assembly.reply();
        let message = &reply["choices"][0]["message"];
        assert_eq!(message["content"], "Reading é two files.");
        assert_eq!(
            message["tool_calls"],
            json!([
                {"id": "a", "type": "function", "function": {"name": "read_file", "arguments": "{\"path\": \"x\"}"}},
                {"id": "b", "type": "function", "function": {"name": "list_files", "arguments": "{}"}},
            ])
        );
        assert_eq!(reply["choices"][0]["finish_reason"], "tool_calls");
        assert_eq!(reply["usage"]["total_tokens"], 42);
    }

    #[test]
    fn calls_without_an_index_and_errors_in_the_stream() {
        let mut assembly = Assembly::default();
        for call in ["a", "b"] {
            let whole = json!({"choices": [{"delta": {"tool_calls": [{"id": call,
                "function": {"name": "check", "arguments": {}}}]}}]});
            assembly.feed(event(whole).as_bytes()).unwrap();
        }
        let error = json!({"error": {"code": 500, "message": "the slot died"}});
        assert_eq!(assembly.feed(event(error.clone()).as_bytes()), Err(error));
        let reply = assembly.reply();
        let calls = reply["choices"][0]["message"]["tool_calls"]
            .as_array()
            .unwrap();
        assert_eq!(calls.len(), 2);
        assert_eq!(calls[1]["id"], "b");
        assert_eq!(calls[1]["function"]["arguments"], "{}");
        assert!(reply["choices"][0]["message"]["content"] == "");
    }
}
