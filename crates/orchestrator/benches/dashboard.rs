//! The dashboard's figures, not pass/fail:
//!
//! ```sh
//! cargo bench -p orchestrator --bench dashboard
//! cargo bench -p orchestrator --bench dashboard -- --loads 10 --experiments 8 --budget 2 --rounds 2
//! ```
//!
//! - The page's load time on a recorded run of 100 experiments (tests/common/recorded.rs), in
//!   headless Chromium (tests/common/browser.rs): from the start of the navigation to the rows,
//!   totals and plot drawn (`window.dashboardReady` in the page), the first load and the next
//!   ones (assets cached by the browser); and `/api/experiments` alone, as a script gets it.
//! - What the dashboard costs the loop: nights on the stand-in trainer (tests/common/standin.rs,
//!   one worker, the offline agent), in turns without and with `run --dashboard` and a page open
//!   on it, which gets every live update: the loop's time per experiment after the baseline
//!   (from the records' times), and the CPU time of the orchestrator's own process (its
//!   children, the builds and trainers, apart) per experiment.

#[path = "../tests/common/browser.rs"]
mod browser;
#[path = "../tests/common/mod.rs"]
mod common;
#[path = "../tests/common/recorded.rs"]
mod recorded;
#[path = "../tests/common/standin.rs"]
mod standin;

use std::process::Stdio;
use std::time::{Duration, Instant};

use browser::{Browser, free_port, wait_for_port};
use orchestrator::agent::http_client;
use serde_json::Value;

struct Options {
    loads: usize,
    experiments: u64,
    budget: f64,
    rounds: usize,
}

fn options() -> Options {
    let mut options = Options {
        loads: 10,
        experiments: 8,
        budget: 2.0,
        rounds: 2,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().unwrap_or_else(|| panic!("{arg} needs a value"));
        match arg.as_str() {
            "--loads" => options.loads = value().parse().expect("--loads N"),
            "--experiments" => options.experiments = value().parse().expect("--experiments N"),
            "--budget" => options.budget = value().parse().expect("--budget SECONDS"),
            "--rounds" => options.rounds = value().parse().expect("--rounds N"),
            _ => {} // cargo bench passes --bench
        }
    }
    options
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn range(values: &[f64], decimals: usize) -> String {
    let min = values.iter().copied().fold(f64::INFINITY, f64::min);
    let max = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let median = median(values.to_vec());
    format!("median {median:.decimals$}, min {min:.decimals$}, max {max:.decimals$}")
}

async fn load_time(loads: usize) {
    let recorded = recorded::Recorded::new(100);
    let port = free_port();
    let mut server = std::process::Command::new(env!("CARGO_BIN_EXE_orchestrator"))
        .args(["dashboard", "--tag", recorded::TAG, "--addr"])
        .arg(format!("127.0.0.1:{port}"))
        .current_dir(&recorded.repo)
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for_port(port, Duration::from_secs(30), "the dashboard");
    let url = format!("http://127.0.0.1:{port}/");
    let browser = Browser::start().await;
    let mut ready = Vec::new();
    for _ in 0..loads {
        browser.client.goto(&url).await.unwrap();
        let ms = browser
            .wait_until(
                "the page drawn",
                "return document.querySelectorAll('#experiments tr.experiment').length === 100 \
                 && document.querySelector('#progress canvas') && window.dashboardReady",
                Duration::from_secs(60),
            )
            .await;
        ready.push(ms.as_f64().unwrap());
    }
    browser.quit().await;
    let mut api = Vec::new();
    for _ in 0..20 {
        let started = Instant::now();
        let body = http_client()
            .get(format!("{url}api/experiments"))
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        api.push(started.elapsed().as_secs_f64() * 1000.0);
        assert!(body.len() > 1000);
    }
    server.kill().ok();
    server.wait().ok();
    println!("page load, 100 experiments (ms from navigation to the rows and plot drawn):");
    println!(
        "  first load {:.1}; next {} loads: {}",
        ready[0],
        loads - 1,
        range(&ready[1..], 1)
    );
    println!(
        "  /api/experiments alone: {} ms (20 requests)",
        range(&api, 1)
    );
}

/// One night's figures.
struct Night {
    per_experiment: f64,
    cpu_per_experiment: f64,
    live_updates: Option<u64>,
}

/// The CPU seconds `pid` itself has used (utime + stime), while it runs.
fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks: f64 = fields[11].parse::<f64>().ok()? + fields[12].parse::<f64>().ok()?;
    // SAFETY: sysconf only reads a configuration value.
    Some(ticks / unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64)
}

