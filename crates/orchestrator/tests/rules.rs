//! The trainer's rule tests guard the branch (see `research::guard` and `rules`). They live in
//! `crates/train/rules.rs`, where the agent cannot write, and both changes below restore the
//! learning rate (a clear gain, which one seed and no noise floor would keep on its score):
//!
//! - #1 also stretches the short attention windows past the context, breaking a rule: it is a
//!   crash, its log names the failing test;
//! - #2 also deletes the rule tests' declaration from `main.rs`, so that no rule would run: it
//!   is a crash, its log says the declaration must stay.
//!
//! The branch stays at the baseline, which passes the same rule tests.

mod common;

use common::llm::{Script, Server, edit, finish};
use common::{CRIPPLED, GOOD, SERIAL, Sandbox};

const SHORT_WINDOW: &str = "self.seq_len / 2";
const DECLARATION: &str = "#[cfg(test)]\n#[path = \"../rules.rs\"]\nmod rules;";

#[test]
fn a_keep_that_breaks_or_deletes_the_rule_tests_is_a_crash() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let sandbox = Sandbox::new();
    let main_rs = std::fs::read_to_string(sandbox.repo.join("crates/train/src/main.rs")).unwrap();
    assert!(main_rs.contains(SHORT_WINDOW) && main_rs.contains(DECLARATION));
    sandbox.crippled_baseline("grace = 20\nnoise_seeds = 1\n");

    let server = Server::start(Script::new([
        (
            1,
            vec![
                edit(CRIPPLED, GOOD),
                edit(SHORT_WINDOW, "self.seq_len * 2"),
                finish("restore the learning rate, and windows past the context"),
            ],
        ),
        (
            2,
            vec![
                edit(CRIPPLED, GOOD),
                edit(DECLARATION, ""),
                finish("restore the learning rate, and no rule tests"),
            ],
        ),
    ]));
    let out = sandbox.run_with_llm(&server, "rules", 3, "sk-test");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");

    let records = sandbox.records("rules");
    assert_eq!(records.len(), 3, "{records:#?}");
    let baseline = common::llm::record(&records, 0);
    assert_eq!(baseline["status"], "keep", "{baseline:#?}");
    let log_says = |seq: u64, words: &[&str]| {
        let change = common::llm::record(&records, seq);
        assert_eq!(change["status"], "crash", "{change:#?}");
        let reason = change["reason"].as_str().unwrap();
        assert!(reason.contains("rule tests"), "{reason}");
        let log = std::fs::read_to_string(sandbox.repo.join(format!("runs/rules/logs/{seq}.log")))
            .unwrap();
        for word in words {
            assert!(log.contains(word), "#{seq}'s log lacks {word:?}:\n{log}");
        }
    };
    log_says(
        1,
        &["rule tests failed", "every_window_lies_within_the_context"],
    );
    log_says(2, &["rule tests failed", "must include the rule tests"]);
    // The branch stays at the baseline.
    let head = sandbox.git(&["rev-parse", "autoresearch/rules"]);
    let baseline = baseline["commit"].as_str().unwrap();
    assert!(head.starts_with(baseline), "{head} vs {baseline}");
}
