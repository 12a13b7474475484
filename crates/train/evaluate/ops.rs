//! What an exported model may be made of: pure tensor operations, whose outputs depend on their
//! inputs alone. Whatever else a TorchScript graph can express (reading or writing files,
//! printing, drawing random numbers, keeping state between calls, calling a custom operator) has
//! no place in a language model's forward pass and could reach past the scored row, so a model
//! whose graphs use it is refused before it runs, with the operation named.
//!
//! The list is an allow-list: an operation missing here that an honest model needs is a change to
//! this file (which restarts the runs' comparability, as every change to the evaluator does), not
//! something a trainer can slip in.
//!
//! FIXED: part of the protected evaluator (see `main.rs`).

/// Structural operations of TorchScript's graphs: constants, lists and tuples, attribute reads
/// (the weights), control flow, and conversions between numbers and tensors.
const PRIM: &str = "
    Constant ListConstruct ListUnpack TupleConstruct TupleUnpack TupleIndex GetAttr
    NumToTensor If Loop Uninitialized unchecked_cast RaiseException
    device dtype layout shape min max abs
";

/// Tensor operations without side effects or hidden state: no `rand*`, `normal`, `bernoulli` or
/// `dropout` (their outputs depend on the random state; export without dropout), no in-place
/// operations (`add_`: on a weight, state kept between calls), no `from_file`, `save`, `warn`.
const ATEN: &str = "
    // arithmetic and elementwise functions
    add sub rsub mul div floor_divide remainder fmod neg abs
    pow square sqrt rsqrt exp exp2 expm1 log log2 log10 log1p
    sin cos tan asin acos atan atan2 sinh cosh tanh sigmoid
    logit relu relu6 leaky_relu gelu silu mish softplus elu selu
    celu hardtanh hardsigmoid hardswish glu erf erfc reciprocal sign
    sgn floor ceil round trunc frac clamp clamp_min clamp_max clip
    lerp addcmul addcdiv where masked_fill maximum minimum nan_to_num
    copysign hypot xlogy
    // comparisons and logic
    eq ne lt le gt ge logical_and logical_or logical_not
    logical_xor bitwise_and bitwise_or bitwise_not bitwise_xor isnan isinf
    isfinite
    // reductions and scans
    sum mean prod amax amin max min argmax argmin norm
    linalg_vector_norm var std var_mean logsumexp cumsum cumprod all
    any topk sort argsort
    // linear algebra and the layers of a language model
    matmul mm bmm addmm baddbmm einsum linear embedding layer_norm
    rms_norm group_norm softmax log_softmax scaled_dot_product_attention tril
    triu outer
    // shapes, views, indexing and copies
    view reshape flatten unflatten squeeze unsqueeze transpose permute
    t contiguous expand expand_as repeat repeat_interleave narrow slice
    select index_select gather index take_along_dim chunk split one_hot scatter scatter_add
    split_with_sizes unbind cat stack roll flip pad constant_pad_nd
    clone detach alias view_as reshape_as type_as to size dim
    numel Int Float Bool ScalarImplicit item len __getitem__
    // TorchScript's operations on numbers, None and strings (for its checks and messages)
    __is__ __isnot__ __not__ __and__ __or__ __range_length __derive_index format
    floordiv
    // tensors made from their arguments alone
    arange zeros ones full zeros_like ones_like full_like
    eye tensor scalar_tensor new_zeros new_ones new_full
    linspace
";

/// The first of `kinds` (node kinds such as `aten::linear`) that is not a pure tensor operation,
/// or None when all are.
pub fn refused(kinds: &[String]) -> Option<String> {
    kinds.iter().find(|kind| !allowed(kind)).cloned()
}

fn allowed(kind: &str) -> bool {
    let listed = |list: &str, op: &str| {
        list.lines()
            .filter(|line| !line.trim_start().starts_with("//"))
            .flat_map(str::split_whitespace)
            .any(|name| name == op)
    };
    match kind.split_once("::") {
        Some(("prim", op)) => listed(PRIM, op),
        Some(("aten", op)) => listed(ATEN, op),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(names: &[&str]) -> Vec<String> {
        names.iter().map(|n| n.to_string()).collect()
    }

    #[test]
    fn a_language_models_operations_are_allowed() {
        let honest = kinds(&[
            "aten::embedding",
            "aten::linear",
            "aten::rms_norm",
            "aten::scaled_dot_product_attention",
            "prim::Constant",
            "prim::ListConstruct",
        ]);
        assert_eq!(refused(&honest), None);
    }

    #[test]
    fn files_printing_randomness_state_and_custom_ops_are_refused() {
        for op in [
            "aten::from_file",
            "prim::Print",
            "aten::rand",
            "aten::dropout",
            "aten::manual_seed",
            "prim::SetAttr",
            "prim::CallMethod",
            "aten::arithmetic",
            "my_ops::peek",
        ] {
            let graph = kinds(&["aten::linear", op]);
            assert_eq!(refused(&graph).as_deref(), Some(op));
        }
    }
}
