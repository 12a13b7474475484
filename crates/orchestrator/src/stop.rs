//! Ctrl-C: the running trainer is killed and the loop stops cleanly; the experiment it abandons
//! is re-run on `--resume`.

use tokio::sync::watch;

/// Set once Ctrl-C was pressed. Each worker holds a clone.
#[derive(Clone)]
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
