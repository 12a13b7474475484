//! Ctrl-C: the running trainer is killed and the loop stops cleanly; the experiment it abandons
//! is re-run on `--resume`.

use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::watch;

/// Set once Ctrl-C was pressed. Each worker holds a clone.
#[derive(Clone)]
pub struct Stop(watch::Receiver<bool>);

impl Stop {
    /// Watches for Ctrl-C (SIGINT) from now on. The handler is installed before this returns,
    /// not when a task first runs: a process started in the background by a script inherits
    /// SIGINT ignored, and until a handler replaces that, Ctrl-C (or `kill -INT`) does nothing.
    pub fn on_ctrl_c() -> std::io::Result<Stop> {
        let mut interrupt = signal(SignalKind::interrupt())?;
        let (tx, rx) = watch::channel(false);
        tokio::spawn(async move {
            if interrupt.recv().await.is_some() {
                eprintln!("\nstopping: the current experiment is abandoned and re-run on --resume");
                tx.send(true).ok();
            }
        });
        Ok(Stop(rx))
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
