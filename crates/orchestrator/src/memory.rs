//! The memory of earlier runs: `memory.md` at the repository root, a file for people as much as
//! for the agents. When a tag starts, the orchestrator adds a digest of every run in `runs/` the
//! memory does not hold yet (the best results with their diffs, what was tried and did not help,
//! what crashed and why, a line each) and lists the run on its `Tags:` line; it only ever adds
//! lines, so a person's edits and deletions stay as they are. The LLM's brief carries the
//! memory's sections, and the offline search starts knowing the trials of the runs it lists.
//! `--fresh` starts a tag without it.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use crate::config::Config;
use crate::git::{EDITABLE, Git};
use crate::ledger::{self, Record, Status};
use crate::run_dir::RunDir;
use crate::text::one_line;

/// The file, at the repository root.
pub const FILE: &str = "memory.md";

/// The sections, in the order a new file has them.
const SECTIONS: [&str; 4] = ["Best results", "Tried without gain", "Crashes", "Notes"];
/// Lines of each run's digest, per section.
const BEST: usize = 5;
const TRIED: usize = 10;
const CRASHES: usize = 5;

const TAGS: &str = "Tags:";

const HEADER: &str = "# Memory of earlier runs

The orchestrator adds a digest of each finished run here when a new tag starts, and lists the
run on the `Tags:` line below; it never changes a line that is here. Edit freely: reword, delete,
add your own notes (under Notes); the LLM reads the sections below at every experiment, and the
offline search starts knowing the trials of the runs listed. Remove a run from `Tags:` to have
its digest added again; `--fresh` starts a tag without this memory.
";

/// `memory.md` as read: its header (the `Tags:` line among it) and its sections, line by line.
pub struct Memory {
    path: PathBuf,
    header: Vec<String>,
    sections: Vec<(String, Vec<String>)>,
    /// The runs it holds, in the order they were added.
    pub tags: Vec<String>,
}

impl Memory {
    /// Reads `path`; a memory that holds nothing when there is no such file.
    pub fn read(path: &Path) -> Result<Memory> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                format!("{HEADER}\n{TAGS}\n") + &SECTIONS.map(|s| format!("\n## {s}\n")).concat()
            }
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        parse(path, &text)
    }

    /// Adds the digest of run `tag`, whose records are `records` (their diffs read from `git`).
    pub fn add(&mut self, tag: &str, records: &[Record], git: &Git) {
        let digest = digest(tag, records, git);
        for (name, lines) in SECTIONS.iter().zip(digest) {
            if lines.is_empty() {
                continue;
            }
            let section = match self.sections.iter().position(|(n, _)| n == name) {
                Some(i) => &mut self.sections[i].1,
                None => {
                    self.sections.push((name.to_string(), vec![String::new()]));
                    &mut self.sections.last_mut().expect("just pushed").1
                }
            };
            let end = section
                .iter()
                .rposition(|l| !l.trim().is_empty())
                .map_or(0, |i| i + 1);
            section.splice(end..end, lines);
        }
        self.tags.push(tag.to_string());
        let tags = format!("{TAGS} {}", self.tags.join(", "));
        if let Some(line) = self.header.iter_mut().find(|l| l.starts_with(TAGS)) {
            *line = tags;
        }
    }

    pub fn write(&self) -> Result<()> {
        prepare::atomic::write(&self.path, self.text().as_bytes())
            .with_context(|| format!("writing {}", self.path.display()))
    }

    /// The whole file.
    pub fn text(&self) -> String {
        let mut lines = self.header.clone();
        for (name, body) in &self.sections {
            lines.push(format!("## {name}"));
            lines.extend(body.iter().cloned());
        }
        lines.join("\n") + "\n"
    }

    /// What the LLM is told: the sections, without the header written for people.
    pub fn sections(&self) -> String {
        let text = self.text();
        let header: usize = self.header.iter().map(|l| l.len() + 1).sum();
        text[header.min(text.len())..].trim().to_string()
    }
}

/// The header up to the first `## ` heading (it must hold the `Tags:` line), then sections
/// named as in [`SECTIONS`].
fn parse(path: &Path, text: &str) -> Result<Memory> {
    let what_to_do = "fix it by hand, or delete it to have it written again from the runs' \
                      records, or start with --fresh";
    let mut header = Vec::new();
    let mut sections: Vec<(String, Vec<String>)> = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if let Some(name) = line.strip_prefix("## ") {
            let name = name.trim();
            if !SECTIONS.contains(&name) {
                bail!(
                    "{} line {}: unknown section `## {name}`: the sections are {}; {what_to_do}",
                    path.display(),
                    i + 1,
                    SECTIONS.map(|s| format!("`## {s}`")).join(", ")
                );
            }
            sections.push((name.to_string(), Vec::new()));
        } else if let Some((_, body)) = sections.last_mut() {
            body.push(line.to_string());
        } else {
            header.push(line.to_string());
        }
    }
    let Some(tags) = header.iter().find_map(|l| l.strip_prefix(TAGS)) else {
        bail!(
            "{} has no `{TAGS}` line before its first section (the runs it holds, e.g. `{TAGS} \
             nov22, nov23`); {what_to_do}",
            path.display()
        );
    };
    let tags = tags
        .split(',')
        .map(|t| t.trim().to_string())
        .filter(|t| !t.is_empty())
        .collect();
    Ok(Memory {
        path: path.to_path_buf(),
        header,
        sections,
        tags,
    })
}

