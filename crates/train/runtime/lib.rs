//! The runtime the trainer and the protected evaluator share: which device to use, bf16 autocast
//! on CUDA, the peak memory to report, causal (sliding-window) attention that takes the flash
//! kernel on CUDA, the operations an exported model is made of, and the trainer's budget clock,
//! result line and export.
//!
//! FIXED: this file lies outside `crates/train/src`, where the agent may write. The device choice,
//! the counted training time and the memory figure are part of what a result means, so the
//! trainer reports through [`Clock`] rather than timing itself; attention here is a kernel call,
//! like `flash_attn_func` in the Python original, and the model in `src/main.rs` decides how to
//! use it. The orchestrator still times every run from outside (docs/trust.md): the clock keeps an
//! honest trainer's count right, it cannot stop a dishonest one.

use std::ffi::{CStr, c_char, c_void};
use std::path::Path;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use prepare::{DEVICE_ENV, Dataset, Profile, RESULT_SCHEMA, ResultLine, RunStatus};
use tch::{Device, Kind, Tensor, nn};

/// Dense bf16 FLOP/s of an H100 SXM, the reference of `mfu_percent` on any GPU.
pub const MFU_PEAK_FLOPS: f64 = 989.5e12;

/// The training budget and the time counted against it. Each [`Clock::step`] counts the wall time
/// since the previous one (the first since [`Clock::start`]), after waiting for the device to
/// finish the step's work, so that nothing between two steps goes uncounted and asynchronous GPU
/// work is not counted in the next step; the contract's first `uncounted_steps` are not counted.
///
/// The clock also reports the run's progress, which the orchestrator follows while it trains
/// (the dashboard, stopping a doomed run early): a line on stderr,
/// `@progress {"seconds":12.34,"step":40,"loss":3.2101}` (counted seconds, steps taken, that
/// step's training loss, null when not finite), at most once per second of wall time and always
/// after the last step. Every [`PROBE_EVERY`] of the budget the line also carries `"probe"`,
/// the model's loss on [`PROBE_ROWS`] fixed training rows, the same in every run of a contract:
/// a batch's training loss depends on where in the data the batch comes from, so only the probe
/// compares two runs at the same point of their budgets. Probing is not counted.
pub struct Clock {
    device: Device,
    budget: f64,
    uncounted_steps: usize,
    contract: String,
    started: Instant,
    last_step: Instant,
    steps: usize,
    training_seconds: f64,
    /// When the last progress line was printed, and the loss of the latest step when its line
    /// is not printed yet.
    last_report: Option<Instant>,
    unreported_loss: Option<f64>,
    /// The probe's inputs and targets, (PROBE_ROWS, seq_len) each, and the counted seconds at
    /// which the next probe is due.
    probe: (Tensor, Tensor),
    next_probe: f64,
}

/// Counted seconds between two probes of the model's loss, as a share of the budget.
pub const PROBE_EVERY: f64 = 0.025;
/// Rows of training data the probe measures the loss on, taken by a loader of their own seed.
pub const PROBE_ROWS: usize = 8;
const PROBE_SEED: u64 = 0x9e37_79b9_7f4a_7c15;

