//! The protected evaluator: scores the model a trainer exported, so that the val_bpb the
//! orchestrator records is never a number printed by code the agent edits.
//!
//! Run: `evaluate MODEL.pt val|test`, with the data from `AUTORESEARCH_DATA` (else
//! `data/enwik8`) on the device of `AUTORESEARCH_DEVICE` (default CUDA when available). Prints
//! one JSON line on stdout:
//! `{"split": "val", "bpb": 1.23, "scored_bytes": 1000002, "causal": true, "probe_max_diff": 0.0,
//! "seconds": 11.8}`; `bpb` is null when the model is not causal.
//!
//! FIXED: this file lies outside `crates/train/src`, where the agent may write. The orchestrator
//! builds it once from the run's base commit, keeps that binary aside and checks its hash before
//! every use; it scores through `prepare`'s evaluation API like everything else.

use std::time::Instant;

use anyhow::{Context, Result, bail, ensure};
use prepare::{BpbAccumulator, Dataset, Split};
use tch::{CModule, Device, Kind, Reduction, Tensor};

/// Where the causality probe cuts the first evaluation row: every token after the cut changes,
/// and no logit at or before it may. The last cut changes nothing: the same row again, which
/// catches a forward pass that is not deterministic (and so cannot be shown causal).
const PROBE_CUTS: [f64; 5] = [0.125, 0.25, 0.5, 0.75, 1.0];
/// Largest change of a logit at or before a cut that still counts as causal. Run as below
/// (deterministically), a causal model changes nothing at all, in any precision; this only absorbs
/// kernels whose summation order depends on the values. A peek shows as a change of the size of
/// the logits themselves.
const PROBE_TOLERANCE: f64 = 1e-3;

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [model_path, split] = args.as_slice() else {
        bail!("usage: evaluate MODEL.pt val|test");
    };
    let split = match split.as_str() {
        "val" => Split::Val,
        "test" => Split::Test,
        other => bail!("unknown split {other:?}: use val or test"),
    };
    let t_start = Instant::now();
    let device = runtime::device()?;
    // The graph executor's optimising passes (profiling runs, then fused kernels) can change the
    // rounding from one call to the next; the causality probe compares calls, so every call must
    // run the same kernels.
    tch::jit::set_graph_executor_optimize(false);
    let data = Dataset::open(&prepare::default_data_dir())?;
    let model = CModule::load_on_device(model_path, device).with_context(|| {
        format!("loading the exported model {model_path}; did the trainer export it?")
    })?;
    let eval = data.eval_set(split)?;
    let (seq_len, vocab) = (eval.seq_len() as i64, data.contract().vocab_size as i64);

    // Logits of one row of token ids, checked against the export contract.
    let forward = |ids: &[i64]| -> Result<Tensor> {
        let x = Tensor::from_slice(ids).view([1, seq_len]).to(device);
        let logits = model.forward_ts(&[x])?.to_kind(Kind::Float);
        ensure!(
            logits.size() == [1, seq_len, vocab],
            "the exported model returned logits of shape {:?}, not [1, {seq_len}, {vocab}]",
            logits.size()
        );
        Ok(logits)
    };

    tch::no_grad(|| -> Result<()> {
        let probe_max_diff = causality_probe(&forward, &eval.batch(0..1).inputs, vocab)?;
        let causal = probe_max_diff <= PROBE_TOLERANCE;
        let bpb = if causal {
            let mut acc = BpbAccumulator::default();
            for row in 0..eval.rows() {
                let batch = eval.batch(row..row + 1);
                let targets = Tensor::from_slice(&batch.targets).to(device);
                let losses = forward(&batch.inputs)?
                    .view([-1, vocab])
                    .cross_entropy_loss(&targets, None::<Tensor>, Reduction::None, -100, 0.0);
                acc.add(
                    &Vec::<f32>::try_from(losses.to(Device::Cpu))?,
                    &batch.target_bytes,
                );
            }
            Some(acc.bpb()).filter(|b| b.is_finite())
        } else {
            None
        };
        let result = serde_json::json!({
            "split": split.name(),
            "bpb": bpb,
            "scored_bytes": eval.scored_bytes(),
            "causal": causal,
            "probe_max_diff": probe_max_diff,
            "seconds": t_start.elapsed().as_secs_f64(),
        });
        println!("{result}");
        Ok(())
    })
}

/// The largest change of any logit at or before a cut when every token after it changes.
fn causality_probe(
    forward: &dyn Fn(&[i64]) -> Result<Tensor>,
    row: &[i64],
    vocab: i64,
) -> Result<f64> {
    let reference = forward(row)?;
    let mut max_diff = 0f64;
    for cut in PROBE_CUTS {
        let cut = ((cut * row.len() as f64) as usize).min(row.len() - 1);
        let changed: Vec<i64> = row
            .iter()
            .enumerate()
            .map(|(i, &t)| if i > cut { (t + 1) % vocab } else { t })
            .collect();
        let logits = forward(&changed)?;
        let seen = cut as i64 + 1;
        let diff = (logits.narrow(1, 0, seen) - reference.narrow(1, 0, seen))
            .abs()
            .max()
            .double_value(&[]);
        // NaN logits cannot be shown causal.
        max_diff = if diff.is_nan() {
            f64::INFINITY
        } else {
            max_diff.max(diff)
        };
    }
    Ok(max_diff)
}
