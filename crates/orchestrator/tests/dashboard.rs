//! The dashboard (`orchestrator dashboard`, `run --dashboard`) in a real browser: headless
//! Chromium through chromedriver (tests/common/browser.rs; `scripts/browser.sh` installs both
//! when missing). The browser tests save screenshots under `target/dashboard/` (`recorded.png`,
//! `recorded-diff.png`, `live.png`), the test artifacts.
//!
//! - `a_recorded_run_shows_its_experiments_plot_diffs_and_logs`: a recorded run of 100
//!   experiments on a real git history (tests/common/recorded.rs): a row each, the totals, the
//!   progress plot drawn, a keep's diff, logs and curves a click away; the JSON paths for scripts.
//! - `a_live_night_updates_the_open_page`: a real short night on the stand-in trainer
//!   (tests/common/standin.rs) with `run --dashboard`, the page opened as it starts: the
//!   experiments in flight appear with their runs' curves growing (a change's against the best's),
//!   the rows arrive as they are recorded, all without a reload; when the night ends the page has its last record and says the run has ended.
//! - `bad_input_is_refused_with_what_to_do`: a tag with no run, an address other machines can
//!   reach without `--public` (for `dashboard` and `run --dashboard`), a port in use; a ledger
//!   line that does not parse, named by the API.

#[path = "common/browser.rs"]
mod browser;
mod common;
#[path = "common/recorded.rs"]
mod recorded;
#[path = "common/standin.rs"]
mod standin;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use browser::{Browser, free_port, wait_for_port};
use common::SERIAL;
use orchestrator::agent::http_client;
use recorded::{Recorded, TAG};
use serde_json::Value;

/// A child process killed when the test ends, passed or not.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        self.0.kill().ok();
        self.0.wait().ok();
    }
}

fn dashboard(repo: &std::path::Path, args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_orchestrator"));
    command.arg("dashboard").args(args).current_dir(repo);
    command
}

/// `orchestrator dashboard` serving the recorded run on a free port, and its address.
fn serve(recorded: &Recorded) -> (Killed, String) {
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let child = dashboard(&recorded.repo, &["--tag", TAG, "--addr", &addr])
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for_port(port, Duration::from_secs(30), "the dashboard");
    (Killed(child), format!("http://{addr}"))
}

/// The number of non-blank pixels of the canvas under `selector` (uPlot draws on a canvas).
fn drawn_pixels(selector: &str) -> String {
    format!(
        "const c = document.querySelector('{selector} canvas'); if (!c) return 0; \
         const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data; \
         let n = 0; for (let i = 3; i < d.length; i += 4) if (d[i] > 0) n++; return n;"
    )
}

async fn click(browser: &Browser, selector: &str) {
    let found = browser
        .client
        .find(fantoccini::Locator::Css(selector))
        .await;
    found
        .unwrap_or_else(|e| panic!("{selector}: {e}"))
        .click()
        .await
        .unwrap();
}

/// The text the open experiment's `tab` (diff or log) shows, once loaded; "" until then.
fn detail(tab: &str) -> String {
    format!(
        "const p = document.querySelector('#detail-text'); \
         return p && p.dataset.loaded === '{tab}' ? p.textContent : ''"
    )
}

