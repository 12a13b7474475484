//! The prepared data directory: tokenised splits, the tokenizer and the contract.
//! FIXED: train reads these files; only prepare writes them, each under a temporary name renamed
//! into place, so a file that exists is complete.
//!
//! Layout of `data/<name>/`:
//! - `source.json`: which corpus and vocabulary size the files below were made from
//! - `tokenizer.json`, `token_bytes.bin` (u16 LE byte length per id)
//! - `<split>.tokens` (u16 LE ids, every document starting with BOS) and `<split>.docs`
//!   (u64 LE start offset of every document, then the total)
//! - `contract.json`: the evaluation contract

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result, bail, ensure};

use crate::contract::{CONTRACT_SCHEMA, Contract};
use crate::eval::EvalSet;
use crate::loader::TrainLoader;
pub use crate::split::{Split, SplitData};

/// The files [`Dataset::open`] reads, whatever is read next.
pub const DATASET_FILES: [&str; 2] = ["contract.json", "token_bytes.bin"];

/// Every file a trainer may read: what [`Dataset::open`] and the training loader read, the
/// corpus's record and the tokenizer; of the splits only the training split's. The trainer's
/// jail holds these alone.
pub fn training_files() -> Vec<String> {
    let named = [
        DATASET_FILES[0],
        "source.json",
        "tokenizer.json",
        DATASET_FILES[1],
    ];
    let named = named.map(String::from);
    named.into_iter().chain(Split::Train.files()).collect()
}

/// Refuses a prepared directory `dir` that lacks one of `files` (see [`training_files`],
/// [`scored_files`]), naming it: a jail built without it would fail far from the cause.
pub fn ensure_files(dir: &Path, files: &[String]) -> Result<()> {
    for name in files {
        let path = dir.join(name);
        ensure!(
            path.is_file(),
            "the prepared data lacks {}: run `cargo run --release -p prepare` again (or point \
             {} at a prepared directory)",
            path.display(),
            crate::DATA_ENV
        );
    }
    Ok(())
}

/// Every file that scoring `split` reads ([`Dataset::open`], then [`Dataset::eval_set`]), and no
/// other: the protected evaluator's jail holds these alone, so a model it scores on the
/// validation split cannot reach the test split, nor the training split.
pub fn scored_files(split: Split) -> Vec<String> {
    let dataset = DATASET_FILES.map(String::from);
    dataset.into_iter().chain(split.files()).collect()
}

/// A prepared data directory, opened for training and evaluation. Each split is opened when it
/// is asked for, so that a directory holding one split (a jail's) opens too.
pub struct Dataset {
    dir: PathBuf,
    contract: Contract,
    hash: String,
    token_bytes: Arc<Vec<u16>>,
}

impl Dataset {
    pub fn open(dir: &Path) -> Result<Dataset> {
        let contract_path = dir.join("contract.json");
        if !contract_path.exists() {
            bail!(
                "no prepared data in {}: run `cargo run --release -p prepare` first",
                dir.display()
            );
        }
        let text = fs::read_to_string(&contract_path)
            .with_context(|| format!("reading {}", contract_path.display()))?;
        let schema = serde_json::from_str::<serde_json::Value>(&text)
            .ok()
            .and_then(|v| v.get("schema").and_then(|s| s.as_u64()));
        if schema != Some(CONTRACT_SCHEMA as u64) {
            bail!(
                "{} was written by another version of prepare (contract schema {schema:?}, this \
                 one reads {CONTRACT_SCHEMA}); run `cargo run --release -p prepare` again",
                dir.display()
            );
        }
        let contract: Contract = serde_json::from_str(&text).with_context(|| {
            format!("{} is corrupt; run prepare again", contract_path.display())
        })?;
        let token_bytes = read_token_bytes(dir)?;
        ensure!(
            token_bytes.len() == contract.vocab_size,
            "token_bytes.bin has {} entries but the contract says vocab {}; run prepare again",
            token_bytes.len(),
            contract.vocab_size
        );
        Ok(Dataset {
            dir: dir.to_path_buf(),
            hash: contract.hash(),
            contract,
            token_bytes: Arc::new(token_bytes),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn contract(&self) -> &Contract {
        &self.contract
    }

    pub fn contract_hash(&self) -> &str {
        &self.hash
    }

    /// Byte length of every token id.
    pub fn token_bytes(&self) -> &[u16] {
        &self.token_bytes
    }

    /// An endless stream of packed training rows of `seq_len + 1` tokens, deterministic in `seed`.
    pub fn train_loader(
        &self,
        batch_size: usize,
        seq_len: usize,
        seed: u64,
    ) -> Result<TrainLoader> {
        Ok(TrainLoader::new(
            Arc::new(SplitData::open(&self.dir, Split::Train)?),
            self.contract.bos_id as u16,
            batch_size,
            seq_len,
            seed,
        ))
    }

    /// The rows that the contract scores on `split` (validation, or the test holdout).
    pub fn eval_set(&self, split: Split) -> Result<EvalSet> {
        let data = SplitData::open(&self.dir, split)?;
        Ok(EvalSet::new(
            data.tokens(0, data.num_tokens()),
            &self.token_bytes,
            self.contract.seq_len,
            self.contract.eval_bytes,
        ))
    }
}

pub(crate) fn read_token_bytes(dir: &Path) -> Result<Vec<u16>> {
    let path = dir.join("token_bytes.bin");
    let bytes = fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
    Ok(bytes
        .chunks_exact(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]))
        .collect())
}
