//! Runs that start from earlier runs: the memory of earlier tags (memory.md), `--from` and
//! `--fresh`, end to end on the stand-in trainer (`common/standin.rs`: second-long builds, a
//! trainer that sleeps its budget and exports a scripted score of its constants) with the offline
//! search and the scripted LLM server (`common::llm`).
//!
//! - `a_second_tag_remembers_the_first_and_starts_where_it_is_told`: tag `a` (offline, baseline
//!   and three proposals); tag `b` starts `--from a:N` (one of a's proposals, kept or discarded)
//!   at that experiment's commit, its memory.md holds a's experiments, its first record says
//!   where it started and what it remembers, and its own proposals are none of a's settings; tag
//!   `c` (the LLM, `tune_share = 0.5`) gets a brief that holds a's and b's experiments, and its
//!   #2 is the search's, not the LLM's. A `--from` that names nothing
//!   and a memory.md that does not parse stop the start with a clear error and make no branch;
//!   `--fresh` does not read the memory.

mod common;
#[path = "common/standin.rs"]
mod standin;

use common::llm::{Script, Server, edit, finish};
use serde_json::Value;
use standin::Standin;

const SOURCE: &str = "crates/train/src/main.rs";

fn offline(standin: &Standin, tag: &str, extra: &[&str]) -> std::process::Output {
    let args = [
        &[
            "--agent",
            "offline",
            "--time-budget",
            "1",
            "--noise-seeds",
            "1",
        ][..],
        &["--tag", tag, "--max-experiments", "4"],
        extra,
    ]
    .concat();
    standin.run(&args)
}

/// The trainer at each recorded commit of run `tag`, by experiment number.
fn trainers(standin: &Standin, tag: &str) -> Vec<(u64, String)> {
    standin
        .records(tag)
        .iter()
        .map(|r| {
            let commit = r["commit"].as_str().unwrap();
            let trainer = common::git(&standin.repo, &["show", &format!("{commit}:{SOURCE}")]);
            (r["seq"].as_u64().unwrap(), trainer)
        })
        .collect()
}

#[test]
fn a_second_tag_remembers_the_first_and_starts_where_it_is_told() {
    let standin = Standin::new();
    let out = offline(&standin, "a", &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let a = standin.records("a");
    let from = a
        .iter()
        .find(|r| r["seq"].as_u64() > Some(0) && r["status"] != "crash")
        .unwrap_or_else(|| panic!("every proposal of a crashed: {a:#?}"));
    let from_ref = format!("a:{}", from["seq"]);

    let out = offline(&standin, "b", &["--from", &from_ref]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("memory | memory.md holds the runs a (added: a)"),
        "{stderr}"
    );
    let b = standin.records("b");
    let baseline = b.iter().find(|r| r["seq"] == 0).unwrap();
    assert_eq!(
        baseline["commit"], from["commit"],
        "b starts at {from_ref}'s commit"
    );
    assert_eq!(baseline["start"]["from"], from_ref.as_str());
    assert_eq!(baseline["start"]["commit"], from["commit"]);
    assert_eq!(baseline["start"]["memory"], serde_json::json!(["a"]));
    let memory = std::fs::read_to_string(standin.repo.join("memory.md")).unwrap();
    assert!(memory.contains("\nTags: a\n"), "{memory}");
    for r in a.iter().filter(|r| r["seq"] != 0) {
        let line = format!("- a#{} {}", r["seq"], r["status"].as_str().unwrap());
        assert!(memory.contains(&line), "{line:?} in {memory}");
    }
    // b's search knew a's settings: none is proposed again.
    let a_trainers = trainers(&standin, "a");
    for (seq, trainer) in trainers(&standin, "b")
        .into_iter()
        .filter(|(seq, _)| *seq > 0)
    {
        assert!(
            a_trainers.iter().all(|(_, t)| *t != trainer),
            "b#{seq} re-ran a setting of a"
        );
    }

    // The LLM of tag c (from HEAD) is told what a and b found; with `tune_share = 0.5` the search
    // proposes every other experiment, #2 here.
    standin.settings("tune_share = 0.5\n");
    let server = Server::start(Script::new([(
        1,
        vec![
            edit("const CPU_LR: f64 = 0.01;", "const CPU_LR: f64 = 0.03;"),
            finish("a higher learning rate"),
        ],
    )]));
    let out = standin
        .command(&[
            "--agent",
            "openai",
            "--model",
            "scripted",
            "--time-budget",
            "1",
        ])
        .args(["--noise-seeds", "1", "--tag", "c", "--max-experiments", "3"])
        .env("OPENAI_BASE_URL", &server.base_url)
        .env("OPENAI_API_KEY", "sk-test")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let brief = brief(server.script.lock().unwrap().requests_of(1)[0]);
    assert!(brief.contains("# Memory of earlier runs"), "{brief}");
    for line in ["- a: baseline ", "- b: baseline ", "- a#1 ", "- b#1 "] {
        assert!(brief.contains(line), "{line:?} in {brief}");
    }

    let script = server.script.lock().unwrap();
    assert!(script.requests_of(2).is_empty(), "#2 is the search's");
    drop(script);
    let c = standin.records("c");
    let tuned = c.iter().find(|r| r["seq"] == 2).unwrap();
    let description = tuned["description"].as_str().unwrap();
    assert!(description.contains(" -> "), "{description}");

    // What names nothing, or a memory that does not parse, stops the start and makes no branch.
    for (args, expected) in [
        (
            &["--from", "nosuch:1"][..],
            "--from nosuch:1: there is no run nosuch",
        ),
        (
            &["--from", "a:99"],
            "--from a:99: run a recorded no experiment 99",
        ),
        (
            &["--from", "0123456789abcdef"],
            "is not a commit, branch or TAG:SEQ",
        ),
    ] {
        let out = offline(&standin, "d", args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && stderr.contains(expected),
            "{stderr}"
        );
    }
    let memory = std::fs::read_to_string(standin.repo.join("memory.md")).unwrap();
    std::fs::write(
        standin.repo.join("memory.md"),
        memory.replace("## Notes", "## Ideas"),
    )
    .unwrap();
    let out = offline(&standin, "d", &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success()
            && stderr.contains("memory.md line")
            && stderr.contains("unknown section `## Ideas`")
            && stderr.contains("--fresh"),
        "{stderr}"
    );
    // --fresh does not read it: the start gets as far as the next bad input.
    let out = offline(&standin, "d", &["--fresh", "--from", "nosuch:1"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("there is no run nosuch"), "{stderr}");
    assert!(
        common::git(&standin.repo, &["branch", "--list", "autoresearch/d"]).is_empty(),
        "no branch for a start that failed"
    );
}

/// The brief a conversation opened with: its first user message.
fn brief(request: &Value) -> String {
    request["messages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["role"] == "user")
        .map(|m| m["content"].as_str().unwrap().to_string())
        .unwrap()
}
