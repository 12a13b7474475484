//! The trainer the research agent edits: a small GPT trained for a fixed wall-clock budget.
//!
//! Run: `cargo run --release -p train` (after `cargo run --release -p prepare`).
//!
//! You may change anything in this file (and add files under `crates/train/src`): the model, the
//! optimizer, the hyperparameters, the training loop. The contract you must keep:
//! - The score is val_bpb of the model you export (`export` below), computed by the protected
//!   evaluator through `prepare`'s fixed evaluation; the trainer never sees the validation or
//!   test text, and prints no val_bpb of its own.
//! - The model is causal: position t never sees tokens after t.
//! - Training stops when `runtime::Clock` says the budget is spent: call `clock.step(loss, f)`
//!   once at the end of every step with the step's training loss and the model's loss function
//!   (it waits for the device, counts the step's time, now and then measures `f` on fixed rows,
//!   uncounted, and reports progress; the contract's first `uncounted_steps` absorb start-up).
//!   The orchestrator times every run from outside too: a run that takes longer than the budget
//!   allows is a crash, never scored.
//! - stdout carries exactly one line, the JSON result, which `clock.finish` prints (add fields of
//!   your own in `extra`); everything else goes to stderr.
//! - `runtime::export` saves the trained forward pass where `AUTORESEARCH_EXPORT` says: that file
//!   is what gets scored (`cargo run --release -p train --bin evaluate -- FILE val` by hand).
//! - No new dependencies, no edits outside `crates/train/src`.
//!
//! Environment: `AUTORESEARCH_DATA` (prepared data dir), `AUTORESEARCH_TIME_BUDGET` (seconds,
//! overrides the contract's budget), `AUTORESEARCH_SEED` (default 42), `AUTORESEARCH_DEVICE`
//! (`cpu` or `cuda`; default CUDA when available).
//!
//! `runtime` (outside this directory, fixed) picks the device, runs autocast in bf16 on CUDA,
//! keeps the budget's clock, prints the result line, exports the model and provides
//! `causal_attention`, a flash-attention kernel with a sliding window on CUDA.

use anyhow::{Context, Result};
use prepare::{Dataset, RunStatus};
use runtime::{autocast, causal_attention};
use tch::nn;
use tch::{Device, Kind, Reduction, Tensor};

// ---------------------------------------------------------------------------------------------
// Hyperparameters

// Model size and batch on a CUDA GPU: the reference H100 configuration (~50M parameters).
const GPU_DEPTH: i64 = 8; // transformer blocks; model width = depth * ASPECT_RATIO
const GPU_DEVICE_BATCH: i64 = 64; // rows per pass; 128 took 107-116 GB in eager mode, over an H100
const GPU_TOTAL_BATCH: i64 = 1 << 19; // tokens per optimizer step, by gradient accumulation

// Model size and batch on a CPU: ~3.5M parameters (most of them the vocab-sized embeddings and
// unembedding), which takes about two seconds a step on 2 cores, so ~160 steps in 5 minutes.
const CPU_DEPTH: i64 = 2; // transformer blocks
const CPU_DEVICE_BATCH: i64 = 16; // rows per forward/backward pass
const CPU_TOTAL_BATCH: i64 = 16 * 512; // tokens per optimizer step
const CPU_LR_SCALE: f64 = 0.25; // all learning rates on CPU, where batches are 64x smaller

const ASPECT_RATIO: i64 = 64; // model width per block of depth
const HEAD_DIM: i64 = 128; // width of one attention head
const WINDOW_PATTERN: &str = "SSSL"; // per block, cycled: S = half-context window, L = full
const VE_GATE_CHANNELS: i64 = 32; // input channels that drive the value-embedding gate
const ROPE_BASE: f64 = 10000.0; // rotary embedding base
const SOFTCAP: f64 = 15.0; // logits are squashed to (-SOFTCAP, SOFTCAP)

const EMBEDDING_LR: f64 = 0.6; // Adam lr of wte and the value embeddings
const UNEMBEDDING_LR: f64 = 0.004; // Adam lr of lm_head
const MATRIX_LR: f64 = 0.04; // Muon lr of the block matrices
const SCALAR_LR: f64 = 0.5; // Adam lr of x0_lambdas (resid_lambdas get 1% of it)
const ADAM_BETAS: (f64, f64) = (0.8, 0.95); // Adam betas of the embeddings and lm_head
const WEIGHT_DECAY: f64 = 0.2; // Muon's cautious weight decay, decayed linearly to 0
const MUON_BETA2: f64 = 0.95; // NorMuon second-moment decay
const WARMDOWN_RATIO: f64 = 0.5; // share of the budget at the end over which lr decays to 0

