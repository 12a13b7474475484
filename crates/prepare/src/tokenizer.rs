//! Byte-level BPE with the GPT-4 pre-tokenizer split, trained on the train split only.
//! FIXED: the tokenizer defines what a token's byte length is, and so what val_bpb means.
//!
//! Implementation, chosen by measurement: the `tokenizers` crate's BPE trainer and model, with the
//! pre-tokenizer's split done here on the text itself. The crate's own pipeline builds every piece
//! as an offset-tracking string, allocations that were most of the preparation's time; the pieces
//! and the ids are the same (tested against it), and so is the saved `tokenizer.json`, which still
//! carries the pre-tokenizer for anyone who loads it with the `tokenizers` library. Our ids are
//! the BPE model's ids shifted up by [`NUM_SPECIAL`], so ids 0..4 are the reserved tokens and no
//! text, however crafted, can ever encode to one of them.

use std::collections::{HashMap, HashSet};
use std::path::Path;

use anyhow::{Context, Result, anyhow};
use fancy_regex::Regex;
use rayon::prelude::*;
use tokenizers::models::bpe::{BPE, BpeTrainer, BpeTrainerBuilder};
use tokenizers::pre_tokenizers::PreTokenizerWrapper;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::{Model, SplitDelimiterBehavior, Tokenizer as HfTokenizer};

use crate::contract::NUM_SPECIAL;

/// The GPT-4 (cl100k) pre-tokenizer split, as in the original autoresearch.
pub const SPLIT_PATTERN: &str = r"'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}+|\p{N}{1,2}| ?[^\s\p{L}\p{N}]++[\r\n]*|\s*[\r\n]|\s+(?!\S)|\s+";

pub struct Tokenizer {
    inner: HfTokenizer,
    split: Regex,
    /// The bytes of every id; empty for the reserved special tokens.
    token_bytes: Vec<Vec<u8>>,
}

impl Tokenizer {
    /// Trains a vocabulary of `vocab_size` ids (the 4 reserved ones included) on `docs`.
    pub fn train<S: AsRef<str> + Sync>(docs: &[S], vocab_size: usize) -> Result<Tokenizer> {
        let bpe_vocab = vocab_size
            .checked_sub(NUM_SPECIAL as usize + 256)
            .ok_or_else(|| anyhow!("vocab size {vocab_size} is below the minimum of 260"))?
            + 256;
        let split = split_regex()?;
        let counts = docs
            .par_iter()
            .fold(HashMap::new, |mut counts: HashMap<&str, u64>, doc| {
                for piece in pieces(&split, doc.as_ref()) {
                    *counts.entry(piece).or_default() += 1;
                }
                counts
            })
            .reduce(HashMap::new, |mut all, part| {
                for (piece, n) in part {
                    *all.entry(piece).or_default() += n;
                }
                all
            });
        // The trainer's word counts, keyed by the byte-level form of each piece (its map type is
        // the crate's own, inferred from `do_train`).
        let words = counts
            .into_iter()
            .map(|(piece, n)| (byte_level(piece).into(), n))
            .collect();
        let mut bpe = BPE::default();
        trainer(bpe_vocab)
            .do_train(&words, &mut bpe)
            .map_err(|e| anyhow!("training the tokenizer: {e}"))?;
        let mut inner = HfTokenizer::new(bpe);
        inner.with_pre_tokenizer(Some(pre_tokenizer()?));
        inner.with_decoder(Some(ByteLevel::default()));
        Tokenizer::from_hf(inner, split)
    }

    pub fn load(path: &Path) -> Result<Tokenizer> {
        let inner = HfTokenizer::from_file(path)
            .map_err(|e| anyhow!("reading tokenizer {}: {e}", path.display()))?;
        Tokenizer::from_hf(inner, split_regex()?)
    }

    pub fn save(&self, path: &Path) -> Result<()> {
        self.inner
            .save(path, false)
            .map_err(|e| anyhow!("writing tokenizer {}: {e}", path.display()))
    }

    fn from_hf(inner: HfTokenizer, split: Regex) -> Result<Tokenizer> {
        let char_to_byte: HashMap<char, u8> = BYTE_CHARS
            .iter()
            .zip(0..=255u8)
            .map(|(&c, b)| (c, b))
            .collect();
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
        Ok(Tokenizer {
            inner,
            split,
            token_bytes,
        })
    }

