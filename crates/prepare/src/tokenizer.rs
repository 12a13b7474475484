//! Byte-level BPE with the GPT-4 pre-tokenizer split, trained on the train split only.
//! FIXED: the tokenizer defines what a token's byte length is, and so what val_bpb means.
//!
//! Implementation, chosen by measurement: the `tokenizers` crate (pure Rust with `fancy-regex`)
//! both trains and encodes. Our ids are the BPE model's ids shifted up by [`NUM_SPECIAL`], so ids
//! 0..4 are the reserved tokens and no text, however crafted, can ever encode to one of them.

use std::path::Path;

use anyhow::{Context, Result, anyhow};
use rayon::prelude::*;
use tokenizers::models::TrainerWrapper;
use tokenizers::models::bpe::{BPE, BpeTrainerBuilder};
use tokenizers::pre_tokenizers::PreTokenizerWrapper;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::{SplitDelimiterBehavior, Tokenizer as HfTokenizer};

use crate::contract::NUM_SPECIAL;

/// The GPT-4 (cl100k) pre-tokenizer split, as in the original autoresearch.
pub const SPLIT_PATTERN: &str = r"'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}+|\p{N}{1,2}| ?[^\s\p{L}\p{N}]++[\r\n]*|\s*[\r\n]|\s+(?!\S)|\s+";

pub struct Tokenizer {
    inner: HfTokenizer,
    /// The bytes of every id; empty for the reserved special tokens.
    token_bytes: Vec<Vec<u8>>,
}

impl Tokenizer {
    /// Trains a vocabulary of `vocab_size` ids (the 4 reserved ones included) on `docs`.
    pub fn train<I, S>(docs: I, vocab_size: usize) -> Result<Tokenizer>
    where
        I: Iterator<Item = S> + Send,
        S: AsRef<str> + Send,
    {
        let bpe_vocab = vocab_size
            .checked_sub(NUM_SPECIAL as usize + 256)
            .ok_or_else(|| anyhow!("vocab size {vocab_size} is below the minimum of 260"))?
            + 256;
        let mut inner = HfTokenizer::new(BPE::default());
        let split = Split::new(
            SplitPattern::Regex(SPLIT_PATTERN.into()),
            SplitDelimiterBehavior::Isolated,
            false,
        )
        .map_err(|e| anyhow!("split pattern: {e}"))?;
        let pre = Sequence::new(vec![
            PreTokenizerWrapper::Split(split),
            PreTokenizerWrapper::ByteLevel(ByteLevel::new(false, false, false)),
        ]);
        inner.with_pre_tokenizer(Some(PreTokenizerWrapper::Sequence(pre)));
        inner.with_decoder(Some(ByteLevel::default()));
        let mut trainer: TrainerWrapper = BpeTrainerBuilder::new()
            .show_progress(false)
            .vocab_size(bpe_vocab)
            .min_frequency(0)
            .initial_alphabet(ByteLevel::alphabet().into_iter().collect())
            .build()
            .into();
        inner
            .train(&mut trainer, docs)
            .map_err(|e| anyhow!("training the tokenizer: {e}"))?;
        Tokenizer::from_hf(inner)
    }

    pub fn load(path: &Path) -> Result<Tokenizer> {
        let inner = HfTokenizer::from_file(path)
            .map_err(|e| anyhow!("reading tokenizer {}: {e}", path.display()))?;
        Tokenizer::from_hf(inner)
    }

    pub fn save(&self, path: &Path) -> Result<()> {
        self.inner
            .save(path, false)
            .map_err(|e| anyhow!("writing tokenizer {}: {e}", path.display()))
    }

    fn from_hf(inner: HfTokenizer) -> Result<Tokenizer> {
        let char_to_byte = byte_level_decoding();
        let n = inner.get_vocab_size(false);
        let mut token_bytes = vec![Vec::new(); NUM_SPECIAL as usize];
        for id in 0..n as u32 {
            let token = inner
                .id_to_token(id)
                .with_context(|| format!("tokenizer has no token for id {id}"))?;
            let bytes = token
                .chars()
                .map(|c| char_to_byte.get(&c).copied())
                .collect::<Option<Vec<u8>>>()
                .with_context(|| format!("token {token:?} is not byte-level"))?;
            token_bytes.push(bytes);
        }
        anyhow::ensure!(
            token_bytes.len() <= u16::MAX as usize + 1,
            "vocab of {} does not fit u16 token files",
            token_bytes.len()
        );
        Ok(Tokenizer { inner, token_bytes })
    }

