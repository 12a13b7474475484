//! What the night tells people besides its records, and what ends it besides its experiments:
//! the alerts (a new best, a crash streak, no keep for hours; see `notify`) and the LLM's cost
//! against `max_cost_usd`. Once the cap is reached no new experiment starts; those under way
//! finish and are recorded, so that `--resume` (with a higher cap) goes on from there.

use std::convert::Infallible;
use std::time::Instant;

use super::session::{Session, State};
use crate::config::{AgentKind, Config};
use crate::cost::{Costs, Tokens};
use crate::ledger::{Pending, Record, Status};
use crate::notify::Event;

impl Session {
    /// After a record is appended: the alert it raises, if any, and the time of a keep.
    pub fn alert_on_record(&self, state: &mut State) {
        let records = &state.ledger.records;
        if records.last().is_some_and(|r| r.status == Status::Keep) {
            state.last_keep = Instant::now();
        }
        if let Some(event) = Event::of_record(records, self.cfg.alerts.crashes) {
            self.notifier.send(&event);
        }
    }

    /// The agent spent `tokens` on a proposal or a repair.
    pub fn spend(&self, tokens: Tokens) {
        if let Some(usd) = self.cfg.costs.of(tokens) {
            self.state().spent_usd += usd;
        }
    }

    /// Whether a new experiment may start: not once the cost cap is reached (said once).
    pub fn cost_allows(&self, state: &mut State) -> bool {
        let costs = &self.cfg.costs;
        if !costs.cap_reached(state.spent_usd) {
            return true;
        }
        if !state.capped {
            state.capped = true;
            let max = costs.max_usd.unwrap_or_default();
            self.progress.println(&format!(
                "the LLM has cost ${:.4}, the cap max_cost_usd is ${max}: no new experiments; \
                 those under way finish. Raise the cap (--max-cost-usd) and --resume to go on",
                state.spent_usd
            ));
            self.notifier.send(&Event::CostCap {
                spent_usd: state.spent_usd,
                max_cost_usd: max,
            });
        }
        false
    }

    /// Alerts whenever `notify_idle_hours` pass without a keep, and again after as long; never
    /// returns (the night's end drops it).
    pub async fn watch_idle(&self) -> Infallible {
        let mut last_alert = Instant::now();
        loop {
            let last_keep = self.state().last_keep;
            let due = last_keep.max(last_alert) + self.cfg.alerts.idle;
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
    if let Some(command) = &cfg.alerts.command {
        eprintln!(
            "alerts | {command:?} hears of each new best, {} crashes in a row, {:.1} hours without \
             a keep, the cost cap and the end",
            cfg.alerts.crashes,
            cfg.alerts.idle.as_secs_f64() / 3600.0
        );
    }
}

/// What the LLM has cost so far: the records' costs and the tokens of experiments under way.
pub fn spent(costs: &Costs, records: &[Record], pendings: &[Pending]) -> f64 {
    let recorded: f64 = records.iter().filter_map(|r| r.cost_usd).sum();
    let pending: f64 = pendings
        .iter()
        .filter_map(|p| costs.of(p.agent_usage))
        .sum();
    recorded + pending
}