// ---------------------------------------------------------------------------------------------
// Model

#[derive(Debug, Clone, Copy)]
struct GptConfig {
    vocab_size: i64,
    seq_len: i64,
    n_layer: i64,
    n_head: i64,
    head_dim: i64,
}

impl GptConfig {
    fn n_embd(&self) -> i64 {
        self.n_head * self.head_dim
    }

    /// Attention window of each block: short (half the context) or long, the last always long.
    fn window(&self, layer: i64) -> i64 {
        let pattern = WINDOW_PATTERN.as_bytes();
        let short = pattern[layer as usize % pattern.len()] == b'S';
        if short && layer < self.n_layer - 1 {
            self.seq_len / 2
        } else {
            self.seq_len
        }
    }

    /// Value embeddings on alternate blocks, always including the last.
    fn has_value_embedding(&self, layer: i64) -> bool {
        layer % 2 == (self.n_layer - 1) % 2
    }
}

/// RMSNorm without weights.
fn norm(x: &Tensor) -> Tensor {
    x.rms_norm([*x.size().last().unwrap()], None::<Tensor>, None)
}

fn linear(p: nn::Path, in_dim: i64, out_dim: i64, init: nn::Init) -> nn::Linear {
    nn::linear(
        p,
        in_dim,
        out_dim,
        nn::LinearConfig {
            ws_init: init,
            bs_init: None,
            bias: false,
        },
    )
}

/// Uniform init with the standard deviation of N(0, 1/n_embd).
fn uniform(n_embd: i64) -> nn::Init {
    let s = 3f64.sqrt() / (n_embd as f64).sqrt();
    nn::Init::Uniform { lo: -s, up: s }
}

/// Rotary position embedding tables, (1, T, 1, hs/2).
struct Rotary {
    cos: Tensor,
    sin: Tensor,
}

impl Rotary {
    fn new(seq_len: i64, head_dim: i64, device: Device) -> Rotary {
        let channels = Tensor::arange_start_step(0, head_dim, 2, (Kind::Float, device));
        let inv_freq = (channels / head_dim as f64 * -ROPE_BASE.ln()).exp();
        let t = Tensor::arange(seq_len, (Kind::Float, device));
        let freqs = t.outer(&inv_freq).view([1, seq_len, 1, head_dim / 2]);
        Rotary {
            cos: freqs.cos(),
            sin: freqs.sin(),
        }
    }

    fn apply(&self, x: &Tensor) -> Tensor {
        let (t, half) = (x.size()[1], x.size()[3] / 2);
        let (cos, sin) = (self.cos.narrow(1, 0, t), self.sin.narrow(1, 0, t));
        let (x1, x2) = (x.narrow(3, 0, half), x.narrow(3, half, half));
        Tensor::cat(&[&x1 * &cos + &x2 * &sin, &x2 * &cos - &x1 * &sin], 3)
    }
}

struct CausalSelfAttention {
    c_q: nn::Linear,
    c_k: nn::Linear,
    c_v: nn::Linear,
    c_proj: nn::Linear,
    ve_gate: Option<nn::Linear>,
    n_head: i64,
    head_dim: i64,
    window: i64, // each query sees this many latest positions, itself included
}

impl CausalSelfAttention {
    fn new(p: nn::Path, cfg: &GptConfig, layer: i64) -> CausalSelfAttention {
        let c = cfg.n_embd();
        let ve_gate = cfg.has_value_embedding(layer).then(|| {
            linear(
                &p / "ve_gate",
                VE_GATE_CHANNELS,
                cfg.n_head,
                nn::Init::Const(0.),
            )
        });
        CausalSelfAttention {
            c_q: linear(&p / "c_q", c, c, uniform(c)),
            c_k: linear(&p / "c_k", c, c, uniform(c)),
            c_v: linear(&p / "c_v", c, c, uniform(c)),
            c_proj: linear(&p / "c_proj", c, c, nn::Init::Const(0.)),
            ve_gate,
            n_head: cfg.n_head,
            head_dim: cfg.head_dim,
            window: cfg.window(layer),
        }
    }

