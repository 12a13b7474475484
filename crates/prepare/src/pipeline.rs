//! The prepare steps, each skipped when its output already exists: corpus, tokenizer, tokenised
//! splits, contract.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use indicatif::ProgressBar;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::atomic;
use crate::contract::{BOS_ID, CONTRACT_SCHEMA, Contract, Profile};
use crate::corpus::{self, Corpus};
use crate::eval::EvalSet;
use crate::split::{self, Split, SplitData};
use crate::tokenizer::Tokenizer;

pub enum Source {
    Enwik8 { download_dir: PathBuf },
    Files { name: String, inputs: Vec<PathBuf> },
}

pub struct Options {
    pub source: Source,
    /// Where the tokenised data and the contract go, e.g. `data/enwik8`.
    pub data_dir: PathBuf,
    pub vocab_size: usize,
    pub profile: Profile,
    /// Overrides of the profile's figures.
    pub seq_len: Option<usize>,
    pub eval_bytes: Option<u64>,
    pub time_budget_s: f64,
}

/// What the tokenised files were made from; a different request must not reuse them.
#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct SourceRecord {
    corpus: String,
    corpus_sha256: String,
    vocab_size: usize,
}

pub struct SplitSummary {
    pub name: &'static str,
    pub docs: usize,
    pub bytes: u64,
    pub tokens: usize,
}