/// Earlier runs by tag, with their records.
pub type Runs = Vec<(String, Vec<Record>)>;

/// The memory a new run starts with, and the records of each run it holds: None with `--fresh`.
/// On a new tag, `memory.md` first gets the digest of every earlier run it does not hold yet
/// (each named on stderr).
pub fn open(cfg: &Config) -> Result<Option<(Memory, Runs)>> {
    if cfg.settings.fresh {
        return Ok(None);
    }
    let mut memory = Memory::read(&cfg.repo.join(FILE))?;
    if !cfg.settings.resume {
        let new: Vec<String> = earlier_tags(cfg)?
            .into_iter()
            .filter(|t| !memory.tags.contains(t))
            .collect();
        if !new.is_empty() {
            let git = Git::new(&cfg.repo);
            for tag in &new {
                memory.add(tag, &records(cfg, tag)?, &git);
            }
            memory.write()?;
            eprintln!(
                "memory | {FILE} holds the runs {} (added: {}); edit it freely, --fresh starts \
                 without it",
                memory.tags.join(", "),
                new.join(", ")
            );
        }
    }
    let mut runs = Vec::new();
    for tag in memory.tags.iter().filter(|t| **t != cfg.tag) {
        if RunDir::new(&cfg.repo, tag).experiments().exists() {
            runs.push((tag.clone(), records(cfg, tag)?));
        }
    }
    Ok(Some((memory, runs)))
}

/// The tags under `runs/` with records, but this one, in the order they started.
fn earlier_tags(cfg: &Config) -> Result<Vec<String>> {
    let Ok(entries) = std::fs::read_dir(RunDir::all(&cfg.repo)) else {
        return Ok(Vec::new());
    };
    let mut tags = Vec::new();
    for entry in entries {
        let tag = entry?.file_name().to_string_lossy().into_owned();
        if tag != cfg.tag && RunDir::new(&cfg.repo, &tag).experiments().exists() {
            let started = records(cfg, &tag)?
                .first()
                .map(|r| r.finished_at.clone())
                .unwrap_or_default();
            tags.push((started, tag));
        }
    }
    tags.sort();
    Ok(tags.into_iter().map(|(_, tag)| tag).collect())
}

/// Run `tag`'s records, read only; an error names the file and what to do.
fn records(cfg: &Config, tag: &str) -> Result<Vec<Record>> {
    ledger::read_records(&RunDir::new(&cfg.repo, tag)).with_context(|| {
        format!(
            "reading the records of the earlier run {tag} for the memory ({FILE}); fix that file \
             (nothing in it is changed here), or start with --fresh"
        )
    })
}

/// Run `tag`'s digest: the lines it adds to each of [`SECTIONS`].
fn digest(tag: &str, records: &[Record], git: &Git) -> [Vec<String>; 4] {
    let changes = || records.iter().filter(|r| r.seq > 0);
    let mut kept: Vec<&Record> = changes()
        .filter(|r| r.status == Status::Keep && r.val_bpb.is_some())
        .filter(|r| records.iter().all(|later| later.revoked != Some(r.seq)))
        .collect();
    kept.sort_by(|a, b| a.val_bpb.unwrap().total_cmp(&b.val_bpb.unwrap()));
    let baseline = records.iter().find(|r| r.seq == 0).and_then(|r| r.val_bpb);
    let mut best = vec![summary(tag, records, baseline, kept.first().copied())];
    best.extend(kept.iter().take(BEST).map(|r| {
        let diff = diff(git, r).map_or(String::new(), |d| format!(" | diff: {d}"));
        format!("- {}{diff}", line(tag, r))
    }));
    let tried: Vec<&Record> = changes()
        .filter(|r| matches!(r.status, Status::Discard | Status::Stale))
        .collect();
    let mut not_helped: Vec<String> = tried
        .iter()
        .rev()
        .take(TRIED)
        .map(|r| format!("- {}", line(tag, r)))
        .collect();
    if tried.len() > TRIED {
        not_helped.push(format!(
            "- {tag}: {} more (runs/{tag}/results.tsv)",
            tried.len() - TRIED
        ));
    }
    let crashes = changes()
        .rev()
        .filter(|r| r.status == Status::Crash && r.commit != r.parent)
        .take(CRASHES)
        .map(|r| format!("- {}", line(tag, r)))
        .collect();
    [best, not_helped, crashes, Vec::new()]
}

