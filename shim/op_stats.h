// What ran where: per intercepted op, how many calls took each path and, for calls that
// went to stock PyTorch, why. Counting is a relaxed atomic increment on the hot path;
// status() and the exit summary read the counters.
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <string>
#include <vector>

namespace ipex_shim {

enum class Path : int {
  stock,        // stock PyTorch kernel, unchanged precision
  onednn_fp32,  // the shim's oneDNN kernel in fp32
  onednn_bf16,  // the shim's oneDNN kernel in BF16
  onednn_int8,  // the shim's oneDNN kernel in INT8
  autograd_bf16,  // gradient needed: stock kernels on BF16 copies, recorded by autograd
  autograd_shim,  // gradient needed: the shim's own forward and backward (an autograd function)
  observed,     // calibration: stock result, inputs/outputs observed
  fused,        // answered by the preceding fused convolution (no work of its own)
  composed,     // run as its parts through the dispatcher (each part counted on its own)
  count_,
};

enum class Fallback : int {
  none,                // not a fallback
  mode_not_available,  // the mode is accepted but not implemented yet
  policy_fp32,         // the precision policy (or IPEX_CONFIG) keeps this op in fp32
  needs_grad,          // a gradient is needed and this path has no backward
  unsupported_dtype,   // not a plain fp32 CPU tensor (bf16 in a bf16 backward, a vmap wrapper...)
  unsupported_shape,   // rank, sizes, strides or arguments the kernel does not take
  config_mismatch,     // the INT8 config entry does not match this op
  kernel_error,        // oneDNN refused or failed; answered by stock
  tracing,             // torch.jit.trace is recording: it must see the stock ops
  autocast,            // inside the program's own torch.autocast region: autocast decides
  no_bf16_isa,         // bf16 mode on a CPU without native BF16: the fp32 kernels ran
  symbolic_sizes,      // sizes are symbolic (torch.compile tracing with dynamic shapes)
  mode_off,            // the mode in effect is off (set at run time, or outside a scope)
  special_values,      // a NaN or -inf the kernel would answer differently from stock (max pooling)
  stock_faster,        // stock's own kernel is the faster one for this case (measured)
  not_quantized,       // int8 mode: the op's config entry says quantized: false
  count_,
};

const char* path_name(Path path);
const char* fallback_name(Fallback reason);

constexpr int kPathCount = static_cast<int>(Path::count_);
constexpr int kFallbackCount = static_cast<int>(Fallback::count_);

class OpStats {
 public:
  explicit OpStats(std::string name) : name_(std::move(name)) {}

  void count(Path path, Fallback reason = Fallback::none) {
    uint64_t seen = paths_[static_cast<int>(path)].fetch_add(1, std::memory_order_relaxed);
    if (reason != Fallback::none)
      fallbacks_[static_cast<int>(reason)].fetch_add(1, std::memory_order_relaxed);
    if (detail_ && seen < kDetailCalls) say_detail(path, reason, seen);
  }

  // IPEX_VERBOSE=2: the first kDetailCalls calls of each op and path are logged as they run.
  static constexpr uint64_t kDetailCalls = 3;
  static void set_detail(bool on) { detail_ = on; }

  const std::string& name() const { return name_; }

  // Set once at start from IPEX_CONFIG's keep_fp32, before any call is counted.
  bool keep_fp32 = false;
  uint64_t calls(Path path) const { return paths_[static_cast<int>(path)].load(); }
  uint64_t fallbacks(Fallback reason) const { return fallbacks_[static_cast<int>(reason)].load(); }
  uint64_t total() const;
  void reset();

 private:
  void say_detail(Path path, Fallback reason, uint64_t seen) const;

  static inline bool detail_ = false;
  std::string name_;
  std::array<std::atomic<uint64_t>, kPathCount> paths_{};
  std::array<std::atomic<uint64_t>, kFallbackCount> fallbacks_{};
};

// The counters of the op named `name` ("conv2d", "add.Tensor"), created on first use and
// alive for the whole process. The reference is stable: callers cache it.
OpStats& op_stats(const std::string& name);

// Every op's counters, in registration order.
std::vector<const OpStats*> all_op_stats();

// Zeroes every op's counters.
void reset_all_op_stats();

}  // namespace ipex_shim
