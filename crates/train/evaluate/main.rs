//! The protected evaluator: scores the model a trainer exported, so that the val_bpb the
//! orchestrator records is never a number printed by code the agent edits.
//!
//! Run: `evaluate MODEL.pt val|test [--result-fd N]`, with the data from `AUTORESEARCH_DATA`
//! (else `data/enwik8`) on the device of `AUTORESEARCH_DEVICE` (default CUDA when available).
//! Writes one JSON line to descriptor N (which the caller opened; the orchestrator always passes
//! one, because the scored model can print to stdout), or to stdout without the flag:
//! `{"split": "val", "bpb": 1.23, "scored_bytes": 1000002, "causal": true, "probe_max_diff": 0.0,
//! "probes": 8, "seconds": 11.8}`; `bpb` is null when the model is not causal.
//!
//! The causality probe: after a row is scored, a second instance of the model, loaded apart from
//! the scoring one and used only for probes, sees the same row with every token after a cut
//! replaced, and its logits at and before the cut must equal the scoring instance's. Rows, cuts and replacements come from a secret drawn anew for every
//! call, so no position is safe to peek at; the scoring instance's own outputs are compared, so a
//! model that counts its calls, remembers rows or behaves differently when probed is caught too.
//!
//! FIXED: this file lies outside `crates/train/src`, where the agent may write. The orchestrator
//! builds it once from the run's base commit, keeps that binary aside and checks its hash before
//! every use; it scores through `prepare`'s evaluation API like everything else.

use std::io::{Read, Write};
use std::os::fd::FromRawFd;
use std::time::Instant;

use anyhow::{Context, Result, bail, ensure};
use prepare::rng::SplitMix64;
use prepare::{BpbAccumulator, Dataset, EvalSet, Split};
use tch::{CModule, Device, Kind, Reduction, Tensor};

/// Rows probed per call (with a cut each); a peek missed by one probe is caught by another.
const PROBES: usize = 8;
/// Largest change of a logit at or before a cut that still counts as causal. Run as below
/// (deterministically), a causal model changes nothing at all, in any precision; this only absorbs
/// kernels whose summation order depends on the values. A peek shows as a change of the size of
/// the logits themselves.
const PROBE_TOLERANCE: f64 = 1e-3;

struct Args {
    model: String,
    split: Split,
    result_fd: Option<i32>,
}

fn parse_args() -> Result<Args> {
    const USAGE: &str = "usage: evaluate MODEL.pt val|test [--result-fd N]";
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (model, split, rest) = match args.as_slice() {
        [model, split, rest @ ..] => (model, split, rest),
        _ => bail!(USAGE),
    };
    let result_fd = match rest {
        [] => None,
        [flag, fd] if flag == "--result-fd" => Some(fd.parse().context(USAGE)?),
        _ => bail!(USAGE),
    };
    let split = match split.as_str() {
        "val" => Split::Val,
        "test" => Split::Test,
        other => bail!("unknown split {other:?}: use val or test"),
    };
    Ok(Args {
        model: model.clone(),
        split,
        result_fd,
    })
}

fn main() -> Result<()> {
    let args = parse_args()?;
    // Taken before the model runs: the descriptor is this process's to write, not the model's.
    // SAFETY: the caller opened this descriptor for us; nothing else in this process owns it.
    let channel = args
        .result_fd
        .map(|fd| unsafe { std::fs::File::from_raw_fd(fd) });
    let t_start = Instant::now();
    let device = runtime::device()?;
    // The graph executor's optimising passes (profiling runs, then fused kernels) can change the
    // rounding from one call to the next; the causality probe compares calls, so every call must
    // run the same kernels.
    tch::jit::set_graph_executor_optimize(false);
    let data = Dataset::open(&prepare::default_data_dir())?;
    let eval = data.eval_set(args.split)?;
    let vocab = data.contract().vocab_size as i64;
    let scorer = Scorer {
        path: &args.model,
        device,
        eval: &eval,
        vocab,
    };
    let verdict = tch::no_grad(|| scorer.score(&mut SplitMix64(secret_seed()?)))?;
    let causal = verdict.probe_max_diff <= PROBE_TOLERANCE;
    let result = serde_json::json!({
        "split": args.split.name(),
        "bpb": verdict.bpb.filter(|b| causal && b.is_finite()),
        "scored_bytes": eval.scored_bytes(),
        "causal": causal,
        "probe_max_diff": verdict.probe_max_diff,
        "probes": verdict.probes,
        "seconds": t_start.elapsed().as_secs_f64(),
    });
    match channel {
        Some(mut file) => writeln!(file, "{result}").context("writing the result descriptor")?,
        None => println!("{result}"),
    }
    Ok(())
}

