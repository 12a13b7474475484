//! A run's learning curve: the points of the trainer's progress lines (docs/contract.md, "The
//! progress line"), `@progress {"seconds":12.34,"step":40,"loss":3.2101}` on its stderr (with
//! `"probe":3.1876` now and then: the loss on fixed rows), which
//! land in the run's log as it trains. Every trial keeps its curve in the record; the dashboard
//! reads the logs of runs in flight with [`parse`].

use serde::{Deserialize, Serialize};

/// What starts a progress line; the rest of the line is one JSON object.
pub const MARK: &str = "@progress ";

/// Where a run was at one moment of its budget.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Point {
    /// Counted training seconds.
    pub seconds: f64,
    /// Steps taken, the uncounted first ones included.
    pub step: u64,
    /// The latest step's training loss; None when it was not finite.
    pub loss: Option<f64>,
    /// The model's loss on the runtime's fixed probe rows, on the lines that carry one (and
    /// finite); curves recorded before probes have none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probe: Option<f64>,
}

impl Point {
    /// The point `line` reports, when it is a well-formed progress line.
    pub fn of_line(line: &str) -> Option<Point> {
        let point: Point = serde_json::from_str(line.strip_prefix(MARK)?).ok()?;
        let finite = point.seconds.is_finite() && point.seconds >= 0.0;
        finite.then_some(Point {
            loss: point.loss.filter(|l| l.is_finite()),
            probe: point.probe.filter(|l| l.is_finite()),
            ..point
        })
    }
}

/// The curve in a log's text: its progress lines' points, in order; other lines are skipped.
pub fn parse(log: &str) -> Vec<Point> {
    log.lines().filter_map(Point::of_line).collect()
}

/// Most points a followed curve keeps (the runtime prints one a second at most; a trainer that
/// prints its own lines must not fill the orchestrator's memory or the records).
pub const MAX_POINTS: usize = 4096;

/// A curve taken in line by line, within [`MAX_POINTS`]: past it, every other point is dropped,
/// so that it still spans the whole run.
#[derive(Debug, Default)]
pub struct Curve {
    points: Vec<Point>,
    /// Points taken in since the last one kept, and how many make one kept.
    skipped: usize,
    every: usize,
}

impl Curve {
    /// Takes in `line` when it is a progress line; whether it was one.
    pub fn push_line(&mut self, line: &str) -> bool {
        let Some(point) = Point::of_line(line) else {
            return false;
        };
        self.skipped += 1;
        if self.skipped < self.every {
            return true;
        }
        self.skipped = 0;
        if self.points.len() == MAX_POINTS {
            self.points = self.points.iter().copied().step_by(2).collect();
            self.every = self.every.max(1) * 2;
        }
        self.points.push(point);
        true
    }

    pub fn points(&self) -> &[Point] {
        &self.points
    }

    pub fn into_points(self) -> Vec<Point> {
        self.points
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_progress_lines_of_a_log_make_its_curve() {
        let log = "device Cpu | 1000 params\n\
                   @progress {\"seconds\":0.00,\"step\":1,\"loss\":9.0100}\n\
                   step 00001 (0.0%) | loss 9.0100\n\
                   @progress {\"seconds\":12.34,\"step\":40,\"loss\":3.2101,\"probe\":3.1}\n\
                   @progress {\"seconds\":13.50,\"step\":43,\"loss\":null}\n";
        assert_eq!(
            parse(log),
            [
                Point {
                    seconds: 0.0,
                    step: 1,
                    loss: Some(9.01),
                    probe: None,
                },
                Point {
                    seconds: 12.34,
                    step: 40,
                    loss: Some(3.2101),
                    probe: Some(3.1),
                },
                Point {
                    seconds: 13.5,
                    step: 43,
                    loss: None,
                    probe: None,
                },
            ]
        );
    }

    #[test]
    fn malformed_progress_lines_are_skipped() {
        let log = "@progress not json\n\
                   @progress {\"seconds\":-1.0,\"step\":2,\"loss\":1.0}\n\
                   the trainer said @progress {\"seconds\":1.0,\"step\":2,\"loss\":1.0}\n\
                   @progress {\"seconds\":1.0,\"step\":2,\"loss\":1.0} [line cut]\n";
        assert_eq!(parse(log), []);
    }

    #[test]
    fn a_long_curve_is_thinned_and_still_spans_the_run() {
        let mut curve = Curve::default();
        let lines = 3 * MAX_POINTS;
        for step in 1..=lines {
            let line = format!("{MARK}{{\"seconds\":{step}.0,\"step\":{step},\"loss\":1.0}}");
            assert!(curve.push_line(&line));
        }
        assert!(!curve.push_line("step 1 | loss 1.0"));
        let points = curve.points();
        assert!(points.len() <= MAX_POINTS && points.len() > MAX_POINTS / 2);
        assert_eq!(points[0].step, 1);
        assert!(points.last().unwrap().step > (lines - 8) as u64);
        assert!(points.windows(2).all(|w| w[0].step < w[1].step));
    }

    #[test]
    fn a_point_reads_back_as_it_was_recorded() {
        let point = Point {
            seconds: 1.5,
            step: 7,
            loss: None,
            probe: None,
        };
        let json = serde_json::to_string(&point).unwrap();
        assert_eq!(json, r#"{"seconds":1.5,"step":7,"loss":null}"#);
        assert_eq!(Point::of_line(&format!("{MARK}{json}")), Some(point));
        let probed = Point {
            probe: Some(2.25),
            ..point
        };
        let json = serde_json::to_string(&probed).unwrap();
        assert_eq!(json, r#"{"seconds":1.5,"step":7,"loss":null,"probe":2.25}"#);
        assert_eq!(Point::of_line(&format!("{MARK}{json}")), Some(probed));
    }
}
