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
use memmap2::Mmap;

use crate::atomic;
use crate::contract::{CONTRACT_SCHEMA, Contract};
use crate::eval::EvalSet;
use crate::loader::TrainLoader;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Split {
    Train,
    Val,
    Test,
}

impl Split {
    pub const ALL: [Split; 3] = [Split::Train, Split::Val, Split::Test];

    pub fn name(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Val => "val",
            Split::Test => "test",
        }
    }

    /// The names of this split's files in a prepared directory: its tokens, then its document
    /// index.
    pub fn files(self) -> [String; 2] {
        let name = self.name();
        [format!("{name}.tokens"), format!("{name}.docs")]
    }
}

/// The files [`Dataset::open`] reads, whatever is read next.
pub const DATASET_FILES: [&str; 2] = ["contract.json", "token_bytes.bin"];

/// Every file that scoring `split` reads ([`Dataset::open`], then [`Dataset::eval_set`]), and no
/// other: the protected evaluator's jail holds these alone, so a model it scores on the
/// validation split cannot reach the test split, nor the training split.
pub fn scored_files(split: Split) -> Vec<String> {
    let dataset = DATASET_FILES.map(String::from);
    dataset.into_iter().chain(split.files()).collect()
}

pub(crate) fn tokens_path(dir: &Path, split: Split) -> PathBuf {
    let [tokens, _] = split.files();
    dir.join(tokens)
}

pub(crate) fn docs_path(dir: &Path, split: Split) -> PathBuf {
    let [_, docs] = split.files();
    dir.join(docs)
}

/// Writes one split's documents (each already starting with BOS). The docs file is written last,
/// so its presence marks the split as done.
pub(crate) fn write_split(dir: &Path, split: Split, docs: &[Vec<u16>]) -> Result<()> {
    let mut tokens = Vec::with_capacity(docs.iter().map(|d| 2 * d.len()).sum());
    let mut starts = Vec::with_capacity(8 * (docs.len() + 1));
    let mut offset = 0u64;
    for doc in docs {
        starts.extend_from_slice(&offset.to_le_bytes());
        offset += doc.len() as u64;
        tokens.extend(doc.iter().flat_map(|t| t.to_le_bytes()));
    }
    starts.extend_from_slice(&offset.to_le_bytes());
    atomic::write(&tokens_path(dir, split), &tokens)?;
    atomic::write(&docs_path(dir, split), &starts)
}

/// One memory-mapped split.
pub struct SplitData {
    tokens: Mmap,
    /// Start of every document, then the total token count.
    doc_starts: Vec<u64>,
}

impl SplitData {
    pub(crate) fn open(dir: &Path, split: Split) -> Result<SplitData> {
        let path = tokens_path(dir, split);
        let file = fs::File::open(&path).with_context(|| format!("opening {}", path.display()))?;
        // Safety: prepare never rewrites a finished file in place (it renames new ones over it).
        let tokens =
            unsafe { Mmap::map(&file) }.with_context(|| format!("mapping {}", path.display()))?;
        let docs_path = docs_path(dir, split);
        let docs = fs::read(&docs_path).with_context(|| {
            format!(
                "reading the {} document index {}",
                split.name(),
                docs_path.display()
            )
        })?;
        let doc_starts: Vec<u64> = docs
            .chunks_exact(8)
            .map(|c| u64::from_le_bytes(c.try_into().unwrap()))
            .collect();
        ensure!(
            doc_starts.len() >= 2 && doc_starts.last() == Some(&(tokens.len() as u64 / 2)),
            "{} does not match its document index; run prepare again",
            path.display()
        );
        Ok(SplitData { tokens, doc_starts })
    }

    pub fn num_tokens(&self) -> usize {
        self.tokens.len() / 2
    }

    pub fn num_docs(&self) -> usize {
        self.doc_starts.len() - 1
    }

    /// Token range `[start, end)` of document `i`.
    pub fn doc_range(&self, i: usize) -> (usize, usize) {
        (self.doc_starts[i] as usize, self.doc_starts[i + 1] as usize)
    }

    pub fn tokens(&self, start: usize, end: usize) -> impl Iterator<Item = u16> + '_ {
        self.tokens[2 * start..2 * end]
            .chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
    }
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
