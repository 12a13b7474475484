//! A tiny prepared dataset for the tests of every crate: a deterministic synthetic corpus with
//! enough structure to learn from, prepared in about a second; and the Python whose torch the
//! builds link, for models only TorchScript can express.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::contract::Profile;
use crate::pipeline::{self, Options, Source};
use crate::rng::SplitMix64;

const DOCS: usize = 120;
const WORDS: [&str; 24] = [
    "the", "a", "cat", "dog", "bird", "sees", "chases", "likes", "small", "red", "quick", "lazy",
    "and", "then", "river", "tree", "house", "runs", "sleeps", "over", "under", "green", "old",
    "sun",
];

/// Prepares the tiny dataset under `dir` (once; later calls only open it) and returns its data
/// directory: vocab 512, seq_len 64, the whole validation split scored, a 5 s budget.
pub fn tiny_dataset(dir: &Path) -> Result<PathBuf> {
    let data_dir = dir.join("data").join("tiny");
    if data_dir.join("contract.json").exists() {
        return Ok(data_dir);
    }
    let corpus_dir = dir.join("corpus");
    fs::create_dir_all(&corpus_dir)
        .with_context(|| format!("creating {}", corpus_dir.display()))?;
    let mut rng = SplitMix64(7);
    for i in 0..DOCS {
        fs::write(
            corpus_dir.join(format!("{i:03}.txt")),
            synthetic_document(&mut rng),
        )?;
    }
    pipeline::run(&Options {
        source: Source::Files {
            name: "tiny".into(),
            inputs: vec![corpus_dir],
        },
        data_dir: data_dir.clone(),
        vocab_size: 512,
        profile: Profile::Cpu,
        seq_len: Some(64),
        eval_bytes: Some(u64::MAX),
        time_budget_s: 5.0,
    })?;
    Ok(data_dir)
}

/// Copies the git-tracked files of this workspace into `to`: a scratch workspace that tests can
/// edit, build and run without touching the real one.
pub fn copy_workspace(to: &Path) -> Result<()> {
    let root = crate::workspace_root();
    let listing = std::process::Command::new("git")
        .arg("-C")
        .arg(&root)
        .arg("ls-files")
        .output()
        .context("running git ls-files")?;
    for file in String::from_utf8(listing.stdout)?.lines() {
        let target = to.join(file);
        fs::create_dir_all(target.parent().expect("a file has a parent"))?;
        fs::copy(root.join(file), &target).with_context(|| format!("copying {file}"))?;
    }
    Ok(())
}

/// A title line and sentences of a small grammar: predictable enough that a model learns it in
/// seconds, varied enough that it is not memorised at once.
fn synthetic_document(rng: &mut SplitMix64) -> String {
    let mut pick = |n: usize| rng.below(n);
    let mut doc = format!("= Story {} =\n", pick(1000));
    for _ in 0..20 + pick(30) {
        let words: Vec<&str> = (0..4 + pick(6)).map(|_| WORDS[pick(WORDS.len())]).collect();
        let mut sentence = words.join(" ");
        sentence[..1].make_ascii_uppercase();
        doc.push_str(&sentence);
        doc.push_str(if pick(5) == 0 { ".\n" } else { ". " });
    }
    doc
}

/// The Python that owns the torch the binaries link (`.libtorch`, see scripts/setup-libtorch.sh),
/// else a `python3` that imports torch.
pub fn torch_python() -> PathBuf {
    let libtorch = crate::workspace_root().join(".libtorch");
    let libtorch = libtorch.canonicalize().unwrap_or(libtorch);
    // <env>/lib/pythonX.Y/site-packages/torch -> <env>/bin/python
    let owner = libtorch
        .ancestors()
        .nth(4)
        .map(|env| env.join("bin/python"))
        .unwrap_or_default();
    [owner, "python3".into()]
        .into_iter()
        .find(|py| {
            std::process::Command::new(py)
                .args(["-c", "import torch"])
                .output()
                .is_ok_and(|o| o.status.success())
        })
        .expect("a Python with torch (scripts/setup-libtorch.sh)")
}
