//! The OpenAI-compatible endpoint, spoken to with plain HTTP and JSON: servers differ in their
//! error bodies (llama.cpp sends `code` as a number, OpenAI as a string, vLLM puts the message at
//! the top level), so a reply is read as `serde_json::Value` and an error body leniently, and the
//! status and `Retry-After` are kept for the retry policy.

use std::time::Duration;

use serde_json::Value;

use crate::text::one_line;

#[derive(Clone)]
pub struct Endpoint {
    http: reqwest::Client,
    /// Ends in `/v1` (or wherever the server's chat completions live), without the slash.
    base_url: String,
    api_key: Option<String>,
}

/// Why a request got no reply to use; the loop retries, shrinks the brief or gives up by it.
#[derive(Debug, thiserror::Error)]
pub enum EndpointError {
    #[error("HTTP {status}: {message}")]
    Status {
        status: u16,
        message: String,
        /// The request did not fit the model's context; the context the server states, if it does.
        overflow: Option<Option<u64>>,
        retry_after: Option<Duration>,
    },
    #[error("no answer within {} s", .0.as_secs())]
    Timeout(Duration),
    #[error("could not reach the endpoint: {0}")]
    Transport(String),
    #[error("the endpoint answered something that is not JSON: {0}")]
    Malformed(String),
}

impl EndpointError {
    /// Worth the same request again after a wait.
    pub fn transient(&self) -> bool {
        match self {
            EndpointError::Status { status, .. } => *status == 429 || *status >= 500,
            EndpointError::Timeout(_) | EndpointError::Transport(_) => true,
            EndpointError::Malformed(_) => false,
        }
    }

    /// A wrong key, model name or URL: no later request will do better.
    pub fn misconfigured(&self) -> bool {
        matches!(
            self,
            EndpointError::Status {
                status: 401 | 403 | 404,
                ..
            }
        )
    }
}

impl Endpoint {
    pub fn new(base_url: &str, api_key: Option<String>) -> Endpoint {
        Endpoint {
            http: reqwest::Client::new(),
            base_url: base_url.trim_end_matches('/').to_string(),
            api_key,
        }
    }

    /// POST `body` to chat/completions; the reply's JSON.
    pub async fn chat(&self, body: &Value, timeout: Duration) -> Result<Value, EndpointError> {
        let request = self
            .http
            .post(format!("{}/chat/completions", self.base_url))
            .json(body)
            .timeout(timeout);
        self.send(request, timeout).await
    }

    /// The model's context in tokens as the server states it: llama.cpp's `/v1/models` metadata
    /// (`meta.n_ctx`) or `/props`, vLLM's `max_model_len`. None when it says nothing.
    pub async fn context_tokens(&self, model: &str) -> Option<u64> {
        let timeout = Duration::from_secs(30);
        let get = |url: String| self.send(self.http.get(url).timeout(timeout), timeout);
        if let Ok(models) = get(format!("{}/models", self.base_url)).await {
            let listed = models["data"].as_array().cloned().unwrap_or_default();
            let ours = listed
                .iter()
                .find(|m| m["id"] == model)
                .or(listed.first())
                .cloned()
                .unwrap_or_default();
            if let Some(n) = ours["meta"]["n_ctx"]
                .as_u64()
                .or(ours["max_model_len"].as_u64())
            {
                return Some(n);
            }
        }
        // llama.cpp's server serves /props at its root, beside /v1.
        let root = self.base_url.trim_end_matches("/v1");
        let props = get(format!("{root}/props")).await.ok()?;
        props["default_generation_settings"]["n_ctx"].as_u64()
    }

    async fn send(
        &self,
        mut request: reqwest::RequestBuilder,
        timeout: Duration,
    ) -> Result<Value, EndpointError> {
        if let Some(key) = &self.api_key {
            request = request.bearer_auth(key);
        }
        let transport = |e: reqwest::Error| {
            if e.is_timeout() {
                EndpointError::Timeout(timeout)
            } else {
                EndpointError::Transport(self.redact(&e.to_string()))
            }
        };
        let response = request.send().await.map_err(transport)?;
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok()?.trim().parse().ok())
            .map(Duration::from_secs);
        let text = response.text().await.map_err(transport)?;
        let body: Option<Value> = serde_json::from_str(&text).ok();
        if (200..300).contains(&status) {
            return body.ok_or_else(|| EndpointError::Malformed(one_line(&text, 300)));
        }
        let body = body.unwrap_or(Value::Null);
        let error = if body["error"].is_object() {
            &body["error"]
        } else {
            &body
        };
        let message = [&error["message"], &body["error"], &body["detail"]]
            .into_iter()
            .find_map(Value::as_str)
            .map_or_else(|| one_line(&text, 300), |m| one_line(m, 500));
        let overflowed = error["type"] == "exceed_context_size_error"
            || error["code"] == "context_length_exceeded"
            || ["context length", "context size", "context window"]
                .iter()
                .any(|phrase| message.to_lowercase().contains(phrase));
        Err(EndpointError::Status {
            status,
            message: self.redact(&message),
            overflow: overflowed.then(|| error["n_ctx"].as_u64()),
            retry_after,
        })
    }

    /// Error texts can quote request headers; the key never leaves this process.
    fn redact(&self, text: &str) -> String {
        match &self.api_key {
            Some(key) if key.len() >= 4 => text.replace(key, "[redacted]"),
            _ => text.to_string(),
        }
    }
}
