//! The protected evaluator: scores the model a trainer exported, so that the val_bpb the
//! orchestrator records is never a number printed by code the agent edits.
//!
//! Run: `evaluate MODEL.pt val|test [--result-fd N]`, with the data from `AUTORESEARCH_DATA`
//! (else `data/enwik8`) on the device of `AUTORESEARCH_DEVICE` (default CUDA when available).
//! Writes one JSON line to descriptor N (which the caller opened; the orchestrator always passes
//! one), or to stdout without the flag:
//! `{"split": "val", "bpb": 1.23, "scored_bytes": 1000002, "causal": true, "probe_max_diff": 0.0,
//! "probes": 342, "refused": null, "confinement": "landlock abi 7 + seccomp", "seconds": 11.8}`;
//! `bpb` is null when the model is not causal or is refused.
//!
//! The model can reach nothing but its input: the evaluator reads the contract, the token byte
//! lengths, the scored split and the model's bytes first, then locks itself down (`confine`: no
//! file but the libraries, no program, no socket, no other process; the model's stdout and
//! stderr go to /dev/null) and only then deserialises the model, whose graphs must be made of
//! pure tensor operations alone (`ops`): a model that reads files, prints, draws random numbers
//! or calls custom code is refused, with the operation named in `refused`.
//!
//! The causality probe: after a row is scored, a second instance of the model, loaded apart from
//! the scoring one and used only for probes, sees the same row with every token after a cut
//! replaced, and its logits at and before the cut must equal the scoring instance's. There are
//! [`MIN_PROBES`] probes in all, spread over the rows, each at a cut of its own; which rows get the
//! ones left over, the cuts and the replacements come from a secret drawn anew for every call, so
//! no row and no position is safe to peek at; the scoring instance's own outputs are compared, so
//! a model that behaves differently when probed is caught too.
//!
//! FIXED: this file lies outside `crates/train/src`, where the agent may write. The orchestrator
//! builds it once from the run's base commit, keeps that binary aside and checks its hash before
//! every use; it scores through `prepare`'s evaluation API like everything else.

mod confine;
mod ops;

use std::io::{Read, Write};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, Result, bail, ensure};
use prepare::rng::SplitMix64;
use prepare::{BpbAccumulator, Dataset, EvalSet, Split};
use tch::{CModule, Device, Kind, Reduction, Tensor};

/// Probes per call at least: a probe at cut c catches a peek at position c only, so a model that
/// peeks at 2% of the positions escapes all of them with probability 0.98^342 < 0.001.
const MIN_PROBES: usize = 342;
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

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(args) => args,
        Err(e) => {
            eprintln!("Error: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    // Taken before the model runs: the descriptors are this process's to write, not the model's.
    let mut outputs = match confine::Outputs::take(args.result_fd) {
        Ok(outputs) => outputs,
        Err(e) => {
            eprintln!("Error: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    if let Ok(errors) = outputs.errors.try_clone() {
        // A panic's message goes where the evaluator's errors go, not where the model's output goes.
        std::panic::set_hook(Box::new(move |info| {
            writeln!(&errors, "{info}").ok();
        }));
    }
    match evaluate(&args) {
        Ok(result) => match writeln!(outputs.verdict, "{result}") {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                writeln!(outputs.errors, "Error: writing the verdict: {e}").ok();
                ExitCode::FAILURE
            }
        },
        Err(e) => {
            writeln!(outputs.errors, "Error: {e:#}").ok();
            ExitCode::FAILURE
        }
    }
}

/// The verdict on the model of `args`.
fn evaluate(args: &Args) -> Result<serde_json::Value> {
    let t_start = Instant::now();
    let device = runtime::device()?;
    // The graph executor's optimising passes (profiling runs, then fused kernels) can change the
    // rounding from one call to the next; the causality probe compares calls, so every call must
    // run the same kernels.
    tch::jit::set_graph_executor_optimize(false);
    let data = Dataset::open(&prepare::default_data_dir())?;
    let eval = data.eval_set(args.split)?;
    let vocab = data.contract().vocab_size as i64;
    let model = std::fs::read(&args.model).with_context(|| {
        format!(
            "reading the exported model {}; did the trainer export it?",
            args.model
        )
    })?;
    let mut rng = SplitMix64(secret_seed()?);
    let confinement = confine::lock_down(device.is_cuda())?;
    let verdict = |bpb: Option<f64>, causal: bool, diff: f64, probes: usize, refused| {
        serde_json::json!({
            "split": args.split.name(),
            "bpb": bpb,
            "scored_bytes": eval.scored_bytes(),
            "causal": causal,
            "probe_max_diff": diff,
            "probes": probes,
            "refused": refused,
            "confinement": confinement,
            "seconds": t_start.elapsed().as_secs_f64(),
        })
    };
    let kinds = runtime::graph_node_kinds(&model).context("reading the exported model's graphs")?;
    if let Some(op) = ops::refused(&kinds) {
        return Ok(verdict(None, false, 0.0, 0, Some(op)));
    }
    let scorer = Scorer {
        model: &model,
        device,
        eval: &eval,
        vocab,
    };
    let scored = tch::no_grad(|| scorer.score(&mut rng))?;
    let causal = scored.probe_max_diff <= PROBE_TOLERANCE;
    let bpb = scored.bpb.filter(|b| causal && b.is_finite());
    Ok(verdict(
        bpb,
        causal,
        scored.probe_max_diff,
        scored.probes,
        None,
    ))
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
    /// The exported model's bytes.
    model: &'a [u8],
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
        CModule::load_data_on_device(&mut &self.model[..], self.device)
            .context("loading the exported model")
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

    /// Scores every row with one instance of the model, probing each at cuts `rng` draws.
    fn score(&self, rng: &mut SplitMix64) -> Result<Verdict> {
        let (rows, seq_len) = (self.eval.rows(), self.eval.seq_len());
        // Every row gets its share of MIN_PROBES, and the rest go to rows drawn at random
        // (selection sampling): exactly MIN_PROBES in all, where one per row would double the
        // evaluation's time when there are many rows (570 in the CPU profile).
        let (each, mut left_over) = (MIN_PROBES / rows, MIN_PROBES % rows);
        let model = self.load()?;
        // Loaded once: it never sees the scored rows, so nothing it remembers can mimic them.
        let prober = self.load()?;
        let mut acc = BpbAccumulator::default();
        let mut probe_max_diff = 0f64;
        let mut probes = 0;
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
            let drawn = rng.below(rows - row) < left_over;
            left_over -= usize::from(drawn);
            for _ in 0..each + usize::from(drawn) {
                let cut = rng.below(seq_len - 1); // tokens after the cut change
                let diff = self.probe(&prober, &batch.inputs, &logits, cut, rng)?;
                probe_max_diff = probe_max_diff.max(diff);
                probes += 1;
            }
            if probe_max_diff > PROBE_TOLERANCE {
                return Ok(Verdict {
                    bpb: None,
                    probe_max_diff,
                    probes,
                });
            }
        }
        Ok(Verdict {
            bpb: Some(acc.bpb()),
            probe_max_diff,
            probes,
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