    /// Exact byte length of every id (0 for the reserved tokens); a token that holds part of a
    /// multi-byte character counts only the bytes it holds.
    pub fn token_byte_lengths(&self) -> Vec<u16> {
        self.token_bytes.iter().map(|b| b.len() as u16).collect()
    }

    pub fn encode(&self, text: &str) -> Result<Vec<u16>> {
        let encoding = self
            .inner
            .encode_fast(text, false)
            .map_err(|e| anyhow!("encoding: {e}"))?;
        let ids: Vec<u16> = encoding
            .get_ids()
            .iter()
            .map(|&id| (id + NUM_SPECIAL) as u16)
            .collect();
        // The regex engine gives up silently on pathological input; never let that drop text.
        let encoded_bytes: usize = ids
            .iter()
            .map(|&id| self.token_bytes[id as usize].len())
            .sum();
        anyhow::ensure!(
            encoded_bytes == text.len(),
            "tokenizer covered {encoded_bytes} of {} bytes",
            text.len()
        );
        Ok(ids)
    }

    /// Encodes documents in parallel, keeping their order.
    pub fn encode_all<S: AsRef<str> + Sync>(&self, docs: &[S]) -> Result<Vec<Vec<u16>>> {
        docs.par_iter().map(|d| self.encode(d.as_ref())).collect()
    }

    pub fn decode(&self, ids: &[u16]) -> Vec<u8> {
        ids.iter()
            .flat_map(|&id| self.token_bytes[id as usize].iter().copied())
            .collect()
    }
}

/// The inverse of GPT-2's byte-to-character table: printable Latin-1 characters stand for
/// themselves, every other byte for the character 256 + its rank among those bytes.
fn byte_level_decoding() -> std::collections::HashMap<char, u8> {
    let printable = |b: u8| matches!(b, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF);
    let mut next = 256u32;
    (0..=255u8)
        .map(|b| {
            let c = if printable(b) {
                char::from(b)
            } else {
                next += 1;
                char::from_u32(next - 1).expect("below the surrogate range")
            };
            (c, b)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small() -> Tokenizer {
        let text =
            "The quick brown fox jumps over the lazy dog. Ünïcödé 日本語 🦀 crabs!\n".repeat(50);
        Tokenizer::train(std::iter::once(text), 300).unwrap()
    }

    #[test]
    fn round_trips_arbitrary_text() {
        let tok = small();
        let samples = [
            "",
            "plain ascii",
            "  leading and trailing spaces  \n\n\t",
            "never seen: ŝ ÿ Ω 漢字 👩‍👩‍👧 \u{0} \u{7f} \u{10FFFF}",
            "<|reserved_0|> looks special but is text",
            "123456789 '' 's 'LL\r\n",
        ];
        for s in samples {
            let ids = tok.encode(s).unwrap();
            assert_eq!(tok.decode(&ids), s.as_bytes(), "{s:?}");
            assert!(ids.iter().all(|&id| id as u32 >= NUM_SPECIAL), "{s:?}");
        }
        // Every char up to U+2FFF once, in a pseudo-random order.
        let all: String = (0..0x3000u32)
            .map(|i| (i * 7919) % 0x3000)
            .filter_map(char::from_u32)
            .collect();
        assert_eq!(tok.decode(&tok.encode(&all).unwrap()), all.as_bytes());
    }

    #[test]
    fn byte_lengths_are_exact_for_partial_characters() {
        let tok = small();
        let lens = tok.token_byte_lengths();
        assert_eq!(lens.len(), 300);
        assert!(lens[..NUM_SPECIAL as usize].iter().all(|&l| l == 0));
        // A character unseen in training falls apart into single-byte tokens, each counting 1.
        let ids = tok.encode("ŝ").unwrap();
        assert_eq!(ids.len(), 2);
        assert!(ids.iter().all(|&id| lens[id as usize] == 1));
        // Lengths always add up to the text's bytes.
        let text = "日本語 🦀 and more";
        let ids = tok.encode(text).unwrap();
        let total: usize = ids.iter().map(|&id| lens[id as usize] as usize).sum();
        assert_eq!(total, text.len());
    }

    #[test]
    fn rejects_too_small_vocab() {
        assert!(Tokenizer::train(std::iter::once("abc"), 100).is_err());
    }
}
