//! The protected evaluator's jail holds the model it runs to the limits the trainer has, through
//! the real loop on the stand-in trainer of `common/standin.rs` with a scripted agent (see
//! `common::llm`); the real evaluator meets the same attack in `scoring_attacks.rs`.
//!
//! - `a_model_that_fills_the_evaluators_memory_is_a_crash_that_says_so`: the change exports a
//!   model that takes 2 GiB while it is scored, with `limits.memory_gib` 1: the evaluator's own
//!   control group stops it, the record says "the protected evaluation: out of memory (limit
//!   1.0 GiB)", and the night goes on.

mod common;
#[path = "common/standin.rs"]
mod standin;

use common::llm::{Script, Server, edit, finish, record};
use standin::Standin;

#[test]
fn a_model_that_fills_the_evaluators_memory_is_a_crash_that_says_so() {
    let standin = Standin::new();
    // A baseline whose scoring takes 4 s, as a real one does: the evaluation's limit follows it,
    // and leaves the kernel time to find the hog on a loaded machine (7.6 s for 2 GiB against
    // 1 GiB, measured beside other work on 2 cores).
    let main_rs = standin.repo.join("crates/train/src/main.rs");
    let model_text = r#"format!("standin-model 1\nbpb {bpb:.9}\nseed {seed}\n")"#;
    let slow = r#"format!("standin-model 1\nbpb {bpb:.9}\nseed {seed}\nscoring_seconds 4\n")"#;
    let source = std::fs::read_to_string(&main_rs).unwrap();
    assert!(source.contains(model_text));
    std::fs::write(&main_rs, source.replace(model_text, slow)).unwrap();
    standin.git(&[
        "commit",
        "--quiet",
        "-am",
        "a baseline whose scoring takes 4 s",
    ]);
    standin.settings("noise_seeds = 1\n\n[limits]\nmemory_gib = 1\n");
    // Two lines: a change of lines that all name the seed would be refused as a reseed.
    let hog = "let hog = 2usize << 30;\n    \
               format!(\"standin-model 1\\nbpb {bpb:.9}\\nseed {seed}\\nscoring_seconds 4\\nhog {hog}\\n\")";
    let score = "    1.0 + bowl(k.lr, lr, 0.02)";
    let server = Server::start(Script::new([
        (
            1,
            vec![edit(slow, hog), finish("a model that fills memory")],
        ),
        (
            2,
            vec![
                edit(score, "    0.99 + bowl(k.lr, lr, 0.02)"),
                finish("a better one"),
            ],
        ),
    ]));
    let out = standin.run_with_llm(&server.base_url, "e", 3);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let records = standin.records("e");
    let hog = record(&records, 1);
    assert_eq!(hog["status"], "crash", "{hog:#}");
    assert_eq!(
        hog["reason"], "the protected evaluation: out of memory (limit 1.0 GiB)",
        "{hog:#}"
    );
    // The night went on.
    assert_eq!(record(&records, 2)["status"], "keep");
}