impl Clock {
    /// Starts the clock for a run on `device` with `data`'s contract. The budget is
    /// `AUTORESEARCH_TIME_BUDGET` when set (the orchestrator always sets it), else the contract's.
    pub fn start(device: Device, data: &Dataset) -> Result<Clock> {
        let budget = match std::env::var(prepare::TIME_BUDGET_ENV) {
            Ok(s) => s
                .parse::<f64>()
                .ok()
                .filter(|b| b.is_finite() && *b > 0.0)
                .with_context(|| {
                    format!(
                        "{}={s:?} is not a positive number of seconds",
                        prepare::TIME_BUDGET_ENV
                    )
                })?,
            Err(_) => data.contract().time_budget_s,
        };
        let seq_len = data.contract().seq_len;
        let rows = data
            .train_loader(PROBE_ROWS, seq_len, PROBE_SEED)?
            .next_batch();
        let rows = Tensor::from_slice(&rows)
            .view([PROBE_ROWS as i64, seq_len as i64 + 1])
            .to(device);
        let probe = (
            rows.narrow(1, 0, seq_len as i64),
            rows.narrow(1, 1, seq_len as i64),
        );
        let now = Instant::now();
        Ok(Clock {
            device,
            budget,
            uncounted_steps: data.contract().uncounted_steps(),
            contract: data.contract_hash().to_string(),
            started: now,
            last_step: now,
            steps: 0,
            training_seconds: 0.0,
            last_report: None,
            unreported_loss: None,
            probe,
            next_probe: PROBE_EVERY * budget,
        })
    }

    /// Training seconds this run gets.
    pub fn budget(&self) -> f64 {
        self.budget
    }

    /// Counted training time over the budget, in [0, 1]: what schedules follow.
    pub fn progress(&self) -> f64 {
        (self.training_seconds / self.budget).min(1.0)
    }

    /// Budget seconds left.
    pub fn remaining(&self) -> f64 {
        (self.budget - self.training_seconds).max(0.0)
    }

    /// Steps taken so far.
    pub fn steps(&self) -> usize {
        self.steps
    }

    /// Ends a step whose training loss was `loss`: waits for the device, counts the step's wall
    /// time (unless it is one of the contract's uncounted steps), probes the model when a probe
    /// is due (`model_loss(inputs, targets)`: the mean cross-entropy the trainer minimises, run
    /// without gradients and not counted), reports progress, and returns the step's time in
    /// seconds.
    pub fn step(&mut self, loss: f64, model_loss: impl FnOnce(&Tensor, &Tensor) -> Tensor) -> f64 {
        if let Device::Cuda(index) = self.device {
            tch::Cuda::synchronize(index as i64);
        }
        let now = Instant::now();
        let dt = (now - self.last_step).as_secs_f64();
        self.last_step = now;
        if self.steps >= self.uncounted_steps {
            self.training_seconds += dt;
        }
        self.steps += 1;
        self.unreported_loss = Some(loss);
        let probe = (self.training_seconds >= self.next_probe && !self.spent()).then(|| {
            let every = PROBE_EVERY * self.budget;
            self.next_probe = ((self.training_seconds / every).floor() + 1.0) * every;
            let (inputs, targets) = &self.probe;
            let probe = tch::no_grad(|| autocast(self.device, || model_loss(inputs, targets)));
            let probe = probe.double_value(&[]); // waits for the device
            self.last_step = Instant::now();
            probe
        });
        let due = self
            .last_report
            .is_none_or(|at| (now - at).as_secs_f64() >= 1.0);
        if due || probe.is_some() || self.spent() {
            self.last_report = Some(now);
            self.report_progress(probe);
        }
        dt
    }

    fn report_progress(&mut self, probe: Option<f64>) {
        if let Some(loss) = self.unreported_loss.take() {
            eprintln!(
                "{}",
                progress_line(self.training_seconds, self.steps, loss, probe)
            );
        }
    }

    /// Whether the budget is spent: training must stop.
    pub fn spent(&self) -> bool {
        self.steps > self.uncounted_steps && self.training_seconds >= self.budget
    }

    /// Prints the result line of this run (stdout, and pretty on stderr) with the clock's own
    /// counts and the trainer's `report`; a diverged run then exits non-zero.
    pub fn finish(mut self, report: Report) -> Result<()> {
        self.report_progress(None);
        let line = self.result_line(report)?;
        eprintln!("---\n{}", serde_json::to_string_pretty(&line)?);
        println!("{}", serde_json::to_string(&line)?);
        if line.status != RunStatus::Ok {
            std::process::exit(1);
        }
        Ok(())
    }

