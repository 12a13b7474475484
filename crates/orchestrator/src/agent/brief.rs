//! What the LLM is told: the brief that opens every experiment's conversation, and `history`,
//! the view of past experiments it holds, which the agent can also ask for mid-conversation.
//! Both show the validation split only: nothing of the holdout (test_bpb, or the warnings that
//! quote it) may appear here.

use prepare::Profile;

use super::device_prefixes;
use crate::decide::{self, Noise};
use crate::ledger::{self, Ledger, Record, Status};
use crate::text::{one_line, tail};
use crate::tools::Workspace;

/// Experiments in the history: the best kept ones and the most recent ones.
const BEST: usize = 5;
const RECENT: usize = 10;
/// Crashes whose log tails the brief quotes, and how many lines of each.
const FAILURES: usize = 3;
const FAILURE_LOG_LINES: usize = 15;
/// The file the brief quotes whole, where it fits.
const SOURCE: &str = "crates/train/src/main.rs";
/// Bytes per token the budgets assume: Rust and English take 3.5 to 4.5 bytes a token with the
/// usual tokenizers, so 3 leaves room for the server's chat template.
pub const BYTES_PER_TOKEN: usize = 3;

/// The facts of the run the brief states besides its records.
pub struct Rules {
    /// The number of the experiment being proposed.
    pub experiment: u64,
    /// Training seconds per experiment.
    pub budget: f64,
    /// The noise floor the decisions use.
    pub noise: Option<Noise>,
    /// What this machine trains on, and so which of the trainer's configurations runs.
    pub device: Profile,
    /// The other experiments in flight now, `#seq description` each.
    pub running: Vec<String>,
    /// What earlier runs found: the sections of memory.md (empty with `--fresh`).
    pub memory: String,
}

/// The LLM's view of the run: the human's program, the rules, the history, the latest failures'
/// logs, the memory of earlier runs and the current best trainer, in at most about `max_bytes`:
/// what does not fit is cut, the trainer's source last, then program.md, the history, the memory
/// and the failures' logs, each with a note that says so.
pub fn brief(
    program: &str,
    rules: &Rules,
    ledger: &Ledger,
    ws: &Workspace,
    max_bytes: usize,
) -> String {
    let (runs, idle) = device_prefixes(rules.device);
    let failures = failures(ledger);
    let running = if rules.running.is_empty() {
        "none".into()
    } else {
        rules.running.join("\n")
    };
    let source = ws.read_file(SOURCE).unwrap_or_default();
    let history = history(&ledger.records, rules.noise);
    let fixed = 1200 + running.len();
    let mut room = max_bytes.saturating_sub(fixed);
    let mut fit = |text: &str, what: &str| {
        let kept = cut(text, room, what);
        room = room.saturating_sub(kept.len());
        kept
    };
    let source = fit(&source, "the trainer (read_file shows the rest)");
    let program = fit(program, "program.md");
    let history = fit(&history, "the history (the `history` tool shows it)");
    let memory = match rules.memory.as_str() {
        "" => "none".to_string(),
        memory => fit(memory, "the memory (memory.md)"),
    };
    let failures = fit(&failures, "the failures' logs");
    format!(
        "# Experiment #{experiment}\n\n# Research program\n\n{program}\n\n# Rules\n\nTraining budget: {budget} s of wall-clock \
         training per experiment. This machine trains on {device}: the trainer runs its {config} \
         configuration, so the `{runs}*` constants apply and the `{idle}*` ones change nothing \
         here. Metric: val_bpb from the protected evaluation of the model your trainer exports, \
         lower is better. Changing only the seed or comments is never kept. Edit only \
         crates/train/src/.\n\n# History\n\n{history}\n\n# Memory of earlier runs (other tags; their \
         numbers are theirs)\n\n{memory}\n\n# Recent failures (log tails)\n\n\
         {failures}\n\n# Running now on other workers (do not propose these again)\n\n{running}\n\n\
         # The current best trainer: {SOURCE}\n\n```rust\n{source}\n```\n",
        experiment = rules.experiment,
        budget = rules.budget,
        device = rules.device.device(),
        config = rules.device.name().to_uppercase(),
    )
}

/// The log tails of the latest crashes.
fn failures(ledger: &Ledger) -> String {
    let failures: Vec<String> = ledger
        .records
        .iter()
        .rev()
        .filter(|r| r.status == Status::Crash)
        .take(FAILURES)
        .map(|r| {
            let log = std::fs::read_to_string(ledger.dir().log(r.seq, 0)).unwrap_or_default();
            format!("#{}:\n{}", r.seq, tail(&log, FAILURE_LOG_LINES))
        })
        .collect();
    if failures.is_empty() {
        "none".into()
    } else {
        failures.join("\n\n")
    }
}

/// `text`, or as many of its first lines as fit in `room` bytes and a note of what was cut.
pub fn cut(text: &str, room: usize, what: &str) -> String {
    if text.len() <= room {
        return text.to_string();
    }
    let note =
        |cut: usize| format!("[... {cut} more bytes of {what} cut to fit the model's context]");
    let mut end = room.saturating_sub(note(text.len()).len() + 1);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let end = text[..end].rfind('\n').map_or(0, |n| n + 1);
    format!("{}{}", &text[..end], note(text.len() - end))
}

