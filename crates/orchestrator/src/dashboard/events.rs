//! What an open page is told, as server-sent events: the experiments when the ledger changed,
//! what is in flight when that changed, and the end of the run. Each page's stream looks at the
//! run's files twice a second; the ledger is read again only when its size or time changed, so a
//! page open all night costs the loop a few file reads a second (figures in
//! docs/orchestrator.md).

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::response::sse::Event;
use futures::Stream;

use super::server::Shared;
use super::{Run, api};

/// How often a page's stream looks for changes: progress lines come once a second.
const POLL: Duration = Duration::from_millis(500);

/// The events of one page, from now on: the current state first, then every change, and `end`
/// once the run has ended (the stream ends there).
pub fn stream(shared: Arc<Shared>) -> impl Stream<Item = Result<Event, Infallible>> {
    shared.open.send_modify(|open| *open += 1);
    let seen = Seen {
        ended: shared.ended.clone(),
        shared,
        ledger: None,
        live: None,
        error: None,
        done: false,
    };
    futures::stream::unfold(seen, |mut seen| async move {
        let event = seen.next().await?;
        Some((Ok(event), seen))
    })
}

/// What this page was last sent.
struct Seen {
    shared: Arc<Shared>,
    ended: tokio::sync::watch::Receiver<bool>,
    /// The ledger's size and time when the experiments were last sent.
    ledger: Option<(u64, SystemTime)>,
    live: Option<String>,
    /// The last error sent, so that a ledger that stays broken is reported once.
    error: Option<String>,
    /// `end` was sent.
    done: bool,
}

impl Drop for Seen {
    fn drop(&mut self) {
        self.shared.open.send_modify(|open| *open -= 1);
    }
}

impl Seen {
    /// The next change, waiting for one; `end` once the run has ended and all was sent.
    async fn next(&mut self) -> Option<Event> {
        if self.done {
            return None;
        }
        loop {
            // Read before the files: what the files said after the end is the last word.
            let ended = *self.ended.borrow();
            let shared = self.shared.clone();
            let ledger = self.ledger;
            let look = tokio::task::spawn_blocking(move || look(&shared.run, ledger)).await;
            let change = match look {
                Ok(Ok(change)) => change,
                Ok(Err(e)) => Change::Error(format!("{e:#}")),
                Err(e) => Change::Error(format!("the dashboard's reader failed: {e}")),
            };
            match change {
                Change::Experiments(stamp, json) => {
                    self.ledger = Some(stamp);
                    return Some(Event::default().event("experiments").data(json));
                }
                Change::Live(json) if self.live.as_ref() != Some(&json) => {
                    self.live = Some(json.clone());
                    return Some(Event::default().event("live").data(json));
                }
                Change::Error(message) if self.error.as_ref() != Some(&message) => {
                    self.error = Some(message.clone());
                    return Some(Event::default().event("failure").data(message));
                }
                _ if ended => {
                    self.done = true;
                    return Some(Event::default().event("end").data("the run has ended"));
                }
                _ => {
                    // (A closed channel, the standalone dashboard's at exit, disables the branch.)
                    tokio::select! {
                        _ = tokio::time::sleep(POLL) => {}
                        Ok(()) = self.ended.changed() => {}
                    }
                }
            }
        }
    }
}

enum Change {
    /// The ledger changed since `stamp`: its new stamp and the experiments' JSON.
    Experiments((u64, SystemTime), String),
    /// What is in flight now, changed or not.
    Live(String),
    Error(String),
}

/// The experiments when the ledger is no longer as `seen`, else what is in flight.
fn look(run: &Run, seen: Option<(u64, SystemTime)>) -> anyhow::Result<Change> {
    let stamp = std::fs::metadata(run.dir.experiments())
        .and_then(|m| Ok((m.len(), m.modified()?)))
        .unwrap_or((0, SystemTime::UNIX_EPOCH));
    if seen != Some(stamp) {
        let json = serde_json::to_string(&api::experiments(run)?)?;
        return Ok(Change::Experiments(stamp, json));
    }
    Ok(Change::Live(serde_json::to_string(&api::live(run)?)?))
}
