//! What the LLM costs: the tokens each experiment's proposal used (input and output apart, as
//! providers price them), the price of the model in USD per million tokens (autoresearch.toml's
//! `[prices]`, else a small table of well-known models, else 0 for a server on this machine),
//! and the cap `max_cost_usd` that ends a night cleanly once reached.

use std::collections::BTreeMap;
use std::ops::AddAssign;

use anyhow::{Result, bail};
use serde::{Deserialize, Serialize};

/// Tokens an LLM read (the prompt) and wrote (the reply), as its `usage` counts them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tokens {
    pub input: u64,
    pub output: u64,
}

impl AddAssign for Tokens {
    fn add_assign(&mut self, other: Tokens) {
        self.input += other.input;
        self.output += other.output;
    }
}

impl Tokens {
    pub fn total(&self) -> u64 {
        self.input + self.output
    }

    /// The tokens of a chat-completions response's `usage`.
    pub fn of_response(response: &serde_json::Value) -> Tokens {
        let usage = &response["usage"];
        Tokens {
            input: usage["prompt_tokens"].as_u64().unwrap_or(0),
            output: usage["completion_tokens"].as_u64().unwrap_or(0),
        }
    }
}

/// USD per million tokens read and written.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Price {
    pub input: f64,
    pub output: f64,
}

impl Price {
    pub fn of(&self, tokens: Tokens) -> f64 {
        (tokens.input as f64 * self.input + tokens.output as f64 * self.output) / 1e6
    }
}

/// Well-known models' list prices (USD per million input and output tokens, OpenAI's as
/// published in 2025). A provider's own prices, or a newer list, go in `[prices]`.
const KNOWN: [(&str, Price); 10] = [
    ("gpt-4.1", price(2.0, 8.0)),
    ("gpt-4.1-mini", price(0.4, 1.6)),
    ("gpt-4.1-nano", price(0.1, 0.4)),
    ("gpt-4o", price(2.5, 10.0)),
    ("gpt-4o-mini", price(0.15, 0.6)),
    ("o3", price(2.0, 8.0)),
    ("o4-mini", price(1.1, 4.4)),
    ("gpt-5", price(1.25, 10.0)),
    ("gpt-5-mini", price(0.25, 2.0)),
    ("gpt-5-nano", price(0.05, 0.4)),
];

const fn price(input: f64, output: f64) -> Price {
    Price { input, output }
}

/// What the night's LLM costs and may cost.
#[derive(Debug, Clone, Default)]
pub struct Costs {
    /// The model's price; None when it is not known (an unlisted model on a remote endpoint),
    /// and the cost is then not counted.
    pub price: Option<Price>,
    /// Where the price comes from, in words.
    pub price_from: String,
    /// `max_cost_usd`: the night ends cleanly once its experiments cost this much.
    pub max_usd: Option<f64>,
}

impl Costs {
    /// The costs of `model` at `base_url` (None: OpenAI's) for an agent that `uses_llm`, with the
    /// `[prices]` of `file` (autoresearch.toml, for the messages) and the cap `max_usd`.
    pub fn resolve(
        uses_llm: bool,
        model: &str,
        base_url: Option<&str>,
        prices: Option<&toml::Table>,
        file: &std::path::Path,
        max_usd: Option<f64>,
    ) -> Result<Costs> {
        let configured = parse_prices(prices, file)?;
        let (price, price_from) = if !uses_llm {
            (
                Some(price(0.0, 0.0)),
                "the offline agent uses no LLM".into(),
            )
        } else if let Some(p) = configured.get(model) {
            (Some(*p), format!("[prices] in {}", file.display()))
        } else if let Some((_, p)) = KNOWN.iter().find(|(name, _)| *name == model) {
            (Some(*p), "the built-in list price".into())
        } else if base_url.is_some_and(is_local) {
            (Some(price(0.0, 0.0)), "a server on this machine".into())
        } else {
            (None, "unknown".into())
        };
        if let (None, Some(max)) = (price, max_usd) {
            bail!(
                "max_cost_usd is {max}, but the price of model {model:?} is not known, so its \
                 cost cannot be counted: add it to autoresearch.toml, e.g.\n[prices]\n\"{model}\" \
                 = {{ input = 2.0, output = 8.0 }}   # USD per million tokens"
            );
        }
        Ok(Costs {
            price,
            price_from,
            max_usd,
        })
    }

    /// What `tokens` cost, when the price is known.
    pub fn of(&self, tokens: Tokens) -> Option<f64> {
        self.price.map(|p| p.of(tokens))
    }

    /// The cap is reached once `spent` is at or past it.
    pub fn cap_reached(&self, spent: f64) -> bool {
        self.max_usd.is_some_and(|max| spent >= max)
    }

    /// For the start-up block.
    pub fn describe(&self) -> String {
        let price = match self.price {
            Some(p) => format!(
                "${} in, ${} out per million tokens ({})",
                p.input, p.output, self.price_from
            ),
            None => "price unknown: not counted (set [prices] in autoresearch.toml)".into(),
        };
        match self.max_usd {
            Some(max) => format!("{price}; the night ends at ${max}"),
            None => price,
        }
    }
}