    fn forward(&self, x: &Tensor, ve: Option<&Tensor>, rotary: &Rotary) -> Tensor {
        let (b, t, c) = x.size3().unwrap();
        let shape = [b, t, self.n_head, self.head_dim];
        let q = x.apply(&self.c_q).view(shape); // (B, T, nh, hs)
        let dtype = q.kind(); // bf16 under CUDA autocast: the flash kernel takes q, k, v in it
        let k = x.apply(&self.c_k).view(shape);
        let v = x.apply(&self.c_v).view(shape);
        let v = match (ve, &self.ve_gate) {
            (Some(ve), Some(gate)) => {
                let g = x.narrow(2, 0, VE_GATE_CHANNELS).apply(gate).sigmoid() * 2.0; // (B, T, nh)
                v + g.unsqueeze(-1) * ve.view(shape)
            }
            _ => v,
        };
        let q = norm(&rotary.apply(&q)).to_kind(dtype);
        let k = norm(&rotary.apply(&k)).to_kind(dtype);
        let y = causal_attention(&q, &k, &v.to_kind(dtype), self.window); // (B, T, nh, hs)
        y.contiguous().view([b, t, c]).apply(&self.c_proj) // (B, T, C)
    }
}

struct Mlp {
    c_fc: nn::Linear,
    c_proj: nn::Linear,
}

impl Mlp {
    fn new(p: nn::Path, n_embd: i64) -> Mlp {
        Mlp {
            c_fc: linear(&p / "c_fc", n_embd, 4 * n_embd, uniform(n_embd)),
            c_proj: linear(&p / "c_proj", 4 * n_embd, n_embd, nn::Init::Const(0.)),
        }
    }

    fn forward(&self, x: &Tensor) -> Tensor {
        x.apply(&self.c_fc).relu().square().apply(&self.c_proj) // ReLU^2
    }
}

struct Block {
    attn: CausalSelfAttention,
    mlp: Mlp,
}

impl Block {
    fn new(p: nn::Path, cfg: &GptConfig, layer: i64) -> Block {
        Block {
            attn: CausalSelfAttention::new(&p / "attn", cfg, layer),
            mlp: Mlp::new(&p / "mlp", cfg.n_embd()),
        }
    }

    fn forward(&self, x: &Tensor, ve: Option<&Tensor>, rotary: &Rotary) -> Tensor {
        let x = x + self.attn.forward(&norm(x), ve, rotary);
        &x + self.mlp.forward(&norm(&x))
    }
}

struct Gpt {
    cfg: GptConfig,
    wte: nn::Embedding,
    value_embeds: Vec<Option<nn::Embedding>>,
    blocks: Vec<Block>,
    lm_head: nn::Linear,
    resid_lambdas: Tensor, // (n_layer,) scales the residual stream before each block
    x0_lambdas: Tensor,    // (n_layer,) mixes the first-layer input back in before each block
    rotary: Rotary,
}

impl Gpt {
    fn new(p: nn::Path, cfg: GptConfig) -> Gpt {
        let c = cfg.n_embd();
        let embedding = |name: &str, init| {
            nn::embedding(
                &p / name,
                cfg.vocab_size,
                c,
                nn::EmbeddingConfig {
                    ws_init: init,
                    ..Default::default()
                },
            )
        };
        Gpt {
            wte: embedding(
                "wte",
                nn::Init::Randn {
                    mean: 0.,
                    stdev: 1.,
                },
            ),
            value_embeds: (0..cfg.n_layer)
                .map(|i| {
                    cfg.has_value_embedding(i)
                        .then(|| embedding(&format!("ve{i}"), uniform(c)))
                })
                .collect(),
            blocks: (0..cfg.n_layer)
                .map(|i| Block::new(&p / "h" / i, &cfg, i))
                .collect(),
            lm_head: linear(
                &p / "lm_head",
                c,
                cfg.vocab_size,
                nn::Init::Randn {
                    mean: 0.,
                    stdev: 0.001,
                },
            ),
            resid_lambdas: p.var("resid_lambdas", &[cfg.n_layer], nn::Init::Const(1.)),
            x0_lambdas: p.var("x0_lambdas", &[cfg.n_layer], nn::Init::Const(0.1)),
            rotary: Rotary::new(cfg.seq_len, cfg.head_dim, p.device()),
            cfg,
        }
    }

