// What libtorch offers and tch 0.24 does not expose: the CUDA autocast dtype, the CUDA caching
// allocator's peak, flash attention with a sliding window, and the operations a TorchScript
// model's graphs are made of. Each call catches C++ exceptions
// and hands their message to Rust (a C++ exception must never unwind through Rust frames).
#include <ATen/DeviceAccelerator.h>
#include <ATen/autocast_mode.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/_flash_attention_forward.h>
#include <torch/csrc/jit/passes/inliner.h>
#include <torch/csrc/jit/runtime/graph_executor.h>
#include <torch/script.h>

#include <cstring>
#include <exception>
#include <set>
#include <sstream>
#include <string>

namespace {
char* copy_message(const std::exception& e) {
  return strdup(e.what());
}

// Turns the graph executor's optimisation on for its lifetime: Inline leaves calls to functions
// (prim::CallFunction) alone while it is off, which the evaluator's scoring wants.
struct OptimizingGraphExecutor {
  bool was = torch::jit::getGraphExecutorOptimize();
  OptimizingGraphExecutor() { torch::jit::setGraphExecutorOptimize(true); }
  ~OptimizingGraphExecutor() { torch::jit::setGraphExecutorOptimize(was); }
};

void collect_kinds(const torch::jit::Block* block, std::set<std::string>& kinds) {
  for (const torch::jit::Node* node : block->nodes()) {
    kinds.insert(node->kind().toQualString());
    for (const torch::jit::Block* inner : node->blocks()) {
      collect_kinds(inner, kinds);
    }
  }
}
}  // namespace

extern "C" {

void ar_free_message(char* message) {
  free(message);
}

// Makes CUDA autocast compute in bfloat16 on this thread (libtorch's default is float16, which
// diverges without loss scaling).
char* ar_set_cuda_autocast_bf16() {
  try {
    at::autocast::set_autocast_dtype(at::kCUDA, at::kBFloat16);
    return nullptr;
  } catch (const std::exception& e) {
    return copy_message(e);
  }
}

// The dtype CUDA autocast uses on this thread, as an at::ScalarType number.
int ar_cuda_autocast_dtype() {
  return static_cast<int>(at::autocast::get_autocast_dtype(at::kCUDA));
}

// Peak bytes held by tensors on `device` since the start, from the caching allocator.
char* ar_cuda_peak_allocated_bytes(int device, double* bytes) {
  try {
    auto stats = at::accelerator::getDeviceStats(static_cast<c10::DeviceIndex>(device));
    *bytes = static_cast<double>(stats.allocated_bytes[0].peak);
    return nullptr;
  } catch (const std::exception& e) {
    return copy_message(e);
  }
}

// Causal flash attention over q, k, v of shape (B, T, nh, hs) in bf16 or fp16 on CUDA; each query
// sees the `window` latest keys up to itself (window <= 0: all of them). Autograd records it.
char* ar_flash_attention(const at::Tensor* q, const at::Tensor* k, const at::Tensor* v,
                         int64_t window, at::Tensor** out) {
  try {
    const int64_t t = q->size(1);
    std::optional<int64_t> left = std::nullopt;
    if (window > 0 && window < t) {
      left = window - 1;
    }
    auto result = at::_flash_attention_forward(*q, *k, *v, std::nullopt, std::nullopt, t, t, 0.0,
                                               /*is_causal=*/true, /*return_debug_mask=*/false,
                                               std::nullopt, left, /*window_size_right=*/0);
    *out = new at::Tensor(std::get<0>(result));
    return nullptr;
  } catch (const std::exception& e) {
    return copy_message(e);
  }
}

// The kinds of every node (e.g. "aten::linear", "prim::If") in every method of every submodule of
// the TorchScript model serialised in `data`, with calls inlined, one per line in `*kinds`
// (strdup'd). Loaded on the CPU, apart from any instance that runs.
char* ar_graph_node_kinds(const char* data, size_t size, char** kinds) {
  try {
    OptimizingGraphExecutor inlining_functions;
    std::istringstream stream(std::string(data, size));
    torch::jit::Module module = torch::jit::load(stream, torch::kCPU);
    std::set<std::string> found;
    for (const torch::jit::Module& submodule : module.modules()) {
      for (const torch::jit::Method& method : submodule.get_methods()) {
        std::shared_ptr<torch::jit::Graph> graph = method.graph()->copy();
        torch::jit::Inline(*graph);
        collect_kinds(graph->block(), found);
      }
    }
    std::string joined;
    for (const std::string& kind : found) {
      joined += kind + "\n";
    }
    *kinds = strdup(joined.c_str());
    return nullptr;
  } catch (const std::exception& e) {
    return copy_message(e);
  }
}
}
