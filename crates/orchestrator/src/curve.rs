//! A run's learning curve: the points of the trainer's progress lines (docs/contract.md, "The
//! progress line"), `@progress {"seconds":12.34,"step":40,"loss":3.2101}` on its stderr, which
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
}

impl Point {
    /// The point `line` reports, when it is a well-formed progress line.
    pub fn of_line(line: &str) -> Option<Point> {
        let point: Point = serde_json::from_str(line.strip_prefix(MARK)?).ok()?;
        let finite = point.seconds.is_finite() && point.seconds >= 0.0;
        finite.then_some(Point {
            loss: point.loss.filter(|l| l.is_finite()),
            ..point
        })
    }
}

/// The curve in a log's text: its progress lines' points, in order; other lines are skipped.
pub fn parse(log: &str) -> Vec<Point> {
    log.lines().filter_map(Point::of_line).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_progress_lines_of_a_log_make_its_curve() {
        let log = "device Cpu | 1000 params\n\
                   @progress {\"seconds\":0.00,\"step\":1,\"loss\":9.0100}\n\
                   step 00001 (0.0%) | loss 9.0100\n\
                   @progress {\"seconds\":12.34,\"step\":40,\"loss\":3.2101}\n\
                   @progress {\"seconds\":13.50,\"step\":43,\"loss\":null}\n";
        assert_eq!(
            parse(log),
            [
                Point {
                    seconds: 0.0,
                    step: 1,
                    loss: Some(9.01)
                },
                Point {
                    seconds: 12.34,
                    step: 40,
                    loss: Some(3.2101)
                },
                Point {
                    seconds: 13.5,
                    step: 43,
                    loss: None
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
    fn a_point_reads_back_as_it_was_recorded() {
        let point = Point {
            seconds: 1.5,
            step: 7,
            loss: None,
        };
        let json = serde_json::to_string(&point).unwrap();
        assert_eq!(json, r#"{"seconds":1.5,"step":7,"loss":null}"#);
        assert_eq!(Point::of_line(&format!("{MARK}{json}")), Some(point));
    }
}
