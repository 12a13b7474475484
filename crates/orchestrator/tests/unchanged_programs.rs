//! Runs of programs that are not the agent's change (the unmodified baseline, the best's kept
//! trainer), through the real loop on the stand-in trainer of `common/standin.rs`. Such a program
//! ran well before, so a failure of it is more likely the machine's: it runs (or builds) once
//! more before anything is concluded, and a best that a later run shows non-causal loses its keep.
//!
//! - `a_baseline_run_that_fails_once_runs_again_and_the_night_goes_on`: the baseline's first run
//!   fails; it runs once more, the record says so, and the night goes on.
//! - `a_baseline_that_fails_twice_ends_the_night_with_a_clear_message`: it fails again; the run
//!   stops, saying what failed twice and what to do, and records nothing.
//! - `a_baseline_build_stopped_at_its_limit_builds_once_more`: the baseline's first build runs past
//!   `limits.build_seconds` and is stopped; it builds once more and the night goes on.
//! - `a_best_judged_non_causal_on_a_re_run_loses_its_keep`: a scripted agent's kept change exports
//!   a model that peeks on every run but its first; run beside a later change, it is judged
//!   non-causal: the later change is discarded unjudged, its record revokes the keep, the branch
//!   goes back to the baseline, the next proposal starts there and its brief marks the revoked
//!   keep.
//!
//! The failing runs are told apart by their export directory (`export-<seq>.<run>`), which the
//! trainer sees with the sandbox off; the slow build by the runs its build script counts in the
//! target directory, the one thing a build's jail keeps.

mod common;
#[path = "common/standin.rs"]
mod standin;

use common::llm::{Script, Server, edit, finish, record};
use serde_json::Value;
use standin::Standin;

/// The runs here start the loop one at a time.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

const TAG: &str = "u";

/// Where the stand-in trainer starts.
const TRAINER_START: &str = "    let started = Instant::now();\n    let budget: f64";

/// The stand-in with a trainer that fails every run whose export directory is one of `runs`
/// (`"export-0.0"`: the baseline's first run), with the sandbox off so that it sees which.
fn flaky_baseline(runs: &[&str]) -> Standin {
    let standin = Standin::new();
    let main_rs = standin.repo.join("crates/train/src/main.rs");
    let source = std::fs::read_to_string(&main_rs).unwrap();
    assert!(source.contains(TRAINER_START));
    let failing = format!(
        "    let export = std::env::var(\"AUTORESEARCH_EXPORT\").unwrap_or_default();\n    \
         if {runs:?}.iter().any(|run| export.contains(&format!(\"/{{run}}/\"))) {{\n        \
         eprintln!(\"a flaky machine: this run fails\");\n        std::process::exit(1);\n    }}\n"
    );
    std::fs::write(
        &main_rs,
        source.replacen(TRAINER_START, &format!("{failing}{TRAINER_START}"), 1),
    )
    .unwrap();
    standin.git(&["commit", "--quiet", "-am", "a flaky baseline"]);
    standin.settings("sandbox = \"off\"\n");
    standin
}

fn offline(experiments: u64) -> Vec<String> {
    [
        "--agent",
        "offline",
        "--tag",
        TAG,
        "--time-budget",
        "1",
        "--noise-seeds",
        "2",
        "--max-experiments",
        &experiments.to_string(),
    ]
    .map(String::from)
    .to_vec()
}

fn strs(flags: &[String]) -> Vec<&str> {
    flags.iter().map(String::as_str).collect()
}

fn flags(record: &Value) -> String {
    record["flags"].to_string()
}

#[test]
fn a_baseline_run_that_fails_once_runs_again_and_the_night_goes_on() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let standin = flaky_baseline(&["export-0.0"]);
    let out = standin.run(&strs(&offline(2)));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let records = standin.records(TAG);
    let baseline = record(&records, 0);
    assert_eq!(baseline["status"], "keep", "{baseline:#}");
    assert!(
        flags(baseline).contains("a run of the baseline failed (no result line (exit status: 1))"),
        "{baseline:#}"
    );
    assert!(flags(baseline).contains("it ran once more"), "{baseline:#}");
    // Both noise seeds scored; the failed run's log is kept beside theirs.
    assert_eq!(baseline["trials"].as_array().unwrap().len(), 2);
    let log = std::fs::read_to_string(standin.run_dir(TAG).join("logs/0.log")).unwrap();
    assert!(log.contains("a flaky machine: this run fails"), "{log}");
    // The night went on.
    record(&records, 1);
}

#[test]
fn a_baseline_that_fails_twice_ends_the_night_with_a_clear_message() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let standin = flaky_baseline(&["export-0.0", "export-0.1"]);
    let out = standin.run(&strs(&offline(2)));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains(
            "the unmodified baseline failed (no result line (exit status: 1)), and again when it \
             ran once more"
        ),
        "{stderr}"
    );
    assert!(stderr.contains("then continue with --resume"), "{stderr}");
    assert!(standin.records(TAG).is_empty());
    let logs = standin.run_dir(TAG).join("logs");
    for log in ["0.log", "0.1.log"] {
        let text = std::fs::read_to_string(logs.join(log)).unwrap();
        assert!(text.contains("a flaky machine"), "{log}: {text}");
    }
}

