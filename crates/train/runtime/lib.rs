//! The runtime the trainer and the protected evaluator share: which device to use, bf16 autocast
//! on CUDA, the peak memory to report, causal (sliding-window) attention that takes the flash
//! kernel on CUDA, and the operations an exported model is made of.
//!
//! FIXED: this file lies outside `crates/train/src`, where the agent may write. The device choice
//! and the memory figure are part of what a result means; attention here is a kernel call, like
//! `flash_attn_func` in the Python original, and the model in `src/main.rs` decides how to use it.

use std::ffi::{CStr, c_char, c_void};

use anyhow::{Result, bail};
use prepare::{DEVICE_ENV, Profile};
use tch::{Device, Kind, Tensor};

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
