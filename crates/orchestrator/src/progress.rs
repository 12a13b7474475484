//! What the person watching sees: a status line on stderr (a live bar on a terminal, plain lines
//! otherwise).

use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

#[derive(Clone)]
pub struct Progress {
    bar: Option<ProgressBar>,
    /// Experiment number, best val_bpb and tallies, shown with every phase.
    context: String,
}

impl Default for Progress {
    fn default() -> Progress {
        Progress::new()
    }
}

impl Progress {
    pub fn new() -> Progress {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::new(1000).with_style(
                ProgressStyle::with_template(
                    "{prefix} {msg:<12} [{bar:30}] {percent:>3}% {elapsed}",
                )
                .expect("a valid template")
                .progress_chars("=> "),
            );
            bar.enable_steady_tick(Duration::from_millis(250));
            bar
        });
        Progress {
            bar,
            context: String::new(),
        }
    }

    pub fn set_context(&mut self, context: String) {
        if let Some(bar) = &self.bar {
            bar.set_prefix(context.clone());
        }
        self.context = context;
    }

    pub fn phase(&self, phase: &str) {
        match &self.bar {
            Some(bar) => {
                bar.set_message(phase.to_string());
                bar.set_position(0);
            }
            None => eprintln!("{} {phase}", self.context),
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
        match &self.bar {
            Some(bar) => bar.println(line),
            None => eprintln!("{line}"),
        }
    }
}
