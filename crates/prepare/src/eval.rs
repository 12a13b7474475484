//! The evaluation: which targets are scored and how losses become bits per byte.
//! FIXED: this is the metric. Every byte of the scored text is counted exactly once, each token
//! by its exact byte length, and the result does not depend on how rows are batched.

use std::ops::Range;

/// The scored token stream of one split, cut into rows of `seq_len` targets.
pub struct EvalSet {
    /// BOS-prefixed documents laid end to end: one more token than there are targets.
    stream: Vec<u16>,
    target_bytes: Vec<u16>,
    seq_len: usize,
    scored_bytes: u64,
}

/// Inputs, targets and target byte lengths of some rows, each `n * seq_len` long, row-major.
/// Positions past the end of the stream are padding with byte length 0.
pub struct EvalBatch {
    pub inputs: Vec<i64>,
    pub targets: Vec<i64>,
    pub target_bytes: Vec<u16>,
}

impl EvalSet {
    /// Keeps the shortest prefix of `tokens` whose targets cover at least `eval_bytes` bytes (the
    /// whole stream when it is shorter).
    pub(crate) fn new(
        tokens: impl Iterator<Item = u16>,
        token_bytes: &[u16],
        seq_len: usize,
        eval_bytes: u64,
    ) -> EvalSet {
        let mut tokens = tokens;
        let mut stream: Vec<u16> = tokens.next().into_iter().collect();
        let mut target_bytes = Vec::new();
        let mut scored_bytes = 0u64;
        for t in tokens {
            if scored_bytes >= eval_bytes {
                break;
            }
            let bytes = token_bytes[t as usize];
            stream.push(t);
            target_bytes.push(bytes);
            scored_bytes += bytes as u64;
        }
        EvalSet {
            stream,
            target_bytes,
            seq_len,
            scored_bytes,
        }
    }

    pub fn rows(&self) -> usize {
        self.target_bytes.len().div_ceil(self.seq_len)
    }

    pub fn seq_len(&self) -> usize {
        self.seq_len
    }

    /// Bytes covered by the scored targets; equals the sum of their byte lengths.
    pub fn scored_bytes(&self) -> u64 {
        self.scored_bytes
    }

    pub fn num_targets(&self) -> usize {
        self.target_bytes.len()
    }

    pub fn batch(&self, rows: Range<usize>) -> EvalBatch {
        let n = rows.len() * self.seq_len;
        let first = rows.start * self.seq_len;
        let pad = self.stream[0] as i64;
        let mut batch = EvalBatch {
            inputs: Vec::with_capacity(n),
            targets: Vec::with_capacity(n),
            target_bytes: Vec::with_capacity(n),
        };
        for i in first..first + n {
            if i < self.target_bytes.len() {
                batch.inputs.push(self.stream[i] as i64);
                batch.targets.push(self.stream[i + 1] as i64);
                batch.target_bytes.push(self.target_bytes[i]);
            } else {
                batch.inputs.push(pad);
                batch.targets.push(pad);
                batch.target_bytes.push(0);
            }
        }
        batch
    }
}

/// Sums per-target losses (nats) over targets with a byte length, in order, in f64.
#[derive(Debug, Default, Clone)]
pub struct BpbAccumulator {
    nats: f64,
    bytes: u64,
}

impl BpbAccumulator {
    /// `losses_nats[i]` is the cross-entropy of the target whose byte length is `target_bytes[i]`.
    pub fn add(&mut self, losses_nats: &[f32], target_bytes: &[u16]) {
        assert_eq!(losses_nats.len(), target_bytes.len(), "one loss per target");
        for (&loss, &bytes) in losses_nats.iter().zip(target_bytes) {
            if bytes > 0 {
                self.nats += loss as f64;
                self.bytes += bytes as u64;
            }
        }
    }

    pub fn scored_bytes(&self) -> u64 {
        self.bytes
    }

    /// Validation bits per byte: total nats / (ln 2 * total bytes).
    pub fn bpb(&self) -> f64 {
        self.nats / (std::f64::consts::LN_2 * self.bytes as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Three documents, each starting with BOS (0).
    const STREAM: [u16; 17] = [0, 5, 6, 7, 9, 0, 3, 3, 1, 2, 0, 13, 14, 15, 1, 1, 2];

    /// Token t has byte length t % 4, so BOS has none.
    fn byte_len(t: u16) -> u16 {
        t % 4
    }

    fn set(seq_len: usize, eval_bytes: u64) -> EvalSet {
        let token_bytes: Vec<u16> = (0..16).map(byte_len).collect();
        EvalSet::new(STREAM.into_iter(), &token_bytes, seq_len, eval_bytes)
    }

    #[test]
    fn every_byte_is_scored_once() {
        let set = set(4, u64::MAX);
        let expected: u64 = STREAM[1..].iter().map(|&t| byte_len(t) as u64).sum();
        assert_eq!(set.scored_bytes(), expected);
        assert_eq!(set.rows(), 4);
        let batch = set.batch(0..set.rows());
        assert_eq!(
            batch.target_bytes.iter().map(|&b| b as u64).sum::<u64>(),
            expected
        );
        // Targets are the inputs shifted by one, across row boundaries.
        assert_eq!(&batch.inputs[1..16], &batch.targets[..15]);
    }

    #[test]
    fn prefix_is_cut_at_a_token_boundary() {
        let set = set(4, 10);
        // 5,6,7 -> 1+2+3 = 6 bytes, then 9 -> 7, 0 -> 7, 3 -> 10: stop.
        assert_eq!(set.scored_bytes(), 10);
        assert_eq!(set.num_targets(), 6);
        assert_eq!(set.rows(), 2);
        let batch = set.batch(0..2);
        assert_eq!(&batch.target_bytes[6..], &[0, 0]);
    }

    #[test]
    fn bpb_does_not_depend_on_batch_size() {
        let set = set(3, u64::MAX);
        // A known per-token loss: a function of the target.
        let loss = |t: i64| 0.1 + (t as f32).sqrt() / 3.0;
        let score = |rows_per_batch: usize| {
            let mut acc = BpbAccumulator::default();
            for start in (0..set.rows()).step_by(rows_per_batch) {
                let b = set.batch(start..(start + rows_per_batch).min(set.rows()));
                let losses: Vec<f32> = b.targets.iter().map(|&t| loss(t)).collect();
                acc.add(&losses, &b.target_bytes);
            }
            acc
        };
        let one = score(1);
        assert_eq!(one.scored_bytes(), set.scored_bytes());
        for n in 2..=set.rows() {
            assert_eq!(score(n).bpb(), one.bpb());
        }
        let nats: f64 = STREAM[1..]
            .iter()
            .filter(|&&t| byte_len(t) > 0)
            .map(|&t| loss(t as i64) as f64)
            .sum();
        let expected = nats / (std::f64::consts::LN_2 * set.scored_bytes() as f64);
        assert!((one.bpb() - expected).abs() < 1e-12);
    }
}