    fn result_line(&self, report: Report) -> Result<ResultLine> {
        let counted_steps = self.steps.saturating_sub(self.uncounted_steps);
        let tokens_per_second =
            (counted_steps * report.tokens_per_step) as f64 / self.training_seconds.max(1e-9);
        let cuda = self.device.is_cuda();
        let mut line = ResultLine {
            schema: RESULT_SCHEMA,
            status: report.status,
            training_seconds: self.training_seconds,
            total_seconds: self.started.elapsed().as_secs_f64(),
            peak_memory_mb: peak_memory_mb(self.device),
            num_steps: self.steps as u64,
            num_params: report.num_params as u64,
            train_tokens: (self.steps * report.tokens_per_step) as u64,
            tokens_per_second,
            mfu_percent: cuda
                .then(|| 100.0 * report.flops_per_token * tokens_per_second / MFU_PEAK_FLOPS),
            device: if cuda { "cuda" } else { "cpu" }.into(),
            contract: self.contract.clone(),
            time_budget_s: Some(self.budget),
            seed: Some(report.seed),
            extra: Default::default(),
        };
        let fixed = serde_json::to_value(&line)?;
        let serde_json::Value::Object(extra) = report.extra else {
            bail!("Report::extra must be a JSON object (serde_json::json!({{..}}))");
        };
        if let Some(name) = extra.keys().find(|k| fixed.get(k.as_str()).is_some()) {
            bail!("the result line's `{name}` is the runtime's to fill; name your field otherwise");
        }
        line.extra = extra;
        Ok(line)
    }
}

/// The progress line of a run `seconds` into its budget after `step` steps, the last with training
/// loss `loss`, and the probe's loss when one was measured (see [`Clock`]).
fn progress_line(seconds: f64, step: usize, loss: f64, probe: Option<f64>) -> String {
    let number = |x: f64| {
        if x.is_finite() {
            format!("{x:.4}")
        } else {
            "null".into()
        }
    };
    let probe = probe.map_or(String::new(), |p| format!(",\"probe\":{}", number(p)));
    format!(
        "@progress {{\"seconds\":{seconds:.2},\"step\":{step},\"loss\":{}{probe}}}",
        number(loss)
    )
}

/// What the trainer tells the result line; the clock adds the times, steps and rates.
pub struct Report {
    pub status: RunStatus,
    pub num_params: usize,
    pub tokens_per_step: usize,
    /// Matmul FLOPs per token of one forward and backward pass: `mfu_percent` on CUDA.
    pub flops_per_token: f64,
    pub seed: u64,
    /// Fields of the trainer's own for the result line, a JSON object (`json!({})` for none).
    pub extra: serde_json::Value,
}

/// Saves `forward`, traced on one row of `seq_len` tokens, as TorchScript to the file named by
/// `AUTORESEARCH_EXPORT`, for the protected evaluator; without it, says that nothing is exported.
/// Traced without autocast, so the export computes in float32 from the float32 weights (the
/// evaluator's causality check is then exact), and with `vs` frozen, as tracing records only
/// parameters that do not require grad.
pub fn export(
    vs: &mut nn::VarStore,
    seq_len: i64,
    forward: impl Fn(&Tensor) -> Tensor,
) -> Result<()> {
    let Some(path) = std::env::var_os(prepare::EXPORT_ENV) else {
        eprintln!(
            "not exported: set {} to score this model",
            prepare::EXPORT_ENV
        );
        return Ok(());
    };
    export_to(Path::new(&path), vs, seq_len, forward)
}

/// [`export`] to `path`: what the trainer's rule tests load as the evaluator does.
pub fn export_to(
    path: &Path,
    vs: &mut nn::VarStore,
    seq_len: i64,
    forward: impl Fn(&Tensor) -> Tensor,
) -> Result<()> {
    vs.freeze();
    let example = Tensor::zeros([1, seq_len], (Kind::Int64, vs.device()));
    let module = tch::CModule::create_by_tracing("Gpt", "forward", &[example], &mut |x| {
        vec![forward(&x[0])]
    })?;
    module
        .save(path)
        .with_context(|| format!("saving the model to {}", path.display()))
}