/// An endpoint on this machine, which costs nothing per token.
fn is_local(url: &str) -> bool {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let host = rest.split(['/', '?']).next().unwrap_or(rest);
    let host = host.rsplit('@').next().unwrap_or(host);
    let host = match host.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(v6),
        None => host.split(':').next().unwrap_or(host),
    };
    matches!(host, "localhost" | "127.0.0.1" | "::1" | "0.0.0.0") || host.starts_with("127.")
}

/// autoresearch.toml's `[prices]`: `"model" = { input = USD, output = USD }` per million tokens.
/// Read by hand so that a bad value is named by its key.
fn parse_prices(
    table: Option<&toml::Table>,
    file: &std::path::Path,
) -> Result<BTreeMap<String, Price>> {
    let mut prices = BTreeMap::new();
    for (model, value) in table.into_iter().flatten() {
        let key = format!("prices.{model:?}");
        let Some(entry) = value.as_table() else {
            bail!(
                "{key} in {} is not a table: write it as {key:?} = {{ input = 2.0, output = 8.0 }} \
                 (USD per million tokens)",
                file.display()
            );
        };
        if let Some(other) = entry.keys().find(|k| *k != "input" && *k != "output") {
            bail!(
                "{key}.{other} in {} is not a price: a model's price has input and output",
                file.display()
            );
        }
        let usd = |side: &str| -> Result<f64> {
            let number = match entry.get(side) {
                Some(toml::Value::Float(f)) => Some(*f),
                Some(toml::Value::Integer(i)) => Some(*i as f64),
                _ => None,
            };
            match number {
                Some(n) if n.is_finite() && n >= 0.0 => Ok(n),
                _ => bail!(
                    "{key}.{side} is {} (in {}): it must be a number of USD per million tokens \
                     >= 0",
                    entry.get(side).map_or("missing".into(), |v| v.to_string()),
                    file.display()
                ),
            }
        };
        prices.insert(model.clone(), price(usd("input")?, usd("output")?));
    }
    Ok(prices)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolve(model: &str, url: Option<&str>, prices: &str, max: Option<f64>) -> Result<Costs> {
        let table: toml::Table = toml::from_str(prices).unwrap();
        let prices = table.get("prices").and_then(|p| p.as_table());
        Costs::resolve(true, model, url, prices, "autoresearch.toml".as_ref(), max)
    }

    #[test]
    fn a_price_comes_from_the_file_then_the_list_then_a_local_server() {
        let file = "[prices]\n\"my-model\" = { input = 1, output = 3.5 }\n";
        let costs = resolve("my-model", None, file, Some(5.0)).unwrap();
        assert_eq!(costs.price, Some(price(1.0, 3.5)));
        let tokens = Tokens {
            input: 2_000_000,
            output: 100_000,
        };
        assert!((costs.of(tokens).unwrap() - 2.35).abs() < 1e-12);
        assert!(!costs.cap_reached(4.99) && costs.cap_reached(5.0));
        let known = resolve("gpt-4.1", None, "", None).unwrap();
        assert_eq!(known.price, Some(price(2.0, 8.0)));
        for url in [
            "http://127.0.0.1:8080/v1",
            "http://localhost/v1",
            "http://[::1]:80",
        ] {
            let local = resolve("smollm2", Some(url), "", Some(1.0)).unwrap();
            assert_eq!(local.price, Some(price(0.0, 0.0)), "{url}");
        }
        let remote = resolve("mystery", Some("https://api.example.com/v1"), "", None).unwrap();
        assert_eq!((remote.price, remote.of(tokens)), (None, None));
    }

    #[test]
    fn a_bad_price_is_named_by_its_key_and_a_cap_needs_a_price() {
        for (file, expected) in [
            (
                "[prices]\n\"gpt-x\" = { input = \"abc\", output = 1 }",
                "prices.\"gpt-x\".input is \"abc\" (in autoresearch.toml): it must be a number",
            ),
            (
                "[prices]\n\"gpt-x\" = { input = 1, output = -2 }",
                "prices.\"gpt-x\".output is -2 (",
            ),
            (
                "[prices]\n\"gpt-x\" = { input = 1 }",
                "prices.\"gpt-x\".output is missing (",
            ),
            (
                "[prices]\n\"gpt-x\" = 3",
                "prices.\"gpt-x\" in autoresearch.toml is not a table",
            ),
            (
                "[prices]\n\"gpt-x\" = { input = 1, output = 1, cached = 0.5 }",
                "prices.\"gpt-x\".cached in autoresearch.toml is not a price",
            ),
        ] {
            let err = format!("{:#}", resolve("gpt-x", None, file, None).unwrap_err());
            assert!(err.contains(expected), "{file}: {err}");
        }
        let err = format!(
            "{:#}",
            resolve("mystery", Some("https://api.example.com"), "", Some(3.0)).unwrap_err()
        );
        assert!(
            err.contains("max_cost_usd is 3") && err.contains("\"mystery\" = { input"),
            "{err}"
        );
    }
}