    /// Logits (B, T, vocab) in f32 for token ids (B, T).
    fn forward(&self, idx: &Tensor) -> Tensor {
        let x0 = norm(&idx.apply(&self.wte)); // (B, T, C)
        let mut x = x0.shallow_clone();
        for (i, block) in self.blocks.iter().enumerate() {
            x = self.resid_lambdas.get(i as i64) * &x + self.x0_lambdas.get(i as i64) * &x0;
            let ve = self.value_embeds[i].as_ref().map(|e| idx.apply(e));
            x = block.forward(&x, ve.as_ref(), &self.rotary);
        }
        let logits = norm(&x).apply(&self.lm_head).to_kind(Kind::Float);
        (logits / SOFTCAP).tanh() * SOFTCAP
    }

    /// Mean cross-entropy of next-token prediction.
    fn loss(&self, inputs: &Tensor, targets: &Tensor) -> Tensor {
        let logits = self.forward(inputs);
        logits.view([-1, self.cfg.vocab_size]).cross_entropy_loss(
            &targets.reshape([-1]),
            None::<Tensor>,
            Reduction::Mean,
            -100,
            0.0,
        )
    }

    /// Matmul FLOPs per token of one forward and backward pass (6 per weight, plus attention).
    fn flops_per_token(&self, vs: &nn::VarStore) -> f64 {
        let embeddings = self.cfg.vocab_size
            * self.cfg.n_embd()
            * (1 + self.value_embeds.iter().flatten().count() as i64);
        let weights: i64 = vs
            .trainable_variables()
            .iter()
            .map(Tensor::numel)
            .sum::<usize>() as i64
            - embeddings;
        let attention: i64 = (0..self.cfg.n_layer)
            .map(|i| 12 * self.cfg.n_embd() * self.cfg.window(i))
            .sum();
        (6 * weights + attention) as f64
    }
}

// ---------------------------------------------------------------------------------------------
// Optimizer: Muon for the block matrices, Adam for everything else

/// Adam (no weight decay) over one group of parameters with one learning rate.
struct Adam {
    params: Vec<Tensor>,
    lr: f64,
    betas: (f64, f64),
    exp_avg: Vec<Tensor>,
    exp_avg_sq: Vec<Tensor>,
}

impl Adam {
    fn new(params: Vec<Tensor>, lr: f64, betas: (f64, f64)) -> Adam {
        let zeros = |ps: &Vec<Tensor>| ps.iter().map(Tensor::zeros_like).collect();
        Adam {
            exp_avg: zeros(&params),
            exp_avg_sq: zeros(&params),
            params,
            lr,
            betas,
        }
    }

    fn step(&mut self, step: i32, lr_multiplier: f64) {
        let (beta1, beta2) = self.betas;
        let lr = self.lr * lr_multiplier;
        for ((p, m), v) in self
            .params
            .iter()
            .zip(&mut self.exp_avg)
            .zip(&mut self.exp_avg_sq)
        {
            let g = p.grad();
            let _ = m.lerp_(&g, 1.0 - beta1);
            let _ = v.lerp_(&g.square(), 1.0 - beta2);
            let denom = (&*v / (1.0 - beta2.powi(step))).sqrt() + 1e-10;
            let update = &*m / denom * (lr / (1.0 - beta1.powi(step)));
            let _ = p.shallow_clone().g_sub_(&update);
        }
    }
}

/// Coefficients of the 5 "Polar Express" iterations that push singular values to 1.
const POLAR_EXPRESS: [(f64, f64, f64); 5] = [
    (8.156554524902461, -22.48329292557795, 15.878769915207462),
    (4.042929935166739, -2.808917465908714, 0.5000178451051316),
    (3.8916678022926607, -2.772484153217685, 0.5060648178503393),
    (3.285753657755655, -2.3681294933425376, 0.46449024233003106),
    (2.3465413258596377, -1.7097828382687081, 0.42323551169305323),
];

