//! The autonomous research loop of autoresearch-rs: an agent edits `crates/train/src`, the loop
//! builds and runs the trainer under a hard time limit and keeps the change on the run's branch
//! only if validation bits per byte improved. One module per concern.

pub mod agent;
pub mod cargo_build;
pub mod config;
pub mod decide;
pub mod git;
pub mod ledger;
pub mod program;
pub mod progress;
pub mod report;
pub mod research;
pub mod runner;
pub mod scoring;
pub mod setup;
pub mod tools;

use tokio::sync::watch;

/// Set once Ctrl-C was pressed: the running trainer is killed and the loop stops cleanly.
pub struct Stop(watch::Receiver<bool>);

impl Stop {
    pub fn on_ctrl_c() -> Stop {
        let (tx, rx) = watch::channel(false);
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                eprintln!("\nstopping: the current experiment is abandoned and re-run on --resume");
                tx.send(true).ok();
            }
        });
        Stop(rx)
    }

    pub fn requested(&self) -> bool {
        *self.0.borrow()
    }

    /// Resolves once a stop is requested.
    pub async fn wait(&mut self) {
        while !*self.0.borrow_and_update() {
            if self.0.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }
}