/// A seed nobody outside this call knows, so the probed rows and cuts cannot be foreseen.
fn secret_seed() -> Result<u64> {
    let mut bytes = [0u8; 8];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .context("reading /dev/urandom for the probe's seed")?;
    Ok(u64::from_le_bytes(bytes))
}

struct Scorer<'a> {
    path: &'a str,
    device: Device,
    eval: &'a EvalSet,
    vocab: i64,
}

struct Verdict {
    /// None when the scoring stopped at a failed probe.
    bpb: Option<f64>,
    probe_max_diff: f64,
    probes: usize,
}

impl Scorer<'_> {
    fn load(&self) -> Result<CModule> {
        CModule::load_on_device(self.path, self.device).with_context(|| {
            format!(
                "loading the exported model {}; did the trainer export it?",
                self.path
            )
        })
    }

    /// Logits (1, T, vocab) of one row of token ids, checked against the export contract.
    fn forward(&self, model: &CModule, ids: &[i64]) -> Result<Tensor> {
        let seq_len = self.eval.seq_len() as i64;
        let x = Tensor::from_slice(ids).view([1, seq_len]).to(self.device);
        let logits = model.forward_ts(&[x])?.to_kind(Kind::Float);
        ensure!(
            logits.size() == [1, seq_len, self.vocab],
            "the exported model returned logits of shape {:?}, not [1, {seq_len}, {}]",
            logits.size(),
            self.vocab
        );
        Ok(logits)
    }

    /// Scores every row with one instance of the model, probing the rows `rng` picks.
    fn score(&self, rng: &mut SplitMix64) -> Result<Verdict> {
        let (rows, seq_len) = (self.eval.rows(), self.eval.seq_len());
        let mut probes: Vec<(usize, usize)> = (0..PROBES)
            .map(|_| (rng.below(rows), rng.below(seq_len - 1))) // (row, cut): tokens after cut change
            .collect();
        probes.sort_unstable();
        let model = self.load()?;
        // Loaded once: it never sees the scored rows, so nothing it remembers can mimic them.
        let prober = self.load()?;
        let mut acc = BpbAccumulator::default();
        let mut probe_max_diff = 0f64;
        for row in 0..rows {
            let batch = self.eval.batch(row..row + 1);
            let logits = self.forward(&model, &batch.inputs)?;
            let targets = Tensor::from_slice(&batch.targets).to(self.device);
            let losses = logits.view([-1, self.vocab]).cross_entropy_loss(
                &targets,
                None::<Tensor>,
                Reduction::None,
                -100,
                0.0,
            );
            acc.add(
                &Vec::<f32>::try_from(losses.to(Device::Cpu))?,
                &batch.target_bytes,
            );
            for &(_, cut) in probes.iter().filter(|(r, _)| *r == row) {
                let diff = self.probe(&prober, &batch.inputs, &logits, cut, rng)?;
                probe_max_diff = probe_max_diff.max(diff);
            }
            if probe_max_diff > PROBE_TOLERANCE {
                return Ok(Verdict {
                    bpb: None,
                    probe_max_diff,
                    probes: PROBES,
                });
            }
        }
        Ok(Verdict {
            bpb: Some(acc.bpb()),
            probe_max_diff,
            probes: PROBES,
        })
    }

    /// The largest change of a logit at or before `cut` when the `prober` instance sees `row` with
    /// every later token replaced (by the tokens of another row, the next one always different),
    /// against the scoring instance's `logits` of the row itself.
    fn probe(
        &self,
        prober: &CModule,
        row: &[i64],
        logits: &Tensor,
        cut: usize,
        rng: &mut SplitMix64,
    ) -> Result<f64> {
        let other_row = rng.below(self.eval.rows());
        let other = self.eval.batch(other_row..other_row + 1).inputs;
        let shift = rng.below(row.len());
        let mut changed = row.to_vec();
        for i in cut + 1..row.len() {
            changed[i] = other[(i + shift) % row.len()];
        }
        if changed[cut + 1] == row[cut + 1] {
            changed[cut + 1] =
                (row[cut + 1] + 1 + rng.below(self.vocab as usize - 1) as i64) % self.vocab;
        }
        let seen = cut as i64 + 1;
        let diff = (self.forward(prober, &changed)?.narrow(1, 0, seen) - logits.narrow(1, 0, seen))
            .abs()
            .max()
            .double_value(&[]);
        // NaN logits cannot be shown causal.
        Ok(if diff.is_nan() { f64::INFINITY } else { diff })
    }
}