/// The run so far for the agent: the tallies, the keep rule with the noise floor in force, the
/// best kept experiments and the latest ones, with scores and deltas.
pub fn history(records: &[Record], noise: Option<Noise>) -> String {
    if records.is_empty() {
        return "No experiments yet.".into();
    }
    let line = |r: &Record| {
        let mut line = format!("#{} {}", r.seq, r.status.as_str());
        if let Some(v) = r.val_bpb {
            line += &format!(" val_bpb {v:.6}");
        }
        if let Some(d) = r.delta {
            line += &format!(" delta {d:+.6}");
            if let Some(s) = r.sigma.filter(|s| *s > 0.0) {
                line += &format!(" ({:+.1} sigma)", d / s);
            }
        }
        if let Some(reason) = &r.reason {
            line += &format!(" [{}]", one_line(reason, 200));
        }
        if let Some(stopped) = &r.stopped {
            line += &format!(" [{stopped}]");
        }
        if let Some(by) = records.iter().find(|later| later.revoked == Some(r.seq)) {
            line += &format!(
                " [keep revoked by #{}: judged non-causal on a re-run]",
                by.seq
            );
        }
        if let Some(revoked) = r.revoked {
            line += &format!(" [revoked the keep of #{revoked}: non-causal beside this change]");
        }
        line + ": " + &one_line(&r.description, 200) + "\n"
    };

    let tally = ledger::tally(records);
    let mut best: Vec<&Record> = records
        .iter()
        .filter(|r| r.status == Status::Keep && r.val_bpb.is_some())
        .filter(|r| records.iter().all(|later| later.revoked != Some(r.seq)))
        .collect();
    best.sort_by(|a, b| a.val_bpb.unwrap().total_cmp(&b.val_bpb.unwrap()));
    let best_runs = best
        .first()
        .map_or(1, |b| ledger::scores(&b.trials).len().max(1));
    let recent = &records[records.len().saturating_sub(RECENT)..];
    format!(
        "{} experiments: the baseline, {} kept, {} discarded, {} crashed. {}\n\nBest kept:\n{}\n\
         Recent experiments:\n{}",
        records.len(),
        tally.keeps,
        tally.discards,
        tally.crashes,
        decide::keep_rule(noise, best_runs),
        best.iter().take(BEST).map(|r| line(r)).collect::<String>(),
        recent.iter().map(line).collect::<String>(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::run_dir::RunDir;

    fn record(seq: u64, status: Status, val: Option<f64>, delta: Option<f64>) -> Record {
        Record {
            reason: (status == Status::Crash).then(|| "timed out\nafter 600 s".to_string()),
            sigma: Some(0.002),
            sigma_measured: seq == 0,
            delta,
            // A value no val_bpb has, to spot a leak.
            test_bpb: (status == Status::Keep).then_some(1.987654),
            flags: vec!["test split got worse: 1.987654 > 1.900000".into()],
            ..Record::sample(seq, status, val)
        }
    }

    /// 0 baseline; keeps at 1.49, 1.47, ..., every third; the rest discards, #7 a crash.
    fn records() -> Vec<Record> {
        let mut best = 1.5;
        (0..20)
            .map(|seq| match seq {
                0 => record(0, Status::Keep, Some(1.5), None),
                7 => record(7, Status::Crash, None, None),
                s if s % 3 == 0 => {
                    let v = best - 0.01;
                    let r = record(s, Status::Keep, Some(v), Some(v - best));
                    best = v;
                    r
                }
                s => record(s, Status::Discard, Some(best + 0.001), Some(0.001)),
            })
            .collect()
    }

    fn noise() -> Option<Noise> {
        crate::decide::noise_floor(&records())
    }

    #[test]
    fn history_never_shows_the_test_split() {
        let text = history(&records(), noise());
        assert!(!text.contains("1.987654"), "{text}");
        assert!(!text.to_lowercase().contains("test"), "{text}");
    }

    #[test]
    fn history_lists_the_best_five_keeps_then_the_last_ten_in_order() {
        let text = history(&records(), noise());
        let (best, latest) = text.split_once("Recent experiments:").unwrap();
        let seqs = |part: &str| -> Vec<u64> {
            part.lines()
                .filter_map(|l| l.strip_prefix('#'))
                .map(|l| l.split(' ').next().unwrap().parse().unwrap())
                .collect()
        };
        assert_eq!(seqs(best), [18, 15, 12, 9, 6]);
        assert_eq!(seqs(latest), (10..20).collect::<Vec<_>>());
        assert!(
            text.contains("#12 keep val_bpb 1.460000 delta -0.010000 (-5.0 sigma): change 12"),
            "{text}"
        );
        assert!(text.contains("6 kept, 12 discarded, 1 crashed"), "{text}");
        assert!(text.contains("Noise floor: sigma 0.002000"), "{text}");
    }

    #[test]
    fn history_gives_crash_reasons_on_one_line() {
        let text = history(&records()[..10], noise());
        assert!(
            text.contains("#7 crash [timed out after 600 s]: change 7"),
            "{text}"
        );
        assert_eq!(history(&[], None), "No experiments yet.");
    }

    #[test]
    fn history_says_where_a_run_was_stopped_early() {
        let mut records = records()[..10].to_vec();
        records.push(Record {
            stopped: Some(crate::ledger::Stopped {
                seconds: 90.0,
                step: 41,
                progress: 0.3,
                loss: 3.5,
                best_loss: 3.2,
                threshold: 0.05,
                probe: true,
            }),
            ..record(10, Status::Discard, None, None)
        });
        let text = history(&records, noise());
        assert!(
            text.contains("#10 discard [stopped early at 30% of the budget (step 41): probe loss 3.5000 against the best's 3.2000, more than 0.0500 worse]: change 10"),
            "{text}"
        );
    }

    #[test]
    fn history_marks_a_revoked_keep_and_leaves_it_out_of_the_best() {
        let mut records = records()[..19].to_vec();
        records.push(Record {
            revoked: Some(18),
            ..record(19, Status::Discard, None, None)
        });
        let text = history(&records, noise());
        let (best, _) = text.split_once("Recent experiments:").unwrap();
        assert!(!best.contains("#18 "), "{text}");
        assert!(
            text.contains("#18 keep val_bpb 1.440000 delta -0.010000 (-5.0 sigma) [keep revoked by #19: judged non-causal on a re-run]"),
            "{text}"
        );
        assert!(
            text.contains("#19 discard [revoked the keep of #18: non-causal beside this change]"),
            "{text}"
        );
    }

    #[test]
    fn the_brief_names_the_configuration_that_runs_and_the_rule_once() {
        let dir = tempfile::tempdir().unwrap();
        let mut ledger = Ledger::open(&RunDir::at(&dir.path().join("run"))).unwrap();
        for r in records() {
            ledger.append(r).unwrap();
        }
        let ws = Workspace::new(dir.path());
        let rules = Rules {
            experiment: 8,
            budget: 300.0,
            noise: noise(),
            device: Profile::Cpu,
            running: vec!["#7 CPU_LR 0.25 -> 0.5".into()],
            memory: "## Best results\n- nov22#3 keep val_bpb 1.400000: MATRIX_LR 0.04 -> 0.06"
                .into(),
        };
        let text = brief("be bold", &rules, &ledger, &ws, usize::MAX);
        assert!(
            text.contains("# Memory of earlier runs (other tags; their numbers are theirs)\n\n\
                           ## Best results\n- nov22#3 keep val_bpb 1.400000: MATRIX_LR 0.04 -> 0.06\n"),
            "{text}"
        );
        assert!(text.starts_with("# Experiment #8\n"), "{text}");
        assert!(
            text.contains("Running now on other workers (do not propose these again)\n\n#7 CPU_LR 0.25 -> 0.5\n"),
            "{text}"
        );
        assert!(
            text.contains("the `CPU_*` constants apply and the `GPU_*` ones change nothing"),
            "{text}"
        );
        assert_eq!(text.matches("Noise floor").count(), 1, "{text}");
        assert!(!text.contains("1.987654"), "{text}");
    }

    #[test]
    fn a_brief_too_long_is_cut_with_notes_the_source_first_kept() {
        let dir = tempfile::tempdir().unwrap();
        let mut ledger = Ledger::open(&RunDir::at(&dir.path().join("run"))).unwrap();
        for r in records() {
            ledger.append(r).unwrap();
        }
        let source = "fn main() {}\n".repeat(200);
        std::fs::create_dir_all(dir.path().join("crates/train/src")).unwrap();
        std::fs::write(dir.path().join(SOURCE), &source).unwrap();
        let ws = Workspace::new(dir.path());
        let rules = Rules {
            experiment: 3,
            budget: 300.0,
            noise: noise(),
            device: Profile::Cpu,
            running: Vec::new(),
            memory: "- nov22#1 discard: a change that did not help\n".repeat(100),
        };
        let program = "be bold\n".repeat(500);
        let whole = brief(&program, &rules, &ledger, &ws, usize::MAX);
        assert!(whole.contains(&source) && !whole.contains("cut to fit"));
        let fitted = brief(&program, &rules, &ledger, &ws, 5000);
        assert!(fitted.len() <= 5000, "{} bytes", fitted.len());
        assert!(fitted.contains(&source), "the source comes first: {fitted}");
        assert!(
            fitted.contains("more bytes of program.md cut to fit"),
            "{fitted}"
        );
        assert!(
            fitted.contains("of the history (the `history` tool shows it) cut"),
            "{fitted}"
        );
        assert!(
            fitted.contains("more bytes of the memory (memory.md) cut"),
            "{fitted}"
        );
        let tiny = brief(&program, &rules, &ledger, &ws, 1500);
        assert!(
            tiny.contains("more bytes of the trainer (read_file shows the rest) cut"),
            "{tiny}"
        );
    }
}
