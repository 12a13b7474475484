//! What the night tells people besides its records, and what ends it besides its experiments:
//! the alerts (a new best, a crash streak, no keep for hours; see `notify`) and the LLM's cost
//! against `max_cost_usd`. Once the cap is reached no new experiment starts; those under way
//! finish and are recorded, so that `--resume` (with a higher cap) goes on from there. Kept in
//! cells beside the shared state: nothing here is borrowed, so nothing here can be held across
//! an `.await`.

use std::cell::Cell;
use std::convert::Infallible;
use std::time::Instant;

use super::session::Session;
use crate::config::{AgentKind, Config};
use crate::cost::{Costs, Tokens};
use crate::ledger::{Pending, Record, Status};
use crate::notify::{Alerts, Event};

pub(super) struct Watch {
    /// USD the LLM has cost so far, the experiments under way included.
    spent_usd: Cell<f64>,
    /// `max_cost_usd` is reached: no new experiments.
    capped: Cell<bool>,
    /// When the latest keep was recorded (the session's start before any).
    last_keep: Cell<Instant>,
}

impl Watch {
    /// What `records` and the experiments under way, `pendings`, have cost at `costs`.
    pub fn new(costs: &Costs, records: &[Record], pendings: &[Pending]) -> Watch {
        let recorded: f64 = records.iter().filter_map(|r| r.cost_usd).sum();
        let pending: f64 = pendings
            .iter()
            .filter_map(|p| costs.of(p.agent_usage))
            .sum();
        Watch {
            spent_usd: Cell::new(recorded + pending),
            capped: Cell::new(false),
            last_keep: Cell::new(Instant::now()),
        }
    }

    pub fn capped(&self) -> bool {
        self.capped.get()
    }
}

impl Session {
    /// After a record is appended to `records`: the alert it raises, if any, and the time of a
    /// keep.
    pub fn alert_on_record(&self, records: &[Record]) {
        if records.last().is_some_and(|r| r.status == Status::Keep) {
            self.watch.last_keep.set(Instant::now());
        }
        let crashes = Alerts::of(&self.cfg.settings).crashes;
        if let Some(event) = Event::of_record(records, crashes) {
            self.notifier.send(&event);
        }
    }

    /// The agent spent `tokens` on a proposal or a repair.
    pub fn spend(&self, tokens: Tokens) {
        if let Some(usd) = self.cfg.costs.of(tokens) {
            self.watch.spent_usd.set(self.watch.spent_usd.get() + usd);
        }
    }

    /// Whether a new experiment may start: not once the cost cap is reached (said once).
    pub fn cost_allows(&self) -> bool {
        let (costs, spent) = (&self.cfg.costs, self.watch.spent_usd.get());
        if !costs.cap_reached(spent) {
            return true;
        }
        if !self.watch.capped.replace(true) {
            let max = costs.max_usd.unwrap_or_default();
            self.progress.println(&format!(
                "the LLM has cost ${spent:.4}, the cap max_cost_usd is ${max}: no new \
                 experiments; those under way finish. Raise the cap (--max-cost-usd) and \
                 --resume to go on"
            ));
            self.notifier.send(&Event::CostCap {
                spent_usd: spent,
                max_cost_usd: max,
            });
        }
        false
    }

    /// Alerts whenever `notify_idle_hours` pass without a keep, and again after as long; never
    /// returns (the night's end drops it).
    pub async fn watch_idle(&self) -> Infallible {
        let idle = Alerts::of(&self.cfg.settings).idle;
        let mut last_alert = Instant::now();
        loop {
            let last_keep = self.watch.last_keep.get();
            let due = last_keep.max(last_alert) + idle;
            if Instant::now() < due {
                tokio::time::sleep_until(due.into()).await;
                continue;
            }
            self.notifier.send(&Event::NoKeep {
                hours: last_keep.elapsed().as_secs_f64() / 3600.0,
            });
            last_alert = Instant::now();
        }
    }
}

/// The start-up's lines on the LLM's price and cap, and on the alerts.
pub fn announce(cfg: &Config) {
    if cfg.agent == AgentKind::Openai {
        eprintln!("cost | {}", cfg.costs.describe());
    }
    let alerts = Alerts::of(&cfg.settings);
    if let Some(command) = &alerts.command {
        eprintln!(
            "alerts | {command:?} hears of each new best, {} crashes in a row, {:.1} hours without \
             a keep, the cost cap and the end",
            alerts.crashes,
            alerts.idle.as_secs_f64() / 3600.0
        );
    }
}
