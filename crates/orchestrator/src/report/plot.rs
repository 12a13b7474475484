//! `runs/<tag>/progress.png`: every experiment's score, the running best with its noise band,
//! crashes on the top edge, and each keep labelled with its description.

use std::path::Path;

use anyhow::{Context, Result, anyhow};
use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;
use plotters::style::{FontStyle, register_font};

use super::summary::{Summary, running_best, running_sigma};
use crate::ledger::{Record, Status};
use crate::text::{one_line, truncate_chars};

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

/// The chart's data area: experiment number across, val_bpb up.
type Chart<'a, 'b> =
    ChartContext<'a, BitMapBackend<'b>, Cartesian2d<RangedCoordf64, RangedCoordf64>>;

pub(super) fn draw(records: &[Record], summary: &Summary, path: &Path) -> Result<()> {
    let mut pixels = vec![0; (WIDTH * HEIGHT * 3) as usize];
    render(records, summary, &mut pixels)?;
    write_png(path, &pixels).with_context(|| format!("writing {}", path.display()))
}

/// The plot as RGB `pixels`, WIDTH x HEIGHT.
fn render(records: &[Record], summary: &Summary, pixels: &mut [u8]) -> Result<()> {
    // With several workers the ledger is in the order experiments finished; the plot runs by
    // experiment number.
    let mut records = records.to_vec();
    records.sort_by_key(|r| r.seq);
    let records = &records[..];
    register_fonts()?;
    let root = BitMapBackend::with_buffer(pixels, (WIDTH, HEIGHT)).into_drawing_area();
    root.fill(&WHITE)?;

    let (y_low, y_high) = y_range(records, summary.sigma.unwrap_or(0.0));
    let last = records.last().map_or(0, |r| r.seq) as f64;
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
        .build_cartesian_2d(-0.5..last + 0.5, y_low..y_high)?;
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

    noise_band(&mut chart, records)?;
    best_line(&mut chart, records, last + 0.5)?;
    // Scores above the top of the range, and crashes (which have none), sit on the top edge.
    points(&mut chart, records, y_high - 0.03 * (y_high - y_low))?;
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerLeft)
        .label_font((FONT, 14))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.3))
        .draw()?;
    label_keeps(&root, &chart, records)?;
    root.present()?;
    Ok(())
}

/// Plotters' own PNG encoder would bring the `image` crate, a build longer than the rest of the
/// report's; the `png` crate does the one thing needed.
fn write_png(path: &Path, pixels: &[u8]) -> Result<()> {
    let file = std::io::BufWriter::new(std::fs::File::create(path)?);
    let mut encoder = png::Encoder::new(file, WIDTH, HEIGHT);
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    let mut writer = encoder.write_header()?;
    writer.write_image_data(pixels)?;
    writer.finish()?;
    Ok(())
}

/// The noise band: +-2 sigma around the running best, one rectangle per stretch where neither
/// changes (adjacent translucent rectangles would leave seams).
fn noise_band(chart: &mut Chart, records: &[Record]) -> Result<()> {
    let (bests, sigmas) = (running_best(records), running_sigma(records));
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
    Ok(())
}

/// The running best as a step line, from the first keep to `end`.
fn best_line(chart: &mut Chart, records: &[Record], end: f64) -> Result<()> {
    let mut steps: Vec<(f64, f64)> = Vec::new();
    for (r, best) in records.iter().zip(running_best(records)) {
        let Some(best) = best else { continue };
        let x = r.seq as f64;
        if let Some(&(_, previous)) = steps.last() {
            steps.push((x, previous));
        }
        steps.push((x, best));
    }
    if let Some(&(_, best)) = steps.last() {
        steps.push((end, best));
    }
    chart
        .draw_series(LineSeries::new(steps, BEST_BLUE.stroke_width(2)))?
        .label("running best")
        .legend(|(x, y)| PathElement::new([(x - 10, y), (x + 10, y)], BEST_BLUE.stroke_width(2)));
    Ok(())
}

/// Every experiment: keeps and discards at their scores, those above `edge` and crashes on it.
fn points(chart: &mut Chart, records: &[Record], edge: f64) -> Result<()> {
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
    Ok(())
}

/// Each keep's number and description beside its point.
fn label_keeps(
    root: &DrawingArea<BitMapBackend, plotters::coord::Shift>,
    chart: &Chart,
    records: &[Record],
) -> Result<()> {
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
        root,
        chart.plotting_area().get_pixel_range(),
        &keeps,
        &points,
    )
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