    /// Exact byte length of every id (0 for the reserved tokens); a token that holds part of a
    /// multi-byte character counts only the bytes it holds.
    pub fn token_byte_lengths(&self) -> Vec<u16> {
        self.token_bytes.iter().map(|b| b.len() as u16).collect()
    }

    pub fn encode(&self, text: &str) -> Result<Vec<u16>> {
        let mut ids = Vec::new();
        for piece in pieces(&self.split, text) {
            ids.extend(self.encode_piece(piece)?);
        }
        self.check_covers(&ids, text)?;
        Ok(ids)
    }

    /// Encodes documents in parallel, keeping their order. Each distinct piece is encoded once
    /// (enwik8's 100 MB split into about 25 million pieces, few of them distinct).
    pub fn encode_all<S: AsRef<str> + Sync>(&self, docs: &[S]) -> Result<Vec<Vec<u16>>> {
        let split: Vec<Vec<&str>> = docs
            .par_iter()
            .map(|doc| pieces(&self.split, doc.as_ref()))
            .collect();
        let distinct: HashSet<&str> = split
            .par_iter()
            .fold(HashSet::new, |mut seen, doc| {
                seen.extend(doc);
                seen
            })
            .reduce(HashSet::new, |mut all, part| {
                all.extend(part);
                all
            });
        let ids: HashMap<&str, Vec<u16>> = distinct
            .into_par_iter()
            .map(|piece| Ok((piece, self.encode_piece(piece)?)))
            .collect::<Result<_>>()?;
        split
            .par_iter()
            .zip(docs)
            .map(|(pieces, doc)| {
                let doc_ids: Vec<u16> =
                    pieces.iter().flat_map(|p| ids[p].iter().copied()).collect();
                self.check_covers(&doc_ids, doc.as_ref())?;
                Ok(doc_ids)
            })
            .collect()
    }

    fn encode_piece(&self, piece: &str) -> Result<Vec<u16>> {
        let tokens = self
            .inner
            .get_model()
            .tokenize(&byte_level(piece))
            .map_err(|e| anyhow!("encoding: {e}"))?;
        Ok(tokens.iter().map(|t| (t.id + NUM_SPECIAL) as u16).collect())
    }

    /// A vocabulary without some byte's character would drop that byte silently: never let a
    /// loaded tokenizer lose text.
    fn check_covers(&self, ids: &[u16], text: &str) -> Result<()> {
        let encoded_bytes: usize = ids
            .iter()
            .map(|&id| self.token_bytes[id as usize].len())
            .sum();
        anyhow::ensure!(
            encoded_bytes == text.len(),
            "tokenizer covered {encoded_bytes} of {} bytes",
            text.len()
        );
        Ok(())
    }

    pub fn decode(&self, ids: &[u16]) -> Vec<u8> {
        ids.iter()
            .flat_map(|&id| self.token_bytes[id as usize].iter().copied())
            .collect()
    }
}

fn trainer(bpe_vocab: usize) -> BpeTrainer {
    BpeTrainerBuilder::new()
        .show_progress(false)
        .vocab_size(bpe_vocab)
        .min_frequency(0)
        .initial_alphabet(ByteLevel::alphabet().into_iter().collect())
        .build()
}

fn split_regex() -> Result<Regex> {
    Regex::new(SPLIT_PATTERN).map_err(|e| anyhow!("split pattern: {e}"))
}

/// What the saved tokenizer runs before its model: the split (each match and each gap its own
/// piece), then the byte-level map. [`pieces`] and [`byte_level`] do the same here.
fn pre_tokenizer() -> Result<PreTokenizerWrapper> {
    let split = Split::new(
        SplitPattern::Regex(SPLIT_PATTERN.into()),
        SplitDelimiterBehavior::Isolated,
        false,
    )
    .map_err(|e| anyhow!("split pattern: {e}"))?;
    Ok(PreTokenizerWrapper::Sequence(Sequence::new(vec![
        PreTokenizerWrapper::Split(split),
        PreTokenizerWrapper::ByteLevel(ByteLevel::new(false, false, false)),
    ])))
}

