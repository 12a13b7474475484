//! The dashboard's routes: the page and its assets, the JSON under `/api/`, and the events.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::{Context, Result};
use axum::Router;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Json, Response, Sse, sse::KeepAlive};
use axum::routing::get;
use tokio::net::TcpListener;
use tokio::sync::watch;

use super::{Run, api, assets, events};

/// The listening socket, or an error that says what to do when the address cannot be had.
pub async fn bind(addr: SocketAddr) -> Result<TcpListener> {
    TcpListener::bind(addr).await.map_err(|e| match e.kind() {
        std::io::ErrorKind::AddrInUse => anyhow::anyhow!(
            "the dashboard's address {addr} is in use (another dashboard or program listens \
             there); pass another port, e.g. {}:{}",
            addr.ip(),
            addr.port().wrapping_add(1)
        ),
        std::io::ErrorKind::AddrNotAvailable => anyhow::anyhow!(
            "the dashboard's address {addr} is not one of this machine's; use 127.0.0.1:PORT"
        ),
        _ => anyhow::Error::new(e).context(format!("listening on {addr} for the dashboard")),
    })
}

/// What the routes share: the run, and what the pages' event streams need.
pub struct Shared {
    pub run: Run,
    /// Becomes true when the run has ended (`run --dashboard` only).
    pub ended: watch::Receiver<bool>,
    /// The pages following the events.
    pub open: watch::Sender<usize>,
}

pub async fn serve(listener: TcpListener, shared: Shared) -> Result<()> {
    let app = Router::new()
        .route("/", get(|| async { assets::page() }))
        .route("/assets/{name}", get(asset))
        .route("/api/experiments", get(experiments))
        .route("/api/live", get(live))
        .route("/api/experiments/{seq}", get(record))
        .route("/api/experiments/{seq}/diff", get(diff))
        .route("/api/experiments/{seq}/log", get(log))
        .route("/api/events", get(follow))
        .with_state(Arc::new(shared));
    axum::serve(listener, app)
        .await
        .context("serving the dashboard")
}

async fn asset(Path(name): Path<String>) -> Response {
    match assets::get(&name) {
        Some((mime, body)) => ([(header::CONTENT_TYPE, mime)], body).into_response(),
        None => (StatusCode::NOT_FOUND, format!("no asset {name}")).into_response(),
    }
}

async fn experiments(State(shared): State<Arc<Shared>>) -> Response {
    answer(shared, api::experiments, as_json).await
}

async fn live(State(shared): State<Arc<Shared>>) -> Response {
    answer(shared, api::live, as_json).await
}

async fn record(State(shared): State<Arc<Shared>>, Path(seq): Path<u64>) -> Response {
    answer(shared, move |run| api::record(run, seq), as_json).await
}

async fn diff(State(shared): State<Arc<Shared>>, Path(seq): Path<u64>) -> Response {
    answer(shared, move |run| api::diff(run, seq), as_text).await
}

async fn log(State(shared): State<Arc<Shared>>, Path(seq): Path<u64>) -> Response {
    answer(shared, move |run| api::logs(run, seq), as_text).await
}

async fn follow(State(shared): State<Arc<Shared>>) -> impl IntoResponse {
    Sse::new(events::stream(shared)).keep_alive(KeepAlive::default())
}

/// `view` of the run, answered with `respond`. Views read files and run git: off the threads
/// the loop shares.
async fn answer<T: Send + 'static>(
    shared: Arc<Shared>,
    view: impl FnOnce(&Run) -> Result<T> + Send + 'static,
    respond: fn(T) -> Response,
) -> Response {
    match tokio::task::spawn_blocking(move || view(&shared.run)).await {
        Ok(Ok(value)) => respond(value),
        Ok(Err(e)) => failure(e),
        Err(e) => failure(e.into()),
    }
}

fn as_json<T: serde::Serialize>(value: T) -> Response {
    Json(value).into_response()
}

fn as_text(text: String) -> Response {
    ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], text).into_response()
}

fn failure(e: anyhow::Error) -> Response {
    let status = if e.is::<api::NoSuchExperiment>() {
        StatusCode::NOT_FOUND
    } else {
        StatusCode::INTERNAL_SERVER_ERROR
    };
    (status, format!("{e:#}\n")).into_response()
}