/// The nearest (semi-)orthogonal matrix to `g`, approximately: all singular values near 1.
fn orthogonalize(g: &Tensor, kind: Kind) -> Tensor {
    let mut x = g.to_kind(kind);
    x = &x / (x.norm() * 1.02 + 1e-6);
    let tall = g.size()[0] > g.size()[1];
    for (a, b, c) in POLAR_EXPRESS {
        x = if tall {
            let gram = x.tr().matmul(&x); // (cols, cols)
            let poly = &gram * b + gram.matmul(&gram) * c;
            &x * a + x.matmul(&poly)
        } else {
            let gram = x.matmul(&x.tr()); // (rows, rows)
            let poly = &gram * b + gram.matmul(&gram) * c;
            &x * a + poly.matmul(&x)
        };
    }
    x.to_kind(Kind::Float)
}

/// Muon with Nesterov momentum, Polar Express orthogonalisation, NorMuon variance reduction
/// and cautious weight decay.
struct Muon {
    params: Vec<Tensor>,
    momentum: Vec<Tensor>,
    second_moment: Vec<Tensor>, // per row (tall or square) or per column (wide) of the update
    ortho_kind: Kind,           // bf16 on CUDA, f32 on CPU where bf16 matmuls are slow
}

impl Muon {
    fn new(params: Vec<Tensor>, ortho_kind: Kind) -> Muon {
        let momentum = params.iter().map(Tensor::zeros_like).collect();
        let second_moment = params
            .iter()
            .map(|p| {
                let (rows, cols) = (p.size()[0], p.size()[1]);
                let shape = if rows >= cols { [rows, 1] } else { [1, cols] };
                Tensor::zeros(shape, (Kind::Float, p.device()))
            })
            .collect();
        Muon {
            params,
            momentum,
            second_moment,
            ortho_kind,
        }
    }

    fn step(&mut self, lr: f64, momentum: f64, weight_decay: f64) {
        for ((p, buf), second) in self
            .params
            .iter()
            .zip(&mut self.momentum)
            .zip(&mut self.second_moment)
        {
            let grad = p.grad();
            let _ = buf.lerp_(&grad, 1.0 - momentum);
            let g = orthogonalize(&grad.lerp(&*buf, momentum), self.ortho_kind); // Nesterov
            // NorMuon: equalise the update's per-row (or per-column) scale, keeping its norm.
            let (rows, cols) = (p.size()[0], p.size()[1]);
            let (dim, n) = if rows >= cols { (1, cols) } else { (0, rows) };
            let v_mean = g.square().mean_dim(dim, true, Kind::Float);
            let v_norm = (v_mean.sum(Kind::Float) * n as f64).sqrt();
            let _ = second.lerp_(&v_mean, 1.0 - MUON_BETA2);
            let scale = second.clamp_min(1e-10).rsqrt();
            let v_norm_new = ((&v_mean * n as f64) * scale.square())
                .sum(Kind::Float)
                .sqrt();
            let g = g * scale * (v_norm / v_norm_new.clamp_min(1e-10));
            // Cautious weight decay: only where the update and the weight agree in sign.
            let lr = lr * (rows as f64 / cols as f64).max(1.0).sqrt();
            let agree = (&g * p).ge(0.0).to_kind(Kind::Float);
            let update = g * lr + p * agree * (lr * weight_decay);
            let _ = p.shallow_clone().g_sub_(&update);
        }
    }
}

/// The optimizer group of each kind of parameter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Group {
    Matrix,      // 2-D weights inside the blocks: Muon
    Embedding,   // wte and the value embeddings
    Unembedding, // lm_head
    Residual,    // resid_lambdas
    Scalar,      // any other 0-D or 1-D parameter (x0_lambdas, gains, biases)
}

/// Which group a parameter belongs to, by its name and shape. Every trainable parameter must
/// belong to one, or it would never be updated.
fn group_of(name: &str, shape: &[i64]) -> Result<Group> {
    Ok(match (name, shape.len()) {
        (_, 0 | 1) if name == "resid_lambdas" => Group::Residual,
        (_, 0 | 1) => Group::Scalar,
        ("lm_head.weight", 2) => Group::Unembedding,
        (_, 2) if name == "wte.weight" || name.starts_with("ve") => Group::Embedding,
        (_, 2) if name.starts_with("h.") => Group::Matrix,
        _ => anyhow::bail!(
            "parameter {name} (shape {shape:?}) has no optimizer group and would never train: \
             put matrices under `h.` (Muon) or give it a rule in group_of"
        ),
    })
}

