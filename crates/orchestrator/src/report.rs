//! The morning report: a summary of a run's experiments and `runs/<tag>/progress.png`, plus
//! `history`, the agent's own (holdout-free) view of the same records.

use std::fs;
use std::path::Path;

use anyhow::{Context, Result, anyhow, bail};
use plotters::prelude::*;
use plotters::style::{FontStyle, register_font};
use serde::Serialize;

use crate::config::ReportArgs;
use crate::ledger::{Record, Status, noise_floor};

/// `orchestrator report`: the summary on stdout (text or `--json`) and the plot beside the records.
pub fn run(args: &ReportArgs, repo: &Path) -> Result<()> {
    let tag = args.tag.clone().unwrap_or_else(crate::config::default_tag);
    let dir = repo.join("runs").join(&tag);
    let records = read_records(&dir)?;
    if records.is_empty() {
        let known = known_runs(&repo.join("runs"));
        bail!(
            "no experiments in {}: start a run with `cargo run --release -p orchestrator -- --tag {tag}`{}",
            dir.join("experiments.jsonl").display(),
            if known.is_empty() {
                String::new()
            } else {
                format!("; runs with experiments there: {}", known.join(", "))
            }
        );
    }
    let summary = summarize(&tag, &records);
    let png = dir.join("progress.png");
    plot(&records, &summary, &png).with_context(|| format!("drawing {}", png.display()))?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        print!("{}", summary.text());
    }
    eprintln!("plot: {}", png.display());
    Ok(())
}

/// The records of `runs/<tag>/experiments.jsonl`, read only. Unlike `Ledger::open` this never
/// truncates: the loop may be appending a line right now, and a reader must not cut it.
pub fn read_records(dir: &Path) -> Result<Vec<Record>> {
    let path = dir.join("experiments.jsonl");
    let text = match fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    // Only whole lines count; a last line without its newline is still being written.
    let whole = &text[..text.rfind('\n').map_or(0, |i| i + 1)];
    whole
        .lines()
        .enumerate()
        .map(|(i, line)| {
            serde_json::from_str(line).with_context(|| format!("{} line {}", path.display(), i + 1))
        })
        .collect()
}

fn known_runs(runs: &Path) -> Vec<String> {
    let mut tags: Vec<String> = fs::read_dir(runs)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.path().join("experiments.jsonl").is_file())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    tags.sort();
    tags
}