const SECONDS: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread")]
// SERIAL keeps the browser tests (each on a runtime of its own) from loading the cores at once:
// it is held across their awaits on purpose.
#[allow(clippy::await_holding_lock)]
async fn a_recorded_run_shows_its_experiments_plot_diffs_and_logs() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let recorded = Recorded::new(100);
    let (_server, url) = serve(&recorded);
    let browser = Browser::start().await;
    browser.client.goto(&url).await.unwrap();
    let rows = "return document.querySelectorAll('#experiments tr.experiment').length";
    browser
        .wait_until("100 rows", &format!("{rows} === 100"), SECONDS)
        .await;
    let total = |name: &str| {
        format!("return document.querySelector('[data-total=\"{name}\"] b').textContent")
    };
    assert_eq!(browser.eval(&total("experiments")).await, "100");
    let best = recorded
        .records
        .iter()
        .rev()
        .find(|r| r["status"] == "keep")
        .unwrap();
    let best_bpb = format!("{:.6}", best["val_bpb"].as_f64().unwrap());
    assert_eq!(
        browser.eval(&total("best val_bpb")).await,
        best_bpb.as_str()
    );
    assert_eq!(browser.eval(&total("budget per run")).await, "30 s");
    let pixels = browser
        .wait_until("the plot drawn", &drawn_pixels("#progress"), SECONDS)
        .await;
    assert!(
        pixels.as_u64().unwrap() > 2000,
        "a plot, not a blank: {pixels}"
    );
    // The newest first; each row as recorded.
    let first_row = "return [...document.querySelectorAll('#experiments tr.experiment')[0].cells].map(c => c.textContent)";
    let last = &recorded.records[99];
    let cells = browser.eval(first_row).await;
    assert_eq!(cells[0], "99");
    assert_eq!(cells[1], last["status"]);
    assert_eq!(cells[6], last["description"]);

    // A keep's diff, then its log, a click away.
    let keep = best["seq"].as_u64().unwrap();
    click(&browser, &format!("tr.experiment[data-seq='{keep}']")).await;
    let diff = browser
        .wait_until("the diff", &detail("diff"), SECONDS)
        .await;
    let diff = diff.as_str().unwrap();
    let parent = recorded.records[..keep as usize]
        .iter()
        .rev()
        .find(|r| r["status"] == "keep")
        .unwrap();
    let old = format!(
        "-const LR: f64 = {};",
        recorded::lr(parent["seq"].as_u64().unwrap())
    );
    let new = format!("+const LR: f64 = {};", recorded::lr(keep));
    assert!(diff.contains(&old) && diff.contains(&new), "{diff}");
    browser.screenshot("recorded").await;
    let scroll = "document.querySelector('tr.detail').scrollIntoView({block: 'center'}); return 1";
    browser.eval(scroll).await;
    browser.screenshot("recorded-diff").await;
    click(&browser, "button[data-tab='log']").await;
    let log = browser.wait_until("the log", &detail("log"), SECONDS).await;
    assert!(
        log.as_str()
            .unwrap()
            .contains(&format!("==> logs/{keep}.log <==")),
        "{log}"
    );
    click(&browser, "button[data-tab='curves']").await;
    let curves = "const c = document.querySelector('#detail-chart[data-loaded=curves] canvas'); \
                  return c ? state.detailChart.data[1].filter(v => v != null).length : 0";
    let points = browser.wait_until("the curves", curves, SECONDS).await;
    assert_eq!(points, 31, "the keep's run, a point a second");
    browser.quit().await;

    // The JSON behind the page, for scripts.
    let get = |path: &str| {
        let url = format!("{url}{path}");
        async move {
            let response = http_client().get(&url).send().await.unwrap();
            (response.status().as_u16(), response.text().await.unwrap())
        }
    };
    let (status, body) = get("/api/experiments").await;
    assert_eq!(status, 200);
    let json: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(json["experiments"].as_array().unwrap().len(), 100);
    assert_eq!(json["summary"]["best_bpb"], best["val_bpb"]);
    assert_eq!(json["experiments"][keep as usize]["commit"], best["commit"]);
    let curve = &json["experiments"][keep as usize]["trials"][0]["curve"];
    assert_eq!(
        curve.as_array().unwrap().len(),
        0,
        "curves only in each record's own path"
    );
    let (status, body) = get(&format!("/api/experiments/{keep}")).await;
    assert_eq!(status, 200);
    let record: Value = serde_json::from_str(&body).unwrap();
    // The same points (serde_json reads floats to within an ulp).
    let points = |curve: &Value| -> Vec<(f64, u64, f64)> {
        let point = |p: &Value| {
            (
                p["seconds"].as_f64().unwrap(),
                p["step"].as_u64().unwrap(),
                p["loss"].as_f64().unwrap(),
            )
        };
        curve.as_array().unwrap().iter().map(point).collect()
    };
    let (served, recorded) = (
        points(&record["trials"][0]["curve"]),
        points(&best["trials"][0]["curve"]),
    );
    assert_eq!(served.len(), recorded.len());
    for (a, b) in served.iter().zip(&recorded) {
        assert!(
            a.0 == b.0 && a.1 == b.1 && (a.2 - b.2).abs() < 1e-12,
            "{a:?} != {b:?}"
        );
    }
    let (status, body) = get("/api/live").await;
    assert_eq!(
        (status, body.as_str()),
        (200, r#"{"tag":"recorded","in_flight":[]}"#)
    );
    let (status, body) = get("/api/experiments/100/diff").await;
    assert_eq!(status, 404, "{body}");
    assert!(
        body.contains("run recorded has no experiment 100"),
        "{body}"
    );
}

/// `script`'s count of experiment rows.
const ROWS: &str = "return document.querySelectorAll('#experiments tr.experiment').length";