/// All parameters by group: Muon for the block matrices, Adam for the rest.
struct Optimizer {
    adam: Vec<Adam>,
    muon: Muon,
    lr_scale: f64,
}

impl Optimizer {
    /// `lr_scale` multiplies every learning rate (CPU_LR_SCALE on CPU, 1 on CUDA).
    fn new(
        vs: &nn::VarStore,
        cfg: &GptConfig,
        lr_scale: f64,
        ortho_kind: Kind,
    ) -> Result<Optimizer> {
        let mut vars: Vec<_> = vs
            .variables()
            .into_iter()
            .filter(|(_, t)| t.requires_grad())
            .collect();
        vars.sort_by(|a, b| a.0.cmp(&b.0));
        let mut groups = std::collections::BTreeMap::<Group, Vec<Tensor>>::new();
        for (name, t) in vars {
            groups
                .entry(group_of(&name, &t.size())?)
                .or_default()
                .push(t);
        }
        let mut take = |g: Group| groups.remove(&g).unwrap_or_default();
        // Embedding-like learning rates shrink with width, as in the reference.
        let width_scale = (cfg.n_embd() as f64 / 768.0).powf(-0.5) * lr_scale;
        Ok(Optimizer {
            adam: vec![
                Adam::new(
                    take(Group::Embedding),
                    EMBEDDING_LR * width_scale,
                    ADAM_BETAS,
                ),
                Adam::new(
                    take(Group::Unembedding),
                    UNEMBEDDING_LR * width_scale,
                    ADAM_BETAS,
                ),
                Adam::new(
                    take(Group::Residual),
                    SCALAR_LR * 0.01 * lr_scale,
                    ADAM_BETAS,
                ),
                Adam::new(take(Group::Scalar), SCALAR_LR * lr_scale, (0.96, 0.95)),
            ],
            muon: Muon::new(take(Group::Matrix), ortho_kind),
            lr_scale,
        })
    }

    /// One update from the accumulated gradients; `step` counts from 0.
    fn step(&mut self, step: usize, progress: f64) {
        let lrm = lr_multiplier(progress);
        tch::no_grad(|| {
            for group in &mut self.adam {
                group.step(step as i32 + 1, lrm);
            }
            let lr = MATRIX_LR * self.lr_scale * lrm;
            self.muon
                .step(lr, muon_momentum(step), WEIGHT_DECAY * (1.0 - progress));
        });
    }
}

// ---------------------------------------------------------------------------------------------
// Schedules, driven by progress = counted training seconds / budget (the clock's)

/// Learning-rate multiplier: constant, then linear warm-down to 0 over the last WARMDOWN_RATIO.
fn lr_multiplier(progress: f64) -> f64 {
    ((1.0 - progress) / WARMDOWN_RATIO).clamp(0.0, 1.0)
}

/// Muon momentum, warmed from 0.85 to 0.95 over the first 300 steps.
fn muon_momentum(step: usize) -> f64 {
    let frac = (step as f64 / 300.0).min(1.0);
    0.85 + 0.10 * frac
}

// ---------------------------------------------------------------------------------------------
// Setup, training loop, evaluation, result

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> Result<T> {
    match std::env::var(name) {
        Ok(s) => s
            .parse()
            .map_err(|_| anyhow::anyhow!("{name}={s:?} is not a valid value")),
        Err(_) => Ok(default),
    }
}

