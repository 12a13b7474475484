//! What the person watching sees: a status line on stderr per worker (live bars on a terminal,
//! plain lines otherwise).

use std::io::IsTerminal;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};

/// A status line. Clones share it; [`Progress::another`] adds one below, for another worker.
#[derive(Clone)]
pub struct Progress {
    /// Every worker's bar, on a terminal.
    bars: Option<MultiProgress>,
    bar: Option<ProgressBar>,
    /// Experiment number, best val_bpb and tallies, shown with every phase.
    context: Arc<Mutex<String>>,
}

impl Default for Progress {
    fn default() -> Progress {
        Progress::new()
    }
}

impl Progress {
    pub fn new() -> Progress {
        let bars = std::io::stderr().is_terminal().then(MultiProgress::new);
        Progress {
            bar: bars.as_ref().map(new_bar),
            bars,
            context: Arc::default(),
        }
    }

    /// A status line of its own, below this one.
    pub fn another(&self) -> Progress {
        Progress {
            bar: self.bars.as_ref().map(new_bar),
            bars: self.bars.clone(),
            context: Arc::default(),
        }
    }

    pub fn set_context(&self, context: String) {
        if let Some(bar) = &self.bar {
            bar.set_prefix(context.clone());
        }
        *self.context.lock().expect("not poisoned") = context;
    }

    pub fn phase(&self, phase: &str) {
        match &self.bar {
            Some(bar) => {
                bar.set_message(phase.to_string());
                bar.set_position(0);
            }
            None => eprintln!("{} {phase}", self.context.lock().expect("not poisoned")),
        }
    }

    /// Feeds a trainer stderr line; progress lines move the bar.
    pub fn trainer_line(&self, line: &str) {
        let Some(bar) = &self.bar else { return };
        if line.starts_with("evaluating") {
            bar.set_message("evaluating");
        } else if let Some(percent) = line
            .split_once('(')
            .and_then(|(_, rest)| rest.split_once("%)"))
            .and_then(|(p, _)| p.parse::<f64>().ok())
        {
            bar.set_message("training");
            bar.set_position((percent * 10.0) as u64);
        }
    }

    /// A line that stays: the outcome of an experiment or a notice.
    pub fn println(&self, line: &str) {
        match &self.bars {
            Some(bars) => bars.println(line).unwrap_or(()),
            None => eprintln!("{line}"),
        }
    }
}

fn new_bar(bars: &MultiProgress) -> ProgressBar {
    let bar = bars.add(
        ProgressBar::new(1000).with_style(
            ProgressStyle::with_template("{prefix} {msg:<12} [{bar:30}] {percent:>3}% {elapsed}")
                .expect("a valid template")
                .progress_chars("=> "),
        ),
    );
    bar.enable_steady_tick(Duration::from_millis(250));
    bar
}