pub struct Summary {
    pub contract: Contract,
    pub splits: Vec<SplitSummary>,
    /// Named steps with the time they took (0 when skipped).
    pub timings: Vec<(&'static str, Duration)>,
}

pub fn run(opts: &Options) -> Result<Summary> {
    let dir = &opts.data_dir;
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut timings = Vec::new();
    let mut clock = Instant::now();
    let mut lap = |name, timings: &mut Vec<(&'static str, Duration)>| {
        timings.push((name, clock.elapsed()));
        clock = Instant::now();
    };

    let splits_done = Split::ALL
        .iter()
        .all(|&s| split::docs_path(dir, s).exists());
    let tokenizer_path = dir.join("tokenizer.json");
    let corpus = if splits_done && tokenizer_path.exists() {
        None
    } else {
        Some(load_corpus(&opts.source)?)
    };
    lap("corpus", &mut timings);

    let record_path = dir.join("source.json");
    let record = match &corpus {
        Some(c) => {
            let record = SourceRecord {
                corpus: c.name.clone(),
                corpus_sha256: c.sha256.clone(),
                vocab_size: opts.vocab_size,
            };
            check_same_source(&record_path, &record)?;
            atomic::write(&record_path, &serde_json::to_vec_pretty(&record)?)?;
            record
        }
        None => {
            let record: SourceRecord = serde_json::from_slice(
                &fs::read(&record_path)
                    .with_context(|| format!("reading {}", record_path.display()))?,
            )
            .with_context(|| {
                format!(
                    "{} is corrupt; delete {}",
                    record_path.display(),
                    dir.display()
                )
            })?;
            if record.vocab_size != opts.vocab_size {
                bail!(
                    "{} holds a vocabulary of {}, not {}: choose another --name, or delete it",
                    dir.display(),
                    record.vocab_size,
                    opts.vocab_size
                );
            }
            record
        }
    };

    let tokenizer = if tokenizer_path.exists() {
        Tokenizer::load(&tokenizer_path)?
    } else {
        let corpus = corpus
            .as_ref()
            .expect("loaded when the tokenizer is missing");
        // Token files from an earlier tokenizer would not match the new one.
        for split in Split::ALL {
            fs::remove_file(split::docs_path(dir, split)).ok();
        }
        let spinner = spinner(format!(
            "training the tokenizer (vocab {})",
            opts.vocab_size
        ));
        let tokenizer = Tokenizer::train(&corpus.splits[0], opts.vocab_size)?;
        spinner.finish_and_clear();
        tokenizer.save(&tokenizer_path)?;
        let lengths: Vec<u8> = padded_byte_lengths(&tokenizer, opts.vocab_size)
            .iter()
            .flat_map(|l| l.to_le_bytes())
            .collect();
        atomic::write(&dir.join("token_bytes.bin"), &lengths)?;
        tokenizer
    };
    lap("tokenizer", &mut timings);

    for (i, split) in Split::ALL.into_iter().enumerate() {
        if split::docs_path(dir, split).exists() {
            continue;
        }
        let corpus = corpus.as_ref().expect("loaded when a split is missing");
        let docs = &corpus.splits[i];
        let spinner = spinner(format!("encoding {}", split.name()));
        let mut encoded = tokenizer.encode_all(docs)?;
        for ids in &mut encoded {
            ids.insert(0, BOS_ID as u16);
        }
        spinner.finish_and_clear();
        split::write_split(dir, split, &encoded)?;
    }
    lap("encoding", &mut timings);

    let token_bytes = padded_byte_lengths(&tokenizer, opts.vocab_size);
    let seq_len = opts.seq_len.unwrap_or(opts.profile.seq_len());
    let eval_bytes = opts.eval_bytes.unwrap_or(opts.profile.eval_bytes());
    let val = SplitData::open(dir, Split::Val)?;
    let scored = EvalSet::new(
        val.tokens(0, val.num_tokens()),
        &token_bytes,
        seq_len,
        eval_bytes,
    );
    let contract = Contract {
        schema: CONTRACT_SCHEMA,
        corpus: record.corpus,
        corpus_sha256: record.corpus_sha256,
        tokenizer_sha256: hex::encode(Sha256::digest(fs::read(&tokenizer_path)?)),
        vocab_size: opts.vocab_size,
        bos_id: BOS_ID,
        profile: opts.profile.name().into(),
        seq_len,
        time_budget_s: opts.time_budget_s,
        eval_bytes,
        scored_bytes: scored.scored_bytes(),
    };
    atomic::write(
        &dir.join("contract.json"),
        &serde_json::to_vec_pretty(&contract)?,
    )?;

    let splits = Split::ALL
        .into_iter()
        .map(|split| {
            let data = SplitData::open(dir, split)?;
            let bytes = data
                .tokens(0, data.num_tokens())
                .map(|t| token_bytes[t as usize] as u64)
                .sum();
            Ok(SplitSummary {
                name: split.name(),
                docs: data.num_docs(),
                bytes,
                tokens: data.num_tokens(),
            })
        })
        .collect::<Result<_>>()?;
    lap("contract", &mut timings);
    Ok(Summary {
        contract,
        splits,
        timings,
    })
}

/// Byte lengths of the whole contract vocabulary. A small corpus can run out of merges before the
/// requested size; the ids it never made stay in the vocabulary (with no bytes) so the model's
/// shape is what the contract says.
fn padded_byte_lengths(tokenizer: &Tokenizer, vocab_size: usize) -> Vec<u16> {
    let mut lengths = tokenizer.token_byte_lengths();
    lengths.resize(vocab_size, 0);
    lengths
}

fn load_corpus(source: &Source) -> Result<Corpus> {
    match source {
        Source::Enwik8 { download_dir } => {
            fs::create_dir_all(download_dir)
                .with_context(|| format!("creating {}", download_dir.display()))?;
            corpus::enwik8(download_dir)
        }
        Source::Files { name, inputs } => corpus::user_corpus(name, inputs),
    }
}

fn check_same_source(path: &Path, record: &SourceRecord) -> Result<()> {
    let Ok(existing) = fs::read(path) else {
        return Ok(());
    };
    match serde_json::from_slice::<SourceRecord>(&existing) {
        Ok(old) if &old == record => Ok(()),
        _ => bail!(
            "{} was prepared from another corpus or vocabulary size; choose another --name, or \
             delete that directory to prepare it afresh",
            path.parent().unwrap_or(path).display()
        ),
    }
}

fn spinner(message: String) -> ProgressBar {
    let bar = ProgressBar::new_spinner().with_message(message);
    bar.enable_steady_tick(Duration::from_millis(120));
    bar
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        let c = &self.contract;
        writeln!(
            f,
            "{:<6} {:>8} {:>13} {:>12} {:>11}",
            "split", "docs", "bytes", "tokens", "bytes/token"
        )?;
        for s in &self.splits {
            let ratio = s.bytes as f64 / s.tokens.max(1) as f64;
            writeln!(
                f,
                "{:<6} {:>8} {:>13} {:>12} {:>11.3}",
                s.name, s.docs, s.bytes, s.tokens, ratio
            )?;
        }
        let steps: Vec<String> = self
            .timings
            .iter()
            .map(|(name, d)| format!("{name} {:.1}s", d.as_secs_f64()))
            .collect();
        writeln!(f, "timings: {}", steps.join(", "))?;
        write!(
            f,
            "contract {} ({} profile): vocab {}, seq_len {}, budget {} s, {} validation bytes scored",
            c.hash(),
            c.profile,
            c.vocab_size,
            c.seq_len,
            c.time_budget_s,
            c.scored_bytes
        )
    }
}
