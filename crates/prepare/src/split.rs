//! One split of the prepared data: its name, its files (`<split>.tokens`, u16 LE ids, every
//! document starting with BOS; `<split>.docs`, u64 LE start offset of every document, then the
//! total), written by prepare and memory-mapped for the loader and the evaluation.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, ensure};
use memmap2::Mmap;

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
#[cfg(any(feature = "pipeline", test))]
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
    crate::atomic::write(&tokens_path(dir, split), &tokens)?;
    crate::atomic::write(&docs_path(dir, split), &starts)
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
