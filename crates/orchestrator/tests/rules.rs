//! The trainer's rule tests guard the branch (see `research::guard`):
//!
//! - #1 restores the learning rate (a clear gain, kept on its score) but also breaks a rule test
//!   of `crates/train/src/tests.rs`: it is a crash, its log names the failing test, and the
//!   branch stays at the baseline.
//!
//! The baseline, a keep, passes the same rule tests.

mod common;

use common::llm::{Script, Server, call, edit, finish};
use common::{CRIPPLED, GOOD, SERIAL, Sandbox};
use serde_json::json;

const RULE: &str = r#"assert!(w >= 1 && w <= cfg.seq_len, "layer {layer}: window {w}");"#;

#[test]
fn a_keep_that_breaks_a_rule_test_is_a_crash() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let sandbox = Sandbox::new();
    let tests_rs = sandbox.repo.join("crates/train/src/tests.rs");
    assert!(std::fs::read_to_string(&tests_rs).unwrap().contains(RULE));
    // One seed: no noise floor, so the gain alone would be kept.
    sandbox.crippled_baseline("grace = 20\nnoise_seeds = 1\n");

    let server = Server::start(Script::new([(
        1,
        vec![
            edit(CRIPPLED, GOOD),
            call(
                "edit_file",
                json!({
                    "path": "crates/train/src/tests.rs",
                    "old_string": RULE,
                    "new_string": r#"assert!(w > cfg.seq_len, "layer {layer}: window {w}");"#,
                }),
            ),
            finish("restore the learning rate, and a wrong rule"),
        ],
    )]));
    let out = sandbox.run_with_llm(&server, "rules", 2, "sk-test");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");

    let records = sandbox.records("rules");
    assert_eq!(records.len(), 2, "{records:#?}");
    let (baseline, change) = (
        common::llm::record(&records, 0),
        common::llm::record(&records, 1),
    );
    assert_eq!(baseline["status"], "keep", "{baseline:#?}");
    assert_eq!(change["status"], "crash", "{change:#?}");
    let reason = change["reason"].as_str().unwrap();
    assert!(reason.contains("rule tests"), "{reason}");
    let log = std::fs::read_to_string(sandbox.repo.join("runs/rules/logs/1.log")).unwrap();
    assert!(
        log.contains("rule tests failed") && log.contains("every_window_lies_within_the_context"),
        "{log}"
    );
    // The branch stays at the baseline.
    let head = sandbox.git(&["rev-parse", "autoresearch/rules"]);
    let baseline = baseline["commit"].as_str().unwrap();
    assert!(head.starts_with(baseline), "{head} vs {baseline}");
}