#[derive(Debug, Serialize)]
pub struct Summary {
    pub tag: String,
    /// All experiments, the baseline included.
    pub experiments: usize,
    /// The outcomes of the changes, the experiments after the baseline.
    pub keeps: usize,
    pub discards: usize,
    pub crashes: usize,
    /// keeps / changes; None before the first change.
    pub keep_rate: Option<f64>,
    pub baseline_bpb: Option<f64>,
    pub best_bpb: Option<f64>,
    pub best_seq: Option<u64>,
    /// baseline_bpb - best_bpb: positive is better.
    pub improvement: Option<f64>,
    /// The improvement in percent of the baseline.
    pub improvement_pct: Option<f64>,
    /// The kept changes, largest gain first.
    pub kept: Vec<KeptChange>,
    /// The noise floor in force at the end: std dev of val_bpb between runs of one program.
    pub sigma: Option<f64>,
    /// The trainer's counted training time, every run of every experiment.
    pub training_seconds: f64,
    /// Building, starting, evaluating and re-checking: everything but training and thinking.
    pub overhead_seconds: f64,
    /// The protected evaluation's share of the overhead.
    pub eval_seconds: f64,
    /// The agent's time to propose changes.
    pub think_seconds: f64,
    pub agent_tokens: u64,
    /// Every keep with its validation and holdout (test split) scores side by side.
    pub holdout: Vec<HoldoutRow>,
    /// The records' warnings for people, as "#seq: warning".
    pub warnings: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct KeptChange {
    pub seq: u64,
    pub description: String,
    pub val_bpb: Option<f64>,
    pub test_bpb: Option<f64>,
    /// How much val_bpb fell against the best before it: -delta.
    pub gain: f64,
}

#[derive(Debug, Serialize)]
pub struct HoldoutRow {
    pub seq: u64,
    pub description: String,
    pub val_bpb: Option<f64>,
    pub test_bpb: Option<f64>,
    /// Better on validation but worse on the test split than the keep before it: a hint of
    /// overfitting the validation split.
    pub test_worse: bool,
}

/// Outcomes of the changes after the baseline: (keeps, discards, crashes).
fn outcomes(records: &[Record]) -> (usize, usize, usize) {
    let count = |s| {
        records
            .iter()
            .filter(|r| r.seq > 0 && r.status == s)
            .count()
    };
    (
        count(Status::Keep),
        count(Status::Discard),
        count(Status::Crash),
    )
}

/// The best kept val_bpb after each record (None until the first scored keep).
fn running_best(records: &[Record]) -> Vec<Option<f64>> {
    let mut best: Option<f64> = None;
    records
        .iter()
        .map(|r| {
            if r.status == Status::Keep
                && let Some(v) = r.val_bpb
            {
                best = Some(best.map_or(v, |b| b.min(v)));
            }
            best
        })
        .collect()
}

/// The noise floor in force at each record: the latest one recorded so far.
fn running_sigma(records: &[Record]) -> Vec<Option<f64>> {
    let mut sigma = None;
    records
        .iter()
        .map(|r| {
            sigma = r.sigma.or(sigma);
            sigma
        })
        .collect()
}

pub fn summarize(tag: &str, records: &[Record]) -> Summary {
    let (keeps, discards, crashes) = outcomes(records);
    let changes = records.iter().filter(|r| r.seq > 0).count();
    let baseline_bpb = records.iter().find(|r| r.seq == 0).and_then(|r| r.val_bpb);
    let best = records
        .iter()
        .filter(|r| r.status == Status::Keep && r.val_bpb.is_some())
        .min_by(|a, b| a.val_bpb.unwrap().total_cmp(&b.val_bpb.unwrap()));
    let best_bpb = best.and_then(|r| r.val_bpb);
    let improvement = baseline_bpb.zip(best_bpb).map(|(base, best)| base - best);

    // Older records have no delta; the running best gives the same number.
    let best_after = running_best(records);
    let mut kept: Vec<KeptChange> = records
        .iter()
        .enumerate()
        .filter(|(_, r)| r.seq > 0 && r.status == Status::Keep)
        .map(|(i, r)| {
            let before = i.checked_sub(1).and_then(|j| best_after[j]);
            let delta = r.delta.or(r.val_bpb.zip(before).map(|(v, b)| v - b));
            KeptChange {
                seq: r.seq,
                description: r.description.clone(),
                val_bpb: r.val_bpb,
                test_bpb: r.test_bpb,
                gain: delta.map_or(0.0, |d| -d),
            }
        })
        .collect();
    kept.sort_by(|a, b| b.gain.total_cmp(&a.gain));

    let mut holdout = Vec::new();
    let mut previous_test: Option<f64> = None;
    for r in records.iter().filter(|r| r.status == Status::Keep) {
        holdout.push(HoldoutRow {
            seq: r.seq,
            description: r.description.clone(),
            val_bpb: r.val_bpb,
            test_bpb: r.test_bpb,
            test_worse: r.test_bpb.zip(previous_test).is_some_and(|(t, p)| t > p),
        });
        previous_test = r.test_bpb.or(previous_test);
    }

    // A record's run_seconds spans its whole run phase: every trial's start-up, training and
    // evaluation, and the holdout; its training share is what the trainer counted.
    let training = |r: &Record| {
        if r.trials.is_empty() {
            r.result
                .as_ref()
                .and_then(|res| res["training_seconds"].as_f64())
                .unwrap_or(0.0)
        } else {
            r.trials.iter().map(|t| t.training_seconds).sum()
        }
    };
    let training_seconds: f64 = records.iter().map(training).sum();
    let spent: f64 = records
        .iter()
        .map(|r| r.build_seconds + r.run_seconds)
        .sum();

    Summary {
        tag: tag.to_string(),
        experiments: records.len(),
        keeps,
        discards,
        crashes,
        keep_rate: (changes > 0).then(|| keeps as f64 / changes as f64),
        baseline_bpb,
        best_bpb,
        best_seq: best.map(|r| r.seq),
        improvement,
        improvement_pct: improvement
            .zip(baseline_bpb)
            .map(|(gain, base)| 100.0 * gain / base),
        kept,
        sigma: noise_floor(records).map(|n| n.sigma),
        training_seconds,
        overhead_seconds: (spent - training_seconds).max(0.0),
        eval_seconds: records.iter().map(|r| r.eval_seconds).sum(),
        think_seconds: records.iter().map(|r| r.think_seconds).sum(),
        agent_tokens: records.iter().map(|r| r.agent_tokens).sum(),
        holdout,
        warnings: records
            .iter()
            .flat_map(|r| r.flags.iter().map(move |f| format!("#{}: {f}", r.seq)))
            .collect(),
    }
}

impl Summary {
    /// The summary for people.
    pub fn text(&self) -> String {
        let bpb = |v: Option<f64>| v.map_or("-".into(), |v| format!("{v:.6}"));
        let mut out = format!(
            "run {}: {} experiments (the baseline and {} changes)\n",
            self.tag,
            self.experiments,
            self.keeps + self.discards + self.crashes
        );
        out += &format!(
            "  {} kept, {} discarded, {} crashed; keep rate {}\n",
            self.keeps,
            self.discards,
            self.crashes,
            self.keep_rate
                .map_or("-".into(), |r| format!("{:.1}%", 100.0 * r))
        );
        out += &format!(
            "  val_bpb {} (baseline) -> {} (#{})",
            bpb(self.baseline_bpb),
            bpb(self.best_bpb),
            self.best_seq.map_or("-".into(), |s| s.to_string())
        );
        if let (Some(gain), Some(pct)) = (self.improvement, self.improvement_pct) {
            out += &format!(": {:+.6} ({:+.2}%)", -gain, -pct);
        }
        out += "\n";
        if let Some(sigma) = self.sigma {
            out += &format!("  noise floor: sigma {sigma:.6} between runs\n");
        }
        out += &format!(
            "  time: training {}, overhead {} (evaluation {}), thinking {}; {} agent tokens\n",
            duration(self.training_seconds),
            duration(self.overhead_seconds),
            duration(self.eval_seconds),
            duration(self.think_seconds),
            self.agent_tokens
        );

        if !self.kept.is_empty() {
            out += "\nkept changes, largest gain first:\n";
            for k in &self.kept {
                let in_sigma = self
                    .sigma
                    .filter(|s| *s > 0.0)
                    .map_or(String::new(), |s| format!(" ({:.1} sigma)", k.gain / s));
                out += &format!(
                    "  #{:<4} gain {:.6}{in_sigma}  val {}  {}\n",
                    k.seq,
                    k.gain,
                    bpb(k.val_bpb),
                    k.description
                );
            }
        }

        out += "\nholdout: each keep on the validation and the test split\n";
        out += "  seq    val_bpb   test_bpb\n";
        for h in &self.holdout {
            out += &format!(
                "  #{:<4} {:>9} {:>10}  {}{}\n",
                h.seq,
                bpb(h.val_bpb),
                bpb(h.test_bpb),
                if h.test_worse {
                    "WORSE ON TEST than the keep before; "
                } else {
                    ""
                },
                h.description
            );
        }

        if !self.warnings.is_empty() {
            out += "\nwarnings:\n";
            for w in &self.warnings {
                out += &format!("  {w}\n");
            }
        }
        out
    }
}

fn duration(seconds: f64) -> String {
    let s = seconds.round() as u64;
    match s {
        0..60 => format!("{seconds:.1} s"),
        60..3600 => format!("{}m {:02}s", s / 60, s % 60),
        _ => format!("{}h {:02}m", s / 3600, s % 3600 / 60),
    }
}

/// The agent's view of the run: the best keeps and the latest experiments, scores and deltas
/// on the validation split only. Nothing of the test split (test_bpb, or the warnings that
/// quote it) may appear here: the holdout stays hidden from the agent.
pub fn history(records: &[Record]) -> String {
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
        line + ": " + &one_line(&r.description, 200)
    };