/// The device from `AUTORESEARCH_DEVICE`, or CUDA when available. Never silently the CPU on a
/// GPU machine: there the CPU configuration would train for the whole budget and score nothing
/// comparable, so a GPU that libtorch cannot see is an error unless the CPU is asked for.
pub fn device() -> Result<Device> {
    let cuda = tch::Cuda::is_available();
    match std::env::var(DEVICE_ENV).as_deref() {
        Ok("cpu") => Ok(Device::Cpu),
        Ok("cuda") if cuda => Ok(Device::Cuda(0)),
        Ok("cuda") => bail!(
            "{DEVICE_ENV}=cuda, but libtorch sees no CUDA device (is the driver loaded, \
             CUDA_VISIBLE_DEVICES set right?); use {DEVICE_ENV}=cpu to train on the CPU"
        ),
        Ok("") | Err(std::env::VarError::NotPresent) if cuda => Ok(Device::Cuda(0)),
        Ok("") | Err(std::env::VarError::NotPresent) if Profile::detect() == Profile::Gpu => bail!(
            "this machine has an NVIDIA GPU (/dev/nvidia0) but libtorch sees no CUDA device, so \
             this run would train the CPU configuration; check the driver and that libtorch_cuda.so \
             loads (`ldd` on this binary), or set {DEVICE_ENV}=cpu to train on the CPU anyway"
        ),
        Ok("") | Err(std::env::VarError::NotPresent) => Ok(Device::Cpu),
        Ok(other) => bail!("{DEVICE_ENV}={other:?} is not a device: use cpu or cuda"),
        Err(e) => bail!("{DEVICE_ENV}: {e}"),
    }
}

/// Runs `f` under autocast on CUDA, computing matmuls in bfloat16 (fp16, libtorch's default,
/// diverges without loss scaling); on the CPU `f` runs in float32 as written.
pub fn autocast<T>(device: Device, f: impl FnOnce() -> T) -> T {
    if !device.is_cuda() {
        return f();
    }
    // The autocast dtype is thread-local, so it is set on every call, not once.
    check(unsafe { ar_set_cuda_autocast_bf16() }).expect("setting the CUDA autocast dtype");
    tch::autocast(true, f)
}

/// The dtype CUDA autocast computes in on this thread.
pub fn cuda_autocast_dtype() -> Kind {
    match unsafe { ar_cuda_autocast_dtype() } {
        5 => Kind::Half,
        6 => Kind::Float,
        15 => Kind::BFloat16,
        other => panic!("unexpected autocast dtype number {other}"),
    }
}

/// Peak memory in MB: the CUDA caching allocator's peak of tensor memory on CUDA, the process's
/// peak resident set on the CPU.
pub fn peak_memory_mb(device: Device) -> f64 {
    if let Device::Cuda(index) = device {
        let mut bytes = 0.0;
        check(unsafe { ar_cuda_peak_allocated_bytes(index as i32, &mut bytes) })
            .expect("reading the CUDA allocator's statistics");
        return bytes / (1024.0 * 1024.0);
    }
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kb = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok());
    kb.unwrap_or(0.0) / 1024.0
}

