//! The training loader: BOS-aligned best-fit packing without padding, as the original.
//! FIXED: it decides which tokens the model trains on, and must not be able to touch validation.

use std::sync::Arc;

use crate::rng::SplitMix64;
use crate::split::SplitData;

/// Documents kept at hand to choose the best fit from.
const BUFFER_DOCS: usize = 1000;

/// A run of tokens waiting in the buffer: a whole document, or what was left of a cropped one
/// (which gets a BOS put in front so that every piece, and so every row, starts with BOS).
#[derive(Clone, Copy)]
struct Piece {
    start: usize,
    len: usize,
    bos: bool,
}

impl Piece {
    fn size(&self) -> usize {
        self.len + self.bos as usize
    }
}

pub struct TrainLoader {
    data: Arc<SplitData>,
    bos: u16,
    batch_size: usize,
    row_len: usize,
    rng: SplitMix64,
    order: Vec<usize>,
    next_doc: usize,
    buffer: Vec<Piece>,
    /// Completed passes over the documents.
    pub epoch: u64,
}

impl TrainLoader {
    pub(crate) fn new(
        data: Arc<SplitData>,
        bos: u16,
        batch_size: usize,
        seq_len: usize,
        seed: u64,
    ) -> TrainLoader {
        let order = (0..data.num_docs()).collect();
        let mut loader = TrainLoader {
            data,
            bos,
            batch_size,
            row_len: seq_len + 1,
            rng: SplitMix64(seed),
            order,
            next_doc: 0,
            buffer: Vec::with_capacity(BUFFER_DOCS + 1),
            epoch: 0,
        };
        loader.rng.shuffle(&mut loader.order);
        loader
    }

    /// The next `batch_size` rows of `seq_len + 1` tokens, row-major: inputs are `row[..T]`,
    /// targets `row[1..]`. Each row is full, starts with BOS, and holds whole documents except
    /// for at most one cropped at its end.
    pub fn next_batch(&mut self) -> Vec<i64> {
        let mut out = Vec::with_capacity(self.batch_size * self.row_len);
        for _ in 0..self.batch_size {
            let row_end = out.len() + self.row_len;
            while out.len() < row_end {
                self.refill();
                let room = row_end - out.len();
                let best = (0..self.buffer.len())
                    .filter(|&i| self.buffer[i].size() <= room)
                    .max_by_key(|&i| self.buffer[i].size());
                let piece = match best {
                    Some(i) => self.buffer.swap_remove(i),
                    None => {
                        let shortest = (0..self.buffer.len())
                            .min_by_key(|&i| self.buffer[i].size())
                            .expect("the buffer is never empty after a refill");
                        let piece = self.buffer.swap_remove(shortest);
                        let used = room - piece.bos as usize;
                        self.buffer.push(Piece {
                            start: piece.start + used,
                            len: piece.len - used,
                            bos: true,
                        });
                        Piece { len: used, ..piece }
                    }
                };
                if piece.bos {
                    out.push(self.bos as i64);
                }
                out.extend(
                    self.data
                        .tokens(piece.start, piece.start + piece.len)
                        .map(i64::from),
                );
            }
        }
        out
    }

    fn refill(&mut self) {
        while self.buffer.len() < BUFFER_DOCS {
            if self.next_doc == self.order.len() {
                if !self.buffer.is_empty() {
                    // A corpus with fewer documents than the buffer: do not start a new epoch
                    // while documents of the last one still wait.
                    return;
                }
                self.rng.shuffle(&mut self.order);
                self.next_doc = 0;
                self.epoch += 1;
            }
            let (start, end) = self.data.doc_range(self.order[self.next_doc]);
            self.next_doc += 1;
            self.buffer.push(Piece {
                start,
                len: end - start,
                bos: false,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::split::{Split, write_split};

    const BOS: u16 = 0;

    /// Documents of assorted lengths (some longer than a row), each starting with BOS and
    /// otherwise holding its own number, so that every token tells where it came from.
    fn loader(seq_len: usize, batch: usize, seed: u64) -> (TrainLoader, Vec<Vec<u16>>) {
        let docs: Vec<Vec<u16>> = (1..=300u16)
            .map(|d| {
                let len = 1 + (d as usize * 37) % 90;
                std::iter::once(BOS)
                    .chain(std::iter::repeat_n(d, len))
                    .collect()
            })
            .collect();
        let dir = tempfile::tempdir().unwrap();
        write_split(dir.path(), Split::Train, &docs).unwrap();
        let data = Arc::new(SplitData::open(dir.path(), Split::Train).unwrap());
        (TrainLoader::new(data, BOS, batch, seq_len, seed), docs)
    }

    #[test]
    fn rows_are_full_and_made_of_bos_led_pieces_of_one_document() {
        let seq_len = 64;
        let (mut loader, docs) = loader(seq_len, 8, 1);
        for _ in 0..50 {
            let batch = loader.next_batch();
            assert_eq!(batch.len(), 8 * (seq_len + 1));
            for row in batch.chunks(seq_len + 1) {
                assert_eq!(row[0], BOS as i64, "row starts with BOS");
                // Every piece is a BOS and then tokens of one document, never more than it has.
                let pieces: Vec<&[i64]> = row[1..].split(|&t| t == BOS as i64).collect();
                for piece in &pieces {
                    assert!(
                        piece.iter().all(|&t| t == piece[0]),
                        "one document per piece"
                    );
                }
                // A piece never holds more than its document; that no tokens are dropped is
                // checked over a whole epoch below.
                for piece in &pieces {
                    if let Some(&d) = piece.first() {
                        assert!(piece.len() < docs[d as usize - 1].len());
                    }
                }
            }
        }
    }

    #[test]
    fn every_token_is_used_before_an_epoch_repeats() {
        let (mut loader, docs) = loader(64, 4, 3);
        let total: usize = docs.iter().map(Vec::len).sum();
        let mut seen = vec![0usize; docs.len() + 1];
        while loader.epoch == 0 {
            for t in loader.next_batch() {
                seen[t as usize] += 1;
            }
        }
        // Cropping adds BOS tokens but never drops a document's own tokens.
        for (d, doc) in docs.iter().enumerate() {
            assert!(seen[d + 1] >= doc.len() - 1, "doc {} lost tokens", d + 1);
        }
        assert!(seen.iter().sum::<usize>() >= total);
    }

    #[test]
    fn deterministic_in_the_seed() {
        let (mut a, _) = loader(32, 4, 9);
        let (mut b, _) = loader(32, 4, 9);
        let (mut c, _) = loader(32, 4, 10);
        let (x, y, z) = (a.next_batch(), b.next_batch(), c.next_batch());
        assert_eq!(x, y);
        assert_ne!(x, z);
    }
}