    let (keeps, discards, crashes) = outcomes(records);
    let mut best: Vec<&Record> = records
        .iter()
        .filter(|r| r.status == Status::Keep && r.val_bpb.is_some())
        .collect();
    best.sort_by(|a, b| a.val_bpb.unwrap().total_cmp(&b.val_bpb.unwrap()));

    let mut out = format!(
        "{} experiments: the baseline, {keeps} kept, {discards} discarded, {crashes} crashed.",
        records.len()
    );
    if let Some(sigma) = noise_floor(records).map(|n| n.sigma) {
        out += &format!(
            " Noise floor: sigma {sigma:.6} (std dev of val_bpb between runs of one program); a \
             delta within 2 sigma is indistinguishable from luck."
        );
    }
    out += "\n\nBest kept:\n";
    for r in best.iter().take(5) {
        out += &line(r);
        out += "\n";
    }
    out += "\nRecent experiments:\n";
    for r in &records[records.len().saturating_sub(10)..] {
        out += &line(r);
        out += "\n";
    }
    out
}

fn one_line(text: &str, max_chars: usize) -> String {
    let flat = text.split_whitespace().collect::<Vec<_>>().join(" ");
    truncate_chars(&flat, max_chars)
}

fn truncate_chars(text: &str, max_chars: usize) -> String {
    if text.chars().count() <= max_chars {
        return text.to_string();
    }
    let cut: String = text.chars().take(max_chars - 1).collect();
    format!("{}…", cut.trim_end())
}