/// Causal self-attention of q, k, v shaped (B, T, nh, hs), returned as (B, T, nh, hs). Each query
/// sees the `window` latest positions up to and including itself (`window >= T`: all of them).
///
/// In bf16/fp16 on CUDA this is one flash-attention kernel, window included. Elsewhere (the CPU,
/// float32 exports) it is scaled_dot_product_attention with an explicit mask when the window is
/// shorter than T; a mask keeps SDPA off its flash kernel, which is why CUDA does not take this
/// path.
pub fn causal_attention(q: &Tensor, k: &Tensor, v: &Tensor, window: i64) -> Tensor {
    let t = q.size()[1];
    if q.device().is_cuda() && matches!(q.kind(), Kind::BFloat16 | Kind::Half) {
        let mut out = std::ptr::null_mut();
        let [q, k, v] = [q, k, v].map(|x| x.as_ptr().cast::<c_void>());
        check(unsafe { ar_flash_attention(q, k, v, window, &mut out) }).expect("flash attention");
        // SAFETY: the shim returns a new heap tensor that this handle now owns.
        return unsafe { Tensor::from_ptr(out.cast()) };
    }
    let (q, k, v) = (q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)); // (B, nh, T, hs)
    let mask = (window < t).then(|| window_mask(t, window, q.device()));
    Tensor::scaled_dot_product_attention(
        &q,
        &k,
        &v,
        mask.as_ref(),
        0.0,
        mask.is_none(),
        None,
        false,
    )
    .transpose(1, 2)
}

/// Boolean attention mask, true where query i may see key j: j <= i and i - j < window.
pub fn window_mask(t: i64, window: i64, device: Device) -> Tensor {
    let i = Tensor::arange(t, (Kind::Int64, device)).unsqueeze(1);
    let j = Tensor::arange(t, (Kind::Int64, device)).unsqueeze(0);
    let distance = &i - &j;
    distance.ge(0).logical_and(&distance.lt(window))
}

/// The kinds of every node (`aten::linear`, `prim::If`, ...) in every method of the TorchScript
/// model serialised in `model`, calls inlined, sorted and each once.
pub fn graph_node_kinds(model: &[u8]) -> Result<Vec<String>> {
    let mut kinds = std::ptr::null_mut();
    check(unsafe { ar_graph_node_kinds(model.as_ptr().cast(), model.len(), &mut kinds) })?;
    // SAFETY: on success the shim stored a NUL-terminated string it allocated with strdup.
    let text = unsafe { CStr::from_ptr(kinds) }
        .to_string_lossy()
        .into_owned();
    unsafe { ar_free_message(kinds) };
    Ok(text.lines().map(str::to_owned).collect())
}

fn check(message: *mut c_char) -> Result<()> {
    if message.is_null() {
        return Ok(());
    }
    // SAFETY: a non-null result is a NUL-terminated string the shim allocated with strdup.
    let text = unsafe { CStr::from_ptr(message) }
        .to_string_lossy()
        .into_owned();
    unsafe { ar_free_message(message) };
    bail!("libtorch: {text}")
}

