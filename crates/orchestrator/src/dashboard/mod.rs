//! The live dashboard: `orchestrator dashboard [--tag T] [--addr A]`, or `run --dashboard A`
//! during a night. A web page (axum on the loop's own tokio) that reads nothing but the run's
//! records (`runs/<tag>/`: the ledger, the experiments in flight, the logs, and git for the
//! diffs), so it shows a past run as it shows a live one; the JSON it is drawn from is served at
//! stable paths for scripts, and server-sent events push every change to the open pages.

mod api;
mod assets;
mod events;
mod server;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Result, bail};
use tokio::sync::watch;

use crate::config::{DASHBOARD_ADDR, DashboardArgs};
use crate::run_dir::RunDir;

/// What one dashboard shows: the run `tag` of the repository `repo`.
#[derive(Debug, Clone)]
pub struct Run {
    /// Where git finds the run's commits.
    pub repo: PathBuf,
    pub tag: String,
    pub dir: RunDir,
}

impl Run {
    pub fn new(repo: &Path, tag: &str) -> Run {
        Run {
            repo: repo.to_path_buf(),
            tag: tag.to_string(),
            dir: RunDir::new(repo, tag),
        }
    }
}

/// `orchestrator dashboard`: serves run `--tag` until Ctrl-C.
pub async fn serve(args: &DashboardArgs, repo: &Path) -> Result<()> {
    let tag = args.tag.clone().unwrap_or_else(crate::config::default_tag);
    let run = Run::new(repo, &tag);
    if !run.dir.path().is_dir() {
        let known = crate::ledger::known_runs(repo);
        bail!(
            "no run {:?}: {} does not exist; {}",
            run.tag,
            run.dir.path().display(),
            if known.is_empty() {
                "start one with `cargo run --release -p orchestrator -- --tag NAME --dashboard 127.0.0.1:8080`".to_string()
            } else {
                format!("pass --tag with one of: {}", known.join(", "))
            }
        );
    }
    let addr = address(&args.addr, args.public)?;
    let dashboard = start(addr, run).await?;
    tokio::select! {
        served = dashboard.server => served?,
        _ = tokio::signal::ctrl_c() => Ok(()),
    }
}

/// A dashboard served in a task of its own, until [`Dashboard::close`] or the process ends.
pub struct Dashboard {
    server: tokio::task::JoinHandle<Result<()>>,
    ended: watch::Sender<bool>,
    /// How many pages are open, each following the run's events.
    open: watch::Receiver<usize>,
}

/// Binds `addr` and serves `run` there. A port in use is an error now, before anything else
/// starts.
pub async fn start(addr: SocketAddr, run: Run) -> Result<Dashboard> {
    let listener = server::bind(addr).await?;
    eprintln!(
        "dashboard of run {}: http://{}/",
        run.tag,
        listener.local_addr()?
    );
    let (ended, ended_rx) = watch::channel(false);
    let (open_tx, open) = watch::channel(0);
    let shared = server::Shared {
        run,
        ended: ended_rx,
        open: open_tx,
    };
    Ok(Dashboard {
        server: tokio::spawn(server::serve(listener, shared)),
        ended,
        open,
    })
}

impl Dashboard {
    /// The run has ended: every open page is sent the last records and told so (for at most a
    /// few seconds), then the server stops.
    pub async fn close(mut self) {
        self.ended.send_replace(true);
        let told = self.open.wait_for(|&open| open == 0);
        tokio::time::timeout(Duration::from_secs(5), told)
            .await
            .ok();
        self.server.abort();
    }
}

/// `text` as an address to serve on (`IP:PORT`, or `localhost:PORT`), refused when other machines
/// could reach it and `public` was not given: the page shows the run's code, logs and scores to
/// anyone who can connect, with no password.
pub fn address(text: &str, public: bool) -> Result<SocketAddr> {
    let addr: SocketAddr = match text.strip_prefix("localhost:") {
        Some(port) => port
            .parse()
            .map(|port| SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port))
            .ok(),
        None => text.parse().ok(),
    }
    .ok_or_else(|| {
        anyhow::anyhow!("dashboard address {text:?} is not IP:PORT; use e.g. {DASHBOARD_ADDR}")
    })?;
    if !addr.ip().is_loopback() && !public {
        bail!(
            "the dashboard at {addr} could be reached from other machines, and it shows the run's \
             code, logs and scores to anyone without a password; serve it on 127.0.0.1 (and reach \
             it with `ssh -L 8080:127.0.0.1:8080 THIS_MACHINE` from your laptop), or pass --public \
             to serve it there anyway"
        );
    }
    Ok(addr)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_addresses_are_served_without_public() {
        assert_eq!(
            address("localhost:9000", false).unwrap(),
            "127.0.0.1:9000".parse().unwrap()
        );
        assert!(address("[::1]:9000", false).is_ok());
        for public in ["0.0.0.0:8080", "192.168.1.5:8080", "[::]:8080"] {
            let err = address(public, false).unwrap_err().to_string();
            assert!(
                err.contains("--public") && err.contains("127.0.0.1"),
                "{err}"
            );
            assert!(address(public, true).is_ok());
        }
        let err = address("8080", false).unwrap_err().to_string();
        assert!(err.contains("is not IP:PORT"), "{err}");
    }
}