const WIDTH: u32 = 1400;
const HEIGHT: u32 = 700;
const FONT: &str = "sans-serif";
const GREY: RGBColor = RGBColor(150, 150, 150);
const KEEP_GREEN: RGBColor = RGBColor(44, 160, 44);
const CRASH_RED: RGBColor = RGBColor(214, 39, 40);
const BEST_BLUE: RGBColor = RGBColor(31, 119, 180);

/// Text comes from the DejaVu font compiled into the binary: machines without fonts or
/// fontconfig (CI, servers) draw the same plot.
fn register_fonts() -> Result<()> {
    for (style, bytes) in [
        (FontStyle::Normal, dejavu::sans::regular()),
        (FontStyle::Bold, dejavu::sans::bold()),
    ] {
        register_font(FONT, style, bytes)
            .map_err(|_| anyhow!("the embedded DejaVu font does not parse"))?;
    }
    Ok(())
}

/// The vertical range: every keep and the bulk of the discards, with room for the noise band.
/// Discards far worse than the baseline would squash the interesting part, so the top is
/// capped and they are drawn on the top edge instead.
fn y_range(records: &[Record], sigma: f64) -> (f64, f64) {
    let scored: Vec<f64> = records.iter().filter_map(|r| r.val_bpb).collect();
    let kept: Vec<f64> = records
        .iter()
        .filter(|r| r.status == Status::Keep)
        .filter_map(|r| r.val_bpb)
        .collect();
    if scored.is_empty() {
        return (0.0, 1.0);
    }
    let min = |v: &[f64]| v.iter().copied().fold(f64::INFINITY, f64::min);
    let max = |v: &[f64]| v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let low = min(&scored);
    let high_kept = if kept.is_empty() {
        max(&scored)
    } else {
        max(&kept)
    };
    let span = (high_kept - low)
        .max(4.0 * sigma)
        .max(1e-4 * high_kept.abs())
        .max(1e-6);
    let top = max(&scored).min(high_kept + 0.6 * span) + 0.12 * span;
    (low - 0.1 * span - 2.0 * sigma, top)
}

