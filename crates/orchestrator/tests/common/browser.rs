//! A real browser for the dashboard's tests and benchmark: Debian's headless Chromium, driven
//! through its WebDriver (`chromedriver`) with fantoccini. `scripts/browser.sh` installs both
//! when they are missing (apt-get, as root), the way the Slurm tests install Slurm.
//!
//! Used from test files as `mod common; #[path = "common/browser.rs"] mod browser;`.

#![allow(dead_code)]

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder};
use serde_json::{Value, json};

/// Chromium's flags that work here (in a container, as root, with no display, GPU or network).
const FLAGS: [&str; 9] = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1400,1400",
];

pub struct Browser {
    pub client: Client,
    driver: Child,
    _profile: tempfile::TempDir,
}

impl Browser {
    /// A fresh Chromium (its own profile), installed first when missing.
    pub async fn start() -> Browser {
        let script = prepare::workspace_root().join("scripts/browser.sh");
        let out = Command::new(&script).output().unwrap();
        assert!(
            out.status.success(),
            "{}: {}",
            script.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        let stdout = String::from_utf8(out.stdout).unwrap();
        let chromedriver = stdout
            .lines()
            .find_map(|l| l.strip_prefix("CHROMEDRIVER="))
            .expect("browser.sh prints CHROMEDRIVER=...");
        let port = free_port();
        let driver = Command::new(chromedriver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        wait_for_port(port, Duration::from_secs(30), "chromedriver");
        let profile = tempfile::tempdir().unwrap();
        let mut args: Vec<String> = FLAGS.iter().map(|f| f.to_string()).collect();
        args.push(format!("--user-data-dir={}", profile.path().display()));
        let capabilities = json!({"goog:chromeOptions": {"args": args}});
        let Value::Object(capabilities) = capabilities else {
            unreachable!()
        };
        let client = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(capabilities)
            .connect(&format!("http://127.0.0.1:{port}"))
            .await
            .expect("a Chromium session through chromedriver");
        Browser {
            client,
            driver,
            _profile: profile,
        }
    }

    /// What `script` (a function body, e.g. `return document.title`) returns in the page.
    pub async fn eval(&self, script: &str) -> Value {
        self.client.execute(script, Vec::new()).await.unwrap()
    }

    /// Polls `script` until it returns something truthy (not null, false, 0 or ""), which it
    /// returns; panics naming `what` after `timeout`.
    pub async fn wait_until(&self, what: &str, script: &str, timeout: Duration) -> Value {
        let started = Instant::now();
        loop {
            let value = self.eval(script).await;
            let truthy = match &value {
                Value::Null => false,
                Value::Bool(b) => *b,
                Value::Number(n) => n.as_f64() != Some(0.0),
                Value::String(s) => !s.is_empty(),
                _ => true,
            };
            if truthy {
                return value;
            }
            assert!(
                started.elapsed() < timeout,
                "{what}: not within {timeout:?} (last {value})"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Saves what the window shows as `<target>/dashboard/<name>.png`, where the test artifacts
    /// are kept; returns the path.
    pub async fn screenshot(&self, name: &str) -> PathBuf {
        let png = self.client.screenshot().await.unwrap();
        let dir = artifacts();
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("{name}.png"));
        std::fs::write(&path, png).unwrap();
        eprintln!("screenshot: {}", path.display());
        path
    }

    pub async fn quit(mut self) {
        self.client.clone().close().await.ok();
        self.driver.kill().ok();
        self.driver.wait().ok();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // A failed test still ends its chromedriver (closing the session ends Chromium).
        self.driver.kill().ok();
        self.driver.wait().ok();
    }
}

/// `target/dashboard/`, beside the build of the test (target/release/deps/<test>).
pub fn artifacts() -> PathBuf {
    std::env::current_exe()
        .unwrap()
        .ancestors()
        .nth(3)
        .unwrap()
        .join("dashboard")
}

/// A port nobody listens on now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Waits until something listens on 127.0.0.1:`port`.
pub fn wait_for_port(port: u16, timeout: Duration, what: &str) {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let started = Instant::now();
    while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
        assert!(
            started.elapsed() < timeout,
            "{what} does not listen on {addr} after {timeout:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}