/// The pieces the tokenizer's isolated `Split` makes of `text`: every match and every gap between
/// matches, none empty. Where the regex engine gives up (its backtracking limit), the rest of the
/// text is one piece, as there.
fn pieces<'t>(split: &Regex, text: &'t str) -> Vec<&'t str> {
    let mut pieces = Vec::new();
    let mut end = 0;
    for found in split.find_iter(text) {
        let Ok(found) = found else { break };
        pieces.push(&text[end..found.start()]);
        pieces.push(found.as_str());
        end = found.end();
    }
    pieces.push(&text[end..]);
    pieces.retain(|p| !p.is_empty());
    pieces
}

/// GPT-2's byte-to-character table: printable Latin-1 characters stand for themselves, every
/// other byte for the character 256 + its rank among those bytes.
static BYTE_CHARS: std::sync::LazyLock<[char; 256]> = std::sync::LazyLock::new(|| {
    let printable = |b: u8| matches!(b, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF);
    let mut next = 256u32;
    std::array::from_fn(|b| {
        let b = b as u8;
        if printable(b) {
            char::from(b)
        } else {
            next += 1;
            char::from_u32(next - 1).expect("below the surrogate range")
        }
    })
});

fn byte_level(piece: &str) -> String {
    piece.bytes().map(|b| BYTE_CHARS[b as usize]).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small() -> Tokenizer {
        let text =
            "The quick brown fox jumps over the lazy dog. Ünïcödé 日本語 🦀 crabs!\n".repeat(50);
        Tokenizer::train(&[text], 300).unwrap()
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

    /// Documents with many distinct words in enwik8's mix: markup, digits, apostrophes, runs of
    /// whitespace, line ends of both kinds, and text in other scripts.
    fn corpus() -> Vec<String> {
        let parts = [
            "the",
            " The",
            "'s",
            "'LL",
            " don't",
            "[[link]]",
            "<page>",
            "&amp;",
            "1999",
            " 42",
            "  ",
            "\n",
            "\r\n",
            "\t",
            "\n\n  ",
            "Ünïcödé",
            " 日本語",
            "🦀",
            "...",
            " -- ",
            "x",
            "ab",
            "Zeta",
            " of",
            "{{cite}}",
            "|",
            "==",
            "\u{a0}",
            "é",
        ];
        let mut state = 7u64;
        (0..40)
            .map(|_| {
                (0..400)
                    .map(|_| {
                        state = state
                            .wrapping_mul(6364136223846793005)
                            .wrapping_add(1442695040888963407);
                        parts[(state >> 33) as usize % parts.len()]
                    })
                    .collect()
            })
            .collect()
    }

    /// The `tokenizers` library's own pipeline, which the split here must match piece for piece.
    fn trained_by_the_library(docs: &[String], bpe_vocab: usize) -> HfTokenizer {
        let mut hf = HfTokenizer::new(BPE::default());
        hf.with_pre_tokenizer(Some(pre_tokenizer().unwrap()));
        hf.with_decoder(Some(ByteLevel::default()));
        let mut trainer: tokenizers::models::TrainerWrapper = trainer(bpe_vocab).into();
        hf.train(&mut trainer, docs.iter()).unwrap();
        hf
    }

    #[test]
    fn trains_and_encodes_as_the_library_does() {
        let docs = corpus();
        let ours = Tokenizer::train(&docs, 600).unwrap();
        let theirs = trained_by_the_library(&docs, 600 - NUM_SPECIAL as usize);
        assert_eq!(
            ours.inner.to_string(false).unwrap(),
            theirs.to_string(false).unwrap()
        );
        let mut samples = docs[..3].to_vec();
        samples.extend(
            [
                "",
                "never seen: ŝ ÿ Ω 漢字 👩‍👩‍👧 \u{0} \u{7f}",
                "trailing spaces   ",
                "   \n\n\r\n   x",
                "'S 'll 've 're 'd 'm 't 'x",
            ]
            .map(String::from),
        );
        let all = ours.encode_all(&samples).unwrap();
        for (sample, ids) in samples.iter().zip(&all) {
            let expected: Vec<u16> = theirs
                .encode_fast(sample.as_str(), false)
                .unwrap()
                .get_ids()
                .iter()
                .map(|&id| (id + NUM_SPECIAL) as u16)
                .collect();
            assert_eq!(&ours.encode(sample).unwrap(), &expected, "{sample:?}");
            assert_eq!(ids, &expected, "{sample:?}");
        }
    }

    #[test]
    fn rejects_too_small_vocab() {
        assert!(Tokenizer::train(&["abc"], 100).is_err());
    }
}