#[tokio::test(flavor = "multi_thread")]
// SERIAL keeps the browser tests (each on a runtime of its own) from loading the cores at once:
// it is held across their awaits on purpose.
#[allow(clippy::await_holding_lock)]
async fn a_live_night_updates_the_open_page() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    // Chromium first: on a loaded machine it can take longer to start than the baseline's few
    // seconds of training, whose curve the page must see in flight.
    let browser = Browser::start().await;
    let standin = standin::Standin::new();
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let flags = [
        "--agent",
        "offline",
        "--tag",
        "live",
        "--time-budget",
        "3",
        "--max-experiments",
        "4",
        "--noise-seeds",
        "2",
        "--dashboard",
        &addr,
    ];
    let stderr = standin.root().join("night.stderr");
    let mut night = Killed(standin.spawn(&flags, &stderr));
    // Served before anything else starts.
    wait_for_port(port, Duration::from_secs(60), "run --dashboard");
    browser
        .client
        .goto(&format!("http://{addr}"))
        .await
        .unwrap();
    browser.eval("window.sameDocument = true; return 1").await;
    let minutes = Duration::from_secs(300);
    let baseline = in_flight("c.node.dataset.seq === '0'");
    browser
        .wait_until("the baseline's curve as it trains", &baseline, minutes)
        .await;
    browser
        .wait_until("the baseline's row", &format!("{ROWS} >= 1"), minutes)
        .await;
    // A change in flight: its curve drawn as it trains, against the best's recorded one.
    let change = in_flight(
        "c.node.dataset.seq !== '0' && c.chart.series.some(s => s.label === 'best (#0)') \
         && c.chart.data[1].filter(v => v != null).length >= 2",
    );
    browser
        .wait_until("a change's curve beside the best's", &change, minutes)
        .await;
    browser.screenshot("live").await;
    let started = std::time::Instant::now();
    let status = loop {
        if let Some(status) = night.0.try_wait().unwrap() {
            break status;
        }
        assert!(started.elapsed() < minutes, "the night did not end");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(
        status.success(),
        "{}",
        std::fs::read_to_string(&stderr).unwrap()
    );
    browser
        .wait_until("every row", &format!("{ROWS} === 4"), SECONDS)
        .await;
    let said = browser
        .eval("return document.querySelector('#connection').textContent")
        .await;
    assert_eq!(said, "the run has ended");
    assert_eq!(
        browser.eval("return window.sameDocument === true").await,
        true,
        "no reload"
    );
    let updates = browser.eval("return window.liveUpdates").await;
    assert!(updates.as_u64().unwrap() >= 4, "live updates: {updates}");
    browser.quit().await;
}

/// Whether an experiment in flight for which `which` holds (of its card `c`) shows a chart with
/// points of its first run's curve.
fn in_flight(which: &str) -> String {
    format!(
        "return [...state.flights.values()].some(c => c.chart && document.contains(c.node) \
         && {which} && c.chart.data[1].some(v => v != null))"
    )
}

#[tokio::test]
async fn bad_input_is_refused_with_what_to_do() {
    let recorded = Recorded::new(3);
    let fails = |mut command: Command, expected: &[&str]| {
        let out = command.output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{stderr}");
        for text in expected {
            assert!(stderr.contains(text), "{text:?} not in: {stderr}");
        }
    };
    fails(
        dashboard(&recorded.repo, &["--tag", "nope"]),
        &["no run \"nope\"", "pass --tag with one of: recorded"],
    );
    let port = free_port();
    let public = format!("0.0.0.0:{port}");
    let refused = [
        "could be reached from other machines",
        "--public",
        "127.0.0.1",
    ];
    fails(
        dashboard(&recorded.repo, &["--tag", TAG, "--addr", &public]),
        &refused,
    );
    let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let in_use = held.local_addr().unwrap().to_string();
    let busy = [
        format!("address {in_use} is in use"),
        "pass another port".to_string(),
    ];
    let busy: Vec<&str> = busy.iter().map(String::as_str).collect();
    fails(
        dashboard(&recorded.repo, &["--tag", TAG, "--addr", &in_use]),
        &busy,
    );
    // A night refuses them before it starts anything.
    let run = |addr: &str| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_orchestrator"));
        command
            .args(["--tag", "night", "--dashboard", addr])
            .current_dir(&recorded.repo);
        command
    };
    fails(run(&public), &refused);
    fails(run(&in_use), &busy);
    assert!(
        !recorded.repo.join("runs/night").exists(),
        "nothing started"
    );
    // A ledger line that does not parse is named, for the page and for scripts.
    let ledger = recorded.run_dir().join("experiments.jsonl");
    let text = std::fs::read_to_string(&ledger).unwrap();
    let torn: Vec<&str> = text
        .lines()
        .enumerate()
        .map(|(i, l)| if i == 1 { "{\"seq\": 1," } else { l })
        .collect();
    std::fs::write(&ledger, torn.join("\n") + "\n").unwrap();
    let (_server, url) = serve(&recorded);
    let response = http_client()
        .get(format!("{url}/api/experiments"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 500);
    let body = response.text().await.unwrap();
    assert!(
        body.contains("experiments.jsonl line 2: ") && body.contains("fix or remove that line"),
        "{body}"
    );
}