fn main() -> Result<()> {
    let device = runtime::device()?;
    let cuda = device.is_cuda();
    let data = Dataset::open(&prepare::default_data_dir())?;
    // The budget's clock: it counts each step's time itself (see `runtime::Clock`).
    let mut clock = runtime::Clock::start(device, &data)?;
    let contract = data.contract().clone();
    let seed: u64 = env_or(prepare::SEED_ENV, 42)?;
    tch::manual_seed(seed as i64);

    let (depth, device_batch, total_batch, device_lr_scale) = if cuda {
        (GPU_DEPTH, GPU_DEVICE_BATCH, GPU_TOTAL_BATCH, 1.0)
    } else {
        (CPU_DEPTH, CPU_DEVICE_BATCH, CPU_TOTAL_BATCH, CPU_LR_SCALE)
    };
    let seq_len = contract.seq_len as i64;
    let n_embd = (depth * ASPECT_RATIO + HEAD_DIM - 1) / HEAD_DIM * HEAD_DIM; // whole heads
    let cfg = GptConfig {
        vocab_size: contract.vocab_size as i64,
        seq_len,
        n_layer: depth,
        n_head: n_embd / HEAD_DIM,
        head_dim: HEAD_DIM,
    };
    let grad_accum = (total_batch / (device_batch * seq_len)).max(1);
    let tokens_per_step = grad_accum * device_batch * seq_len;

    let mut vs = nn::VarStore::new(device);
    let model = Gpt::new(vs.root(), cfg);
    let num_params: usize = vs.trainable_variables().iter().map(Tensor::numel).sum();
    let flops_per_token = model.flops_per_token(&vs);

    let mut optimizer = Optimizer::new(
        &vs,
        &cfg,
        device_lr_scale,
        if cuda { Kind::BFloat16 } else { Kind::Float },
    )?;

    // Batches are packed on a background thread while the model trains.
    let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<i64>>(2);
    let mut loader = data.train_loader(device_batch as usize, seq_len as usize, seed)?;
    std::thread::spawn(move || while tx.send(loader.next_batch()).is_ok() {});
    let next_batch = || -> Result<(Tensor, Tensor)> {
        let rows = Tensor::from_slice(&rx.recv().context("the loader thread stopped")?)
            .view([device_batch, seq_len + 1])
            .to(device);
        Ok((rows.narrow(1, 0, seq_len), rows.narrow(1, 1, seq_len)))
    };

    eprintln!(
        "device {device:?} | {num_params} params ({depth} blocks, width {}, {} heads) | {tokens_per_step} tokens/step ({grad_accum} x {device_batch} x {seq_len}) | budget {} s | seed {seed} | contract {}",
        cfg.n_embd(),
        cfg.n_head,
        clock.budget(),
        data.contract_hash()
    );

    let mut smooth_loss = 0.0;
    let mut status = RunStatus::Ok;
    while !clock.spent() {
        let step = clock.steps();
        let progress = clock.progress();
        let mut loss_sum = Tensor::zeros([], (Kind::Float, device));
        for _ in 0..grad_accum {
            let (x, y) = next_batch()?;
            let loss = autocast(device, || model.loss(&x, &y)) / grad_accum as f64;
            loss.backward();
            loss_sum += loss.detach();
        }
        let lrm = lr_multiplier(progress);
        optimizer.step(step, progress);
        vs.trainable_variables()
            .iter_mut()
            .for_each(Tensor::zero_grad);
        let train_loss = loss_sum.double_value(&[]);
        if train_loss.is_nan() || train_loss > 100.0 {
            eprintln!("step {step}: loss {train_loss}, diverged");
            status = RunStatus::Diverged;
            break;
        }
        let dt = clock.step(train_loss, |x, y| model.loss(x, y));
        smooth_loss = 0.9 * smooth_loss + 0.1 * train_loss;
        let debiased = smooth_loss / (1.0 - 0.9f64.powi(step as i32 + 1));
        let tokens_per_second = tokens_per_step as f64 / dt;
        let mfu = if cuda {
            format!(
                "{:.1}%",
                100.0 * flops_per_token * tokens_per_second / runtime::MFU_PEAK_FLOPS
            )
        } else {
            "-".into()
        };
        eprintln!(
            "step {step:05} ({:.1}%) | loss {debiased:.4} | lrm {lrm:.2} | dt {:.0}ms | tok/s {tokens_per_second:.0} | mfu {mfu} | remaining {:.0}s",
            100.0 * progress,
            dt * 1000.0,
            clock.remaining()
        );
    }

    if status == RunStatus::Ok {
        runtime::export(&mut vs, seq_len, |tokens| model.forward(tokens))?;
    }
    clock.finish(runtime::Report {
        status,
        num_params,
        tokens_per_step: tokens_per_step as usize,
        flops_per_token,
        seed,
        extra: serde_json::json!({}),
    })
}

// The rules every change must keep, outside src/ where they cannot be edited (see rules.rs).
#[cfg(test)]
#[path = "../rules.rs"]
mod rules;