/// A build script that sleeps past any build limit the second time it runs: the evaluator's
/// build at start runs it first, the baseline's build again (its sources are touched before
/// it), the baseline's second build a third time. It counts its runs in the target directory.
const SLOW_ONCE: &str = r#"fn main() {
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR").unwrap());
    // <target>/release/build/train-<hash>/out: the count goes in <target>/release.
    let count = out.ancestors().nth(3).unwrap().join("build-script-runs");
    let runs = std::fs::read_to_string(&count).unwrap_or_default().len();
    std::fs::write(&count, "x".repeat(runs + 1)).unwrap();
    if runs == 1 {
        std::thread::sleep(std::time::Duration::from_secs(600));
    }
}
"#;

#[test]
fn a_baseline_build_stopped_at_its_limit_builds_once_more() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let standin = Standin::new();
    std::fs::write(standin.repo.join("crates/train/build.rs"), SLOW_ONCE).unwrap();
    standin.git(&["add", "crates/train/build.rs"]);
    standin.git(&[
        "commit",
        "--quiet",
        "-m",
        "a build script that is slow once",
    ]);
    // Long enough for the stand-in's build on a loaded machine, short of the sleep.
    standin.settings("[limits]\nbuild_seconds = 60\n");
    let out = standin.run(&strs(&offline(1)));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains(
            "#0 the baseline's build was stopped (build over 60 s: stopped \
             (limits.build_seconds)); it builds once more"
        ),
        "{stderr}"
    );
    let runs = std::fs::read_to_string(standin.target.join("release/build-script-runs")).unwrap();
    // The evaluator's build, the stopped one, the one after it (and the rule tests' builds).
    assert!(runs.len() >= 3, "{runs}");
    assert_eq!(record(&standin.records(TAG), 0)["status"], "keep");
}

/// The stand-in's score and its model file, which the scripted changes edit.
const SCORE: &str = "    1.0 + bowl(k.lr, lr, 0.02)";
const MODEL_TEXT: &str = r#"format!("standin-model 1\nbpb {bpb:.9}\nseed {seed}\n")"#;

#[test]
fn a_best_judged_non_causal_on_a_re_run_loses_its_keep() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let standin = Standin::new();
    // A known noise floor, so that #1 is a clear gain and #2 one within the noise, which is
    // then settled side by side with #1; no baseline seeds, so that re-runs may start.
    standin.settings("noise_seeds = 1\nnoise_sigma = 0.003\nrerun_share = 1.0\n");
    let lower = |by: &str| SCORE.replace("1.0 +", by);
    // #1: 0.04 better, and its model peeks whenever it runs with another seed than its first.
    let peeking = r#"format!("standin-model 1\nbpb {bpb:.9}\nseed {seed}\nprobe_max_diff {}\n", if seed == 42 { 0.0 } else { 0.5 })"#;
    let server = Server::start(Script::new([
        (
            1,
            vec![
                edit(SCORE, &lower("0.96 +")),
                edit(MODEL_TEXT, peeking),
                finish("a better model that peeks on re-runs"),
            ],
        ),
        (
            2,
            vec![
                edit(&lower("0.96 +"), &lower("0.959 +")),
                finish("a gain within the noise"),
            ],
        ),
        (
            3,
            vec![
                edit(SCORE, &lower("0.99 +")),
                finish("from the baseline again"),
            ],
        ),
    ]));
    let out = standin.run_with_llm(&server.base_url, TAG, 4);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");

    let records = standin.records(TAG);
    let (baseline, peeker, beside) = (
        record(&records, 0),
        record(&records, 1),
        record(&records, 2),
    );
    assert_eq!(peeker["status"], "keep", "{peeker:#}");
    // #2 ran beside #1 twice: the first re-run (seed 42) was causal, the second was not.
    assert_eq!(beside["status"], "discard", "{beside:#}");
    assert_eq!(beside["revoked"], 1, "{beside:#}");
    assert_eq!(beside["best_trials"].as_array().unwrap().len(), 1);
    let rule = beside["rule"].as_str().unwrap();
    assert!(
        rule.contains("the best #1 it ran beside was judged non-causal on a re-run"),
        "{rule}"
    );
    assert!(flags(beside).contains("its keep is revoked"), "{beside:#}");
    // The branch went back to the keep before #1, and #1's head is kept reachable.
    let branch = standin.git(&["rev-parse", &format!("autoresearch/{TAG}")]);
    let next = record(&records, 3);
    assert_eq!(next["parent"], baseline["commit"], "{next:#}");
    let superseded = standin.git(&[
        "for-each-ref",
        "--format=%(objectname)",
        "refs/autoresearch/",
    ]);
    assert!(
        superseded.contains(peeker["commit"].as_str().unwrap()),
        "{superseded}"
    );
    if next["status"] != "keep" {
        assert_eq!(branch, baseline["commit"].as_str().unwrap());
    }
    // The next proposal was told.
    let script = server.script.lock().unwrap();
    let brief = script.requests_of(3)[0]["messages"].to_string();
    assert!(
        brief.contains("[keep revoked by #2: judged non-causal on a re-run]"),
        "{brief}"
    );
}
