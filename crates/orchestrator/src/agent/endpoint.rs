//! The OpenAI-compatible endpoint, spoken to with plain HTTP and JSON: servers differ in their
//! error bodies (llama.cpp sends `code` as a number, OpenAI as a string, vLLM puts the message at
//! the top level), so a reply is read as `serde_json::Value` and an error body leniently, and the
//! status and `Retry-After` are kept for the retry policy. Replies are streamed where the
//! `stream` setting says so (the default), which bounds a long reply by the proposal's time.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::stream::Assembly;
use crate::text::one_line;

#[derive(Clone)]
pub struct Endpoint {
    http: reqwest::Client,
    /// Ends in `/v1` (or wherever the server's chat completions live), without the slash.
    base_url: String,
    api_key: Option<String>,
    stream: bool,
}

/// How long a request may take.
#[derive(Clone, Copy, Debug)]
pub struct Wait {
    /// The longest wait for the reply to begin, or for its next part when streamed.
    pub patience: Duration,
    /// When the reply must have come.
    pub deadline: Instant,
}

impl Wait {
    /// The reply within `limit`, whole.
    pub fn at_most(limit: Duration) -> Wait {
        Wait {
            patience: limit,
            deadline: Instant::now() + limit,
        }
    }

    /// `step` within this wait. The deadline passing while a reply `arriving` is `OutOfTime`:
    /// the server was answering, the time was ours.
    async fn within<T>(
        &self,
        arriving: bool,
        step: impl Future<Output = T>,
    ) -> Result<T, EndpointError> {
        let left = self.deadline.saturating_duration_since(Instant::now());
        let limit = left.min(self.patience);
        match tokio::time::timeout(limit, step).await {
            Ok(done) => Ok(done),
            Err(_) if arriving && left <= self.patience => Err(EndpointError::OutOfTime),
            Err(_) => Err(EndpointError::Timeout(limit)),
        }
    }
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
    /// A streamed reply was still coming when its deadline came.
    #[error("the reply was still coming when the time ran out")]
    OutOfTime,
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
            EndpointError::Malformed(_) | EndpointError::OutOfTime => false,
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

/// An HTTP(S) client. reqwest is built without a crypto provider of its own (see Cargo.toml),
/// and no client can be made, even for plain HTTP, until the process has one: ring is installed
/// as the process's default first (a second call finds it there).
pub fn http_client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::new()
}

impl Endpoint {
    /// `stream`: ask for server-sent events (see `chat`).
    pub fn new(base_url: &str, api_key: Option<String>, stream: bool) -> Endpoint {
        Endpoint {
            http: http_client(),
            base_url: base_url.trim_end_matches('/').to_string(),
            api_key,
            stream,
        }
    }

    /// POST `body` to chat/completions; the reply's JSON, the same whether it was streamed or
    /// not. Streamed, the reply may take until `wait.deadline` as long as it keeps coming, and
    /// one still coming then is cut (`OutOfTime`); unstreamed, it must come whole in one wait.
    pub async fn chat(&self, body: &Value, wait: Wait) -> Result<Value, EndpointError> {
        let mut body = body.clone();
        body["stream"] = self.stream.into();
        if self.stream {
            body["stream_options"] = json!({"include_usage": true});
        }
        let request = self
            .http
            .post(format!("{}/chat/completions", self.base_url))
            .json(&body);
        let response = wait.within(false, self.authorized(request).send()).await?;
        let response = response.map_err(|e| self.transport(e))?;
        let streamed = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .is_some_and(|t| t.as_bytes().starts_with(b"text/event-stream"));
        if !streamed || !response.status().is_success() {
            return self.json(response, wait).await;
        }
        self.assemble(response, wait).await
    }

    /// The model's context in tokens as the server states it: llama.cpp's `/v1/models` metadata
    /// (`meta.n_ctx`) or `/props`, vLLM's `max_model_len`. None when it says nothing.
    pub async fn context_tokens(&self, model: &str) -> Option<u64> {
        let get = |url: String| async move {
            let wait = Wait::at_most(Duration::from_secs(30));
            let response = wait
                .within(false, self.authorized(self.http.get(url)).send())
                .await?;
            self.json(response.map_err(|e| self.transport(e))?, wait)
                .await
        };
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

    fn authorized(&self, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.api_key {
            Some(key) => request.bearer_auth(key),
            None => request,
        }
    }

    /// A whole JSON body: the reply, or the error its status says.
    async fn json(&self, response: reqwest::Response, wait: Wait) -> Result<Value, EndpointError> {
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok()?.trim().parse().ok())
            .map(Duration::from_secs);
        let text = wait.within(false, response.text()).await?;
        let text = text.map_err(|e| self.transport(e))?;
        let body: Option<Value> = serde_json::from_str(&text).ok();
        if (200..300).contains(&status) {
            return body.ok_or_else(|| EndpointError::Malformed(one_line(&text, 300)));
        }
        Err(self.error(status, retry_after, body.unwrap_or(Value::Null), &text))
    }

    /// A streamed reply's events, put together (see `stream::Assembly`).
    async fn assemble(
        &self,
        mut response: reqwest::Response,
        wait: Wait,
    ) -> Result<Value, EndpointError> {
        let mut reply = Assembly::default();
        while !reply.done() {
            let chunk = wait.within(true, response.chunk()).await?;
            let Some(bytes) = chunk.map_err(|e| self.transport(e))? else {
                break;
            };
            if let Err(event) = reply.feed(&bytes) {
                let status = event["error"]["code"].as_u64().unwrap_or(500);
                let status = u16::try_from(status).unwrap_or(500);
                return Err(self.error(status, None, event.clone(), &event.to_string()));
            }
        }
        Ok(reply.reply())
    }

    /// The error a body sent with `status` says, read whatever its shape.
    fn error(
        &self,
        status: u16,
        retry_after: Option<Duration>,
        body: Value,
        text: &str,
    ) -> EndpointError {
        let error = if body["error"].is_object() {
            &body["error"]
        } else {
            &body
        };
        let message = [&error["message"], &body["error"], &body["detail"]]
            .into_iter()
            .find_map(Value::as_str)
            .map_or_else(|| one_line(text, 300), |m| one_line(m, 500));
        let overflowed = error["type"] == "exceed_context_size_error"
            || error["code"] == "context_length_exceeded"
            || ["context length", "context size", "context window"]
                .iter()
                .any(|phrase| message.to_lowercase().contains(phrase));
        EndpointError::Status {
            status,
            message: self.redact(&message),
            overflow: overflowed.then(|| error["n_ctx"].as_u64()),
            retry_after,
        }
    }

    fn transport(&self, e: reqwest::Error) -> EndpointError {
        EndpointError::Transport(self.redact(&e.to_string()))
    }

    /// Error texts can quote request headers; the key never leaves this process.
    fn redact(&self, text: &str) -> String {
        match &self.api_key {
            Some(key) if key.len() >= 4 => text.replace(key, "[redacted]"),
            _ => text.to_string(),
        }
    }
}