// The shim in runtime/shim.cpp, compiled by build.rs; tensors are tch's `at::Tensor` handles.
unsafe extern "C" {
    fn ar_free_message(message: *mut c_char);
    fn ar_set_cuda_autocast_bf16() -> *mut c_char;
    fn ar_cuda_autocast_dtype() -> i32;
    fn ar_cuda_peak_allocated_bytes(device: i32, bytes: *mut f64) -> *mut c_char;
    fn ar_flash_attention(
        q: *const c_void,
        k: *const c_void,
        v: *const c_void,
        window: i64,
        out: *mut *mut c_void,
    ) -> *mut c_char;
    fn ar_graph_node_kinds(
        data: *const c_char,
        size: usize,
        kinds: *mut *mut c_char,
    ) -> *mut c_char;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_lines_are_json_after_their_mark() {
        assert_eq!(
            progress_line(12.3449, 40, 3.21014, None),
            r#"@progress {"seconds":12.34,"step":40,"loss":3.2101}"#
        );
        assert_eq!(
            progress_line(0.0, 1, f64::NAN, None),
            r#"@progress {"seconds":0.00,"step":1,"loss":null}"#
        );
        assert!(progress_line(1.0, 2, f64::INFINITY, None).ends_with(r#""loss":null}"#));
        assert_eq!(
            progress_line(3.0, 9, 4.0, Some(3.98766)),
            r#"@progress {"seconds":3.00,"step":9,"loss":4.0000,"probe":3.9877}"#
        );
    }

    #[test]
    fn the_probe_measures_the_same_rows_on_its_grid_and_is_not_counted() {
        let dir = tempfile::tempdir().unwrap();
        let data = Dataset::open(&fixtures::tiny_dataset(dir.path()).unwrap()).unwrap();
        let mut clock = Clock::start(Device::Cpu, &data).unwrap();
        // A budget of 40 steps of 10 ms, probed every step: 40 probes at most, of 30 ms each.
        let budget = 0.4;
        (clock.budget, clock.next_probe) = (budget, PROBE_EVERY * budget);
        let step = std::time::Duration::from_millis(10);
        let mut probed = Vec::new();
        while !clock.spent() {
            std::thread::sleep(step);
            clock.step(1.0, |inputs, targets| {
                probed.push(inputs.sum(Kind::Int64).int64_value(&[]));
                std::thread::sleep(3 * step);
                assert_eq!(
                    inputs.size(),
                    [PROBE_ROWS as i64, data.contract().seq_len as i64]
                );
                assert_eq!(inputs.narrow(1, 1, 3), targets.narrow(1, 0, 3));
                Tensor::from(2.5)
            });
        }
        let uncounted = clock.uncounted_steps;
        assert!((20..=40).contains(&probed.len()), "{} probes", probed.len());
        assert!(probed.iter().all(|&p| p == probed[0]), "the same rows");
        // 40 steps of 10 ms are counted (the uncounted first ones aside), not the probes' 30 ms.
        let counted = clock.training_seconds;
        let expected = (clock.steps - uncounted) as f64 * 0.010;
        assert!(
            counted < 1.5 * expected + 0.05,
            "counted {counted} s for {expected} s of steps"
        );
    }

    #[test]
    fn cuda_autocast_computes_in_bfloat16() {
        // Only the CUDA autocast state is set, so this holds on a machine without a GPU too.
        let dtype = autocast(Device::Cuda(0), cuda_autocast_dtype);
        assert_eq!(dtype, Kind::BFloat16);
    }

    #[test]
    fn the_mask_bounds_each_query_to_its_window() {
        let expected = Tensor::from_slice(&[
            1, 0, 0, 0, 0, 0, //
            1, 1, 0, 0, 0, 0, //
            1, 1, 1, 0, 0, 0, //
            0, 1, 1, 1, 0, 0, //
            0, 0, 1, 1, 1, 0, //
            0, 0, 0, 1, 1, 1,
        ])
        .view([6, 6])
        .to_kind(Kind::Bool);
        assert!(window_mask(6, 3, Device::Cpu).equal(&expected));
    }

    #[test]
    fn a_window_as_long_as_the_context_is_plain_causal_attention() {
        tch::manual_seed(0);
        let qkv = || Tensor::randn([2, 8, 2, 4], (Kind::Float, Device::Cpu));
        let (q, k, v) = (qkv(), qkv(), qkv());
        let full = causal_attention(&q, &k, &v, 8);
        let masked = Tensor::scaled_dot_product_attention(
            &q.transpose(1, 2),
            &k.transpose(1, 2),
            &v.transpose(1, 2),
            Some(&window_mask(8, 8, Device::Cpu)),
            0.0,
            false,
            None,
            false,
        )
        .transpose(1, 2);
        assert!(full.allclose(&masked, 1e-6, 1e-6, false));
        // A shorter window changes the later queries only.
        let short = causal_attention(&q, &k, &v, 3);
        assert!(
            short
                .narrow(1, 0, 3)
                .allclose(&full.narrow(1, 0, 3), 1e-6, 1e-6, false)
        );
        assert!(!short.allclose(&full, 1e-3, 1e-3, false));
    }
}