fn finished_at(record: &Value) -> chrono::DateTime<chrono::FixedOffset> {
    chrono::DateTime::parse_from_rfc3339(record["finished_at"].as_str().unwrap()).unwrap()
}

async fn night(options: &Options, dashboard: bool) -> Night {
    let standin = standin::Standin::new();
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let (budget, experiments) = (options.budget.to_string(), options.experiments.to_string());
    let mut flags = vec![
        "--agent",
        "offline",
        "--tag",
        "bench",
        "--time-budget",
        &budget,
        "--max-experiments",
        &experiments,
        "--noise-seeds",
        "1",
    ];
    if dashboard {
        flags.extend(["--dashboard", &addr]);
    }
    let mut child = standin.spawn(&flags, &standin.root().join("night.stderr"));
    let page = if dashboard {
        wait_for_port(port, Duration::from_secs(60), "run --dashboard");
        let browser = Browser::start().await;
        browser
            .client
            .goto(&format!("http://{addr}/"))
            .await
            .unwrap();
        Some(browser)
    } else {
        None
    };
    let mut cpu = 0.0;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        cpu = cpu_seconds(child.id()).unwrap_or(cpu);
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(status.success(), "the night failed");
    let live_updates = match page {
        Some(browser) => {
            let updates = browser.eval("return window.liveUpdates").await.as_u64();
            browser.quit().await;
            updates
        }
        None => None,
    };
    let records = standin.records("bench");
    let baseline = records.iter().find(|r| r["seq"] == 0).unwrap();
    let last = records.iter().map(finished_at).max().unwrap();
    let after = (records.len() - 1) as f64;
    Night {
        per_experiment: (last - finished_at(baseline)).as_seconds_f64() / after,
        cpu_per_experiment: cpu / records.len() as f64,
        live_updates,
    }
}

#[tokio::main]
async fn main() {
    let options = options();
    load_time(options.loads).await;
    let (mut without, mut with) = (Vec::new(), Vec::new());
    for round in 0..options.rounds {
        for dashboard in [false, true] {
            eprintln!(
                "round {round}: a night {} the dashboard...",
                if dashboard { "with" } else { "without" }
            );
            let night = night(&options, dashboard).await;
            if dashboard { &mut with } else { &mut without }.push(night);
        }
    }
    println!(
        "the loop, {} experiments at a {} s budget, each night of {} rounds (seconds per experiment \
         after the baseline; CPU seconds of the orchestrator's own process per experiment):",
        options.experiments, options.budget, options.rounds
    );
    for (name, nights) in [
        ("without the dashboard", &without),
        ("with a page open", &with),
    ] {
        let list = |values: Vec<String>| values.join(", ");
        let per = list(
            nights
                .iter()
                .map(|n| format!("{:.2}", n.per_experiment))
                .collect(),
        );
        let cpu = list(
            nights
                .iter()
                .map(|n| format!("{:.3}", n.cpu_per_experiment))
                .collect(),
        );
        let updates: Vec<String> = nights
            .iter()
            .filter_map(|n| n.live_updates)
            .map(|u| u.to_string())
            .collect();
        println!(
            "  {name}: {per} s per experiment; CPU {cpu} s{}",
            if updates.is_empty() {
                String::new()
            } else {
                format!("; live updates the page got: {}", updates.join(", "))
            }
        );
    }
}