/// The run in a line: its baseline, its best, how many experiments, on what.
fn summary(tag: &str, records: &[Record], baseline: Option<f64>, best: Option<&Record>) -> String {
    let bpb = |v: Option<f64>| v.map_or("-".into(), |v| format!("{v:.6}"));
    let context = records
        .iter()
        .find(|r| r.seq == 0)
        .and_then(|r| r.result.as_ref()?.line())
        .map_or(String::new(), |r| {
            let budget = r.time_budget_s.map_or("?".into(), |b| b.to_string());
            format!(" on {} with {budget} s budgets", r.device)
        });
    let best = best.map_or("no keep".into(), |b| {
        format!("best {} (#{})", bpb(b.val_bpb), b.seq)
    });
    format!(
        "- {tag}: baseline {}, {best}, {} experiments{context}",
        bpb(baseline),
        records.len()
    )
}

/// `tag#seq status val_bpb delta: description`, with why it crashed.
fn line(tag: &str, r: &Record) -> String {
    let mut line = format!("{tag}#{} {}", r.seq, r.status.as_str());
    if let Some(v) = r.val_bpb {
        line += &format!(" val_bpb {v:.6}");
    }
    if let Some(d) = r.delta {
        line += &format!(" delta {d:+.6}");
    }
    line += &format!(": {}", one_line(&r.description, 160));
    if let Some(reason) = &r.reason {
        line += &format!(" [{}]", one_line(reason, 160));
    }
    line
}

/// The lines a change replaced and added in the trainer, on one line.
fn diff(git: &Git, r: &Record) -> Option<String> {
    let diff = git
        .run(&["diff", "-U0", &r.parent, &r.commit, "--", EDITABLE])
        .ok()?;
    let lines: Vec<&str> = diff
        .lines()
        .filter(|l| {
            (l.starts_with('+') || l.starts_with('-'))
                && !l.starts_with("+++")
                && !l.starts_with("---")
        })
        .collect();
    (!lines.is_empty()).then(|| one_line(&lines.join(" "), 240))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn records() -> Vec<Record> {
        let mut records = vec![
            Record::sample(0, Status::Keep, Some(2.0)),
            Record {
                delta: Some(-0.1),
                ..Record::sample(1, Status::Keep, Some(1.9))
            },
            Record {
                delta: Some(0.05),
                ..Record::sample(2, Status::Discard, Some(1.95))
            },
            Record {
                reason: Some("out of memory\n(limit 6.0 GiB)".into()),
                ..Record::sample(3, Status::Crash, None)
            },
        ];
        for r in &mut records {
            r.parent = format!("{:040}", r.seq.saturating_sub(1));
        }
        records
    }

    #[test]
    fn a_run_is_added_a_line_each_and_a_persons_edits_stay() {
        let dir = tempfile::tempdir().unwrap();
        let git = Git::new(dir.path());
        let path = dir.path().join(FILE);
        let mut memory = Memory::read(&path).unwrap();
        memory.add("nov22", &records(), &git);
        memory.write().unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains("\nTags: nov22\n"), "{text}");
        for line in [
            "## Best results\n- nov22: baseline 2.000000, best 1.900000 (#1), 4 experiments\n\
             - nov22#1 keep val_bpb 1.900000 delta -0.100000: change 1\n\n## Tried",
            "## Tried without gain\n- nov22#2 discard val_bpb 1.950000 delta +0.050000: change 2\n",
            "## Crashes\n- nov22#3 crash: change 3 [out of memory (limit 6.0 GiB)]\n",
        ] {
            assert!(text.contains(line), "{line:?} in {text}");
        }
        // A person rewords a line, deletes another, adds a note; the next run's digest keeps them.
        let edited = text
            .replace("change 2", "raising the lr did not help")
            .replace(
                "- nov22#3 crash: change 3 [out of memory (limit 6.0 GiB)]\n",
                "",
            )
            + "try a longer warm-down\n";
        std::fs::write(&path, &edited).unwrap();
        let mut memory = Memory::read(&path).unwrap();
        assert_eq!(memory.tags, ["nov22"]);
        memory.add("nov23", &records(), &git);
        let text = memory.text();
        assert!(text.contains("\nTags: nov22, nov23\n"), "{text}");
        assert!(text.contains("nov22#2 discard val_bpb 1.950000 delta +0.050000: raising the lr did not help\n- nov23#2"), "{text}");
        assert!(
            !text.contains("nov22#3 crash") && text.contains("nov23#3 crash"),
            "{text}"
        );
        assert!(
            text.ends_with("## Notes\ntry a longer warm-down\n"),
            "{text}"
        );
        assert!(
            memory
                .sections()
                .starts_with("## Best results\n- nov22: baseline")
        );
        assert!(!memory.sections().contains("Edit freely"));
    }

    #[test]
    fn a_memory_that_does_not_parse_is_named_with_what_to_do() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE);
        for (text, expected) in [
            (
                "# Memory\nTags: a\n\n## Ideas\n- x\n",
                "memory.md line 4: unknown section `## Ideas`",
            ),
            (
                "# Memory\n\n## Notes\n- x\n",
                "memory.md has no `Tags:` line",
            ),
        ] {
            std::fs::write(&path, text).unwrap();
            let err = format!("{:#}", Memory::read(&path).err().unwrap());
            assert!(err.contains(expected) && err.contains("--fresh"), "{err}");
            assert_eq!(
                std::fs::read_to_string(&path).unwrap(),
                text,
                "left as it was"
            );
        }
    }
}
