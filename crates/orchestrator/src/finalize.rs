//! `orchestrator finalize`: the night's kept changes as a branch ready for review and merge,
//! `autoresearch/<tag>-final`: on top of the run's base commit, one commit per kept change that
//! the latest confirmation of the best did not refute, each message holding its measured gain.
//! A change left out may take a later one with it where that one builds on it (said, never
//! silent). The run's own branch and refs are never touched; the commits are made in the
//! morning worktree (see `confirm`).

use std::path::Path;

use anyhow::{Result, bail};

use crate::config::FinalizeArgs;
use crate::confirm::records::{self, Confirmation};
use crate::confirm::{kept_changes, open_run, open_worktree};
use crate::git::Git;
use crate::ledger::{self, Record};

/// `orchestrator finalize`.
pub fn run(args: FinalizeArgs, repo: &Path) -> Result<()> {
    let (cfg, records) = open_run(args.tag, repo)?;
    let checkout = Git::new(&cfg.repo);
    let (Some(baseline), Some(best)) = (
        records.iter().find(|r| r.seq == 0),
        ledger::best(&records).filter(|b| b.seq > 0),
    ) else {
        bail!(
            "run {} kept no change over its baseline: nothing to finalize",
            cfg.tag
        );
    };
    let entries = records::read(&cfg.run_dir)?;
    let confirmation = records::latest(&entries, &best.commit);
    if let Some(gain) = confirmation.and_then(|c| c.gain).filter(|g| g.refuted()) {
        bail!(
            "the latest confirmation found no gain of the best #{} over the baseline ({}): \
             nothing to finalize; see `report --tag {}`",
            best.seq,
            gain.describe(),
            cfg.tag
        );
    }
    let branch = format!("autoresearch/{}-final", cfg.tag);
    let reference = format!("refs/heads/{branch}");
    if checkout.run(&["symbolic-ref", "--quiet", "HEAD"]).ok() == Some(reference.clone()) {
        bail!("{branch} is checked out here; switch to another branch first");
    }
    let keeps = kept_changes(&checkout, &records, best)?;
    let git = Git::new(&open_worktree(&cfg, &baseline.commit)?);
    let (tip, left_out) = commits(&git, &cfg.tag, baseline, &keeps, confirmation)?;
    let previous = checkout
        .run(&["rev-parse", "--verify", "--quiet", &reference])
        .ok();
    checkout.run(&["update-ref", &reference, &tip])?;
    print!(
        "{}",
        outcome(&checkout, &branch, baseline, &tip, &left_out, confirmation)?
    );
    if let Some(previous) = previous.filter(|p| *p != tip) {
        println!("  (it was at {previous} before)");
    }
    Ok(())
}

/// One commit per kept change on top of the baseline, in `git`'s worktree: the tip, and the
/// changes left out with why.
fn commits(
    git: &Git,
    tag: &str,
    baseline: &Record,
    keeps: &[&Record],
    confirmation: Option<&Confirmation>,
) -> Result<(String, Vec<String>)> {
    let mut tip = baseline.commit.clone();
    let mut left_out = Vec::new();
    for keep in keeps {
        if confirmation.is_some_and(|c| c.refuted().contains(&keep.seq)) {
            left_out.push(format!("#{} (refuted by the confirmation)", keep.seq));
            continue;
        }
        let message = message(tag, keep, confirmation);
        match git.reapply(&keep.parent, &keep.commit, &tip, &message)? {
            Some(commit) => tip = commit,
            None => left_out.push(format!(
                "#{} (it does not apply without the changes left out before it)",
                keep.seq
            )),
        }
    }
    Ok((tip, left_out))
}

/// What `finalize` did, for people.
fn outcome(
    git: &Git,
    branch: &str,
    baseline: &Record,
    tip: &str,
    left_out: &[String],
    confirmation: Option<&Confirmation>,
) -> Result<String> {
    let log = git.run(&[
        "log",
        "--reverse",
        "--format=  %h %s",
        &format!("{}..{tip}", baseline.commit),
    ])?;
    let commits = match log.lines().count() {
        1 => "1 commit".to_string(),
        n => format!("{n} commits"),
    };
    let mut out = format!(
        "{branch}: {commits} on the run's base {}, ready for review:\n{log}\n",
        &baseline.commit[..baseline.commit.len().min(7)]
    );
    if !left_out.is_empty() {
        out += &format!("left out: {}\n", left_out.join(", "));
    }
    if confirmation.is_none() {
        out += "not confirmed: each gain is as the night measured it once; `confirm --ablate` \
                re-checks them with fresh seeds\n";
    }
    Ok(out)
}

/// A kept change's commit message: its description, then what was measured of it.
fn message(tag: &str, keep: &Record, confirmation: Option<&Confirmation>) -> String {
    let bpb = |v: Option<f64>| v.map_or("-".into(), |v| format!("{v:.6}"));
    let mut body = format!(
        "{}\n\nautoresearch run {tag}, experiment #{} (commit {}).\n\
         Night: val_bpb {}, gain {} as judged ({}); test_bpb {}.\n",
        keep.description,
        keep.seq,
        &keep.commit[..keep.commit.len().min(7)],
        bpb(keep.val_bpb),
        keep.delta.map_or("-".into(), |d| format!("{:+.6}", -d)),
        keep.rule.as_deref().unwrap_or("no rule recorded"),
        bpb(keep.test_bpb),
    );
    let part =
        confirmation.and_then(|c| Some((c, c.ablations.iter().find(|a| a.seq == keep.seq)?)));
    match (confirmation, part) {
        (_, Some((c, ablation))) => {
            let measured = match (&ablation.gain, &ablation.note) {
                (Some(gain), _) => gain.describe(),
                (None, Some(note)) => note.clone(),
                (None, None) => "not measured".into(),
            };
            body += &format!(
                "Confirmed {} with {} fresh seeds: its part in the best's gain {measured}.\n",
                c.finished_at,
                c.seeds.len()
            );
        }
        (Some(c), None) => {
            let gain = c.gain.map_or("not measured".into(), |g| g.describe());
            body += &format!(
                "Confirmed {} with {} fresh seeds: the best's whole gain {gain} (its own part \
                 not measured: confirm --ablate).\n",
                c.finished_at,
                c.seeds.len()
            );
        }
        (None, None) => {}
    }
    body
}