fn plot(records: &[Record], summary: &Summary, path: &Path) -> Result<()> {
    register_fonts()?;
    let root = BitMapBackend::new(path, (WIDTH, HEIGHT)).into_drawing_area();
    root.fill(&WHITE)?;

    let sigmas = running_sigma(records);
    let bests = running_best(records);
    let (y_low, y_high) = y_range(records, summary.sigma.unwrap_or(0.0));
    let last = records.last().map_or(0, |r| r.seq) as f64;
    let x_range = -0.5..last + 0.5;
    // Ticks a tenth of the span apart, with enough decimals to tell them apart.
    let decimals = (-((y_high - y_low) / 10.0).log10()).ceil().clamp(2.0, 6.0) as usize;

    let mut title = format!("autoresearch {}", summary.tag);
    if let (Some(base), Some(best)) = (summary.baseline_bpb, summary.best_bpb) {
        title += &format!(
            ": val_bpb {base:.6} -> {best:.6} ({:+.2}%) over {} experiments",
            -summary.improvement_pct.unwrap_or(0.0),
            summary.experiments
        );
    }
    let mut chart = ChartBuilder::on(&root)
        .caption(title, (FONT, 24).into_font().style(FontStyle::Bold))
        .margin(20)
        .x_label_area_size(50)
        .y_label_area_size(80)
        .build_cartesian_2d(x_range, y_low..y_high)?;
    chart
        .configure_mesh()
        .x_desc("experiment")
        .y_desc("val_bpb (lower is better)")
        .x_labels((last as usize + 1).clamp(2, 20))
        .x_label_formatter(&|x| format!("{x:.0}"))
        .y_label_formatter(&|y| format!("{y:.decimals$}"))
        .label_style((FONT, 14))
        .axis_desc_style((FONT, 16))
        .light_line_style(WHITE)
        .bold_line_style(BLACK.mix(0.08))
        .draw()?;

    // The noise band: +-2 sigma around the running best, one rectangle per stretch where
    // neither changes (adjacent translucent rectangles would leave seams).
    let mut stretches: Vec<(f64, f64, f64, f64)> = Vec::new(); // (from, to, best, sigma)
    for (i, r) in records.iter().enumerate() {
        let (Some(best), Some(sigma)) = (bests[i], sigmas[i]) else {
            continue;
        };
        let to = records
            .get(i + 1)
            .map_or(r.seq as f64 + 0.5, |n| n.seq as f64);
        match stretches.last_mut() {
            Some(s) if s.2 == best && s.3 == sigma => s.1 = to,
            _ => stretches.push((r.seq as f64, to, best, sigma)),
        }
    }
    chart
        .draw_series(stretches.iter().map(|&(from, to, best, sigma)| {
            Rectangle::new(
                [(from, best - 2.0 * sigma), (to, best + 2.0 * sigma)],
                BEST_BLUE.mix(0.12).filled(),
            )
        }))?
        .label("best ± 2σ (noise floor)")
        .legend(|(x, y)| {
            Rectangle::new(
                [(x - 8, y - 5), (x + 8, y + 5)],
                BEST_BLUE.mix(0.2).filled(),
            )
        });

    // The running best as a step line, from the first keep to the last experiment.
    let mut steps: Vec<(f64, f64)> = Vec::new();
    for (r, best) in records.iter().zip(&bests) {
        let Some(best) = *best else { continue };
        let x = r.seq as f64;
        if let Some(&(_, previous)) = steps.last() {
            steps.push((x, previous));
        }
        steps.push((x, best));
    }
    if let Some(&(_, best)) = steps.last() {
        steps.push((last + 0.5, best));
    }
    chart
        .draw_series(LineSeries::new(steps, BEST_BLUE.stroke_width(2)))?
        .label("running best")
        .legend(|(x, y)| PathElement::new([(x - 10, y), (x + 10, y)], BEST_BLUE.stroke_width(2)));

    // Scores above the top of the range, and crashes (which have none), sit on the top edge.
    let edge = y_high - 0.03 * (y_high - y_low);
    let scored = |status: Status| {
        records
            .iter()
            .filter(move |r| r.status == status)
            .filter_map(|r| r.val_bpb.map(|v| (r.seq as f64, v)))
    };
    chart
        .draw_series(
            scored(Status::Discard)
                .filter(|&(_, v)| v <= edge)
                .map(|p| Circle::new(p, 4, GREY.filled())),
        )?
        .label("discard")
        .legend(|p| Circle::new(p, 4, GREY.filled()));
    chart.draw_series(
        scored(Status::Discard)
            .filter(|&(_, v)| v > edge)
            .map(|(x, _)| TriangleMarker::new((x, edge), 6, GREY.filled())),
    )?;
    chart
        .draw_series(
            records
                .iter()
                .filter(|r| r.status == Status::Crash)
                .map(|r| Cross::new((r.seq as f64, edge), 5, CRASH_RED.stroke_width(2))),
        )?
        .label("crash (no score)")
        .legend(|p| Cross::new(p, 5, CRASH_RED.stroke_width(2)));
    chart
        .draw_series(scored(Status::Keep).map(|p| Circle::new(p, 5, KEEP_GREEN.filled())))?
        .label("keep")
        .legend(|p| Circle::new(p, 5, KEEP_GREEN.filled()));

    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerLeft)
        .label_font((FONT, 14))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.3))
        .draw()?;

    let keeps: Vec<(u64, f64, String)> = records
        .iter()
        .filter(|r| r.status == Status::Keep)
        .filter_map(|r| {
            let label = format!(
                "#{} {}",
                r.seq,
                truncate_chars(&one_line(&r.description, 200), 30)
            );
            r.val_bpb.map(|v| (r.seq, v, label))
        })
        .collect();
    let points: Vec<(i32, i32)> = keeps
        .iter()
        .map(|(seq, v, _)| chart.backend_coord(&(*seq as f64, *v)))
        .collect();
    annotate(
        &root,
        chart.plotting_area().get_pixel_range(),
        &keeps,
        &points,
    )?;

    root.present()
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// Labels each keep with its description where it overlaps no other label. Below and left of
/// a keep is the emptiest place: everything earlier scored higher and the running best came
/// down from above; right of it is next best. A label moved off the point's row gets a thin
/// line back to it.
fn annotate(
    root: &DrawingArea<BitMapBackend, plotters::coord::Shift>,
    (xs, ys): (std::ops::Range<i32>, std::ops::Range<i32>),
    keeps: &[(u64, f64, String)],
    points: &[(i32, i32)],
) -> Result<()> {
    let style = TextStyle::from((FONT, 14).into_font()).color(&BLACK);
    // Boxes (x0, y0, x1, y1) a label must not cover: the keeps' dots, then the labels.
    let mut placed: Vec<(i32, i32, i32, i32)> = points
        .iter()
        .map(|&(x, y)| (x - 5, y - 5, x + 5, y + 5))
        .collect();
    for ((_, _, label), &(px, py)) in keeps.iter().zip(points) {
        let (w, h) = root.estimate_text_size(label, &style)?;
        let (w, h) = (w as i32 + 6, h as i32 + 4);
        let below = |row: i32| py + 6 + row * (h + 2);
        let above = |row: i32| py - h - 6 - row * (h + 2);
        let left = px - 9 - w;
        let right = px + 9;
        // (x0, y0, row) of each place to try, best first; nearer rows before better sides.
        let candidates: Vec<(i32, i32, i32)> = (0..6)
            .flat_map(|row| {
                [
                    (left, below(row), row),
                    (right, above(row), row),
                    (right, below(row), row),
                ]
            })
            .filter(|&(x0, _, _)| x0 >= xs.start && x0 + w <= xs.end)
            .collect();
        let free = |&&(x0, y0, _): &&(i32, i32, i32)| {
            let (x1, y1) = (x0 + w, y0 + h);
            y0 >= ys.start
                && y1 <= ys.end
                && placed
                    .iter()
                    .all(|p| x1 <= p.0 || p.2 <= x0 || y1 <= p.1 || p.3 <= y0)
        };
        // Crowded everywhere: the label goes on top of others rather than nowhere.
        let Some(&(x0, y0, row)) = candidates.iter().find(free).or(candidates.first()) else {
            continue;
        };
        if row > 0 {
            let to_x = if x0 > px { x0 } else { x0 + w };
            root.draw(&PathElement::new(
                [(px, py), (to_x, y0 + h / 2)],
                BLACK.mix(0.35),
            ))?;
        }
        root.draw(&Rectangle::new(
            [(x0, y0), (x0 + w, y0 + h)],
            WHITE.mix(0.75).filled(),
        ))?;
        root.draw(&Text::new(label.as_str(), (x0 + 3, y0 + 2), style.clone()))?;
        placed.push((x0, y0, x0 + w, y0 + h));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn history_never_shows_the_test_split() {
        let text = history(&records());
        assert!(!text.contains("1.987654"), "{text}");
        assert!(!text.to_lowercase().contains("test"), "{text}");
    }

    #[test]
    fn history_lists_the_best_five_keeps_then_the_last_ten_in_order() {
        let text = history(&records());
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
    }

    #[test]
    fn history_gives_crash_reasons_on_one_line() {
        let text = history(&records()[..10]);
        assert!(
            text.contains("#7 crash [timed out after 600 s]: change 7"),
            "{text}"
        );
        assert_eq!(history(&[]), "No experiments yet.");
    }
}
