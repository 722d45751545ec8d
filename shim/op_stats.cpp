#include "shim/op_stats.h"

#include <deque>

#include "shim/log.h"
#include <mutex>

namespace ipex_shim {

const char* path_name(Path path) {
  switch (path) {
    case Path::stock: return "stock";
    case Path::onednn_fp32: return "onednn_fp32";
    case Path::onednn_bf16: return "onednn_bf16";
    case Path::onednn_int8: return "onednn_int8";
    case Path::autograd_bf16: return "autograd_bf16";
    case Path::autograd_shim: return "autograd_shim";
    case Path::observed: return "observed";
    case Path::fused: return "fused";
    case Path::composed: return "composed";
    case Path::count_: break;
  }
  return "?";
}

const char* fallback_name(Fallback reason) {
  switch (reason) {
    case Fallback::none: return "none";
    case Fallback::mode_not_available: return "mode not available yet";
    case Fallback::policy_fp32: return "kept in fp32 by policy";
    case Fallback::needs_grad: return "gradient needed";
    case Fallback::unsupported_dtype: return "input not a plain fp32 CPU tensor";
    case Fallback::unsupported_shape: return "unsupported shape or arguments";
    case Fallback::config_mismatch: return "config does not match";
    case Fallback::kernel_error: return "kernel error";
    case Fallback::tracing: return "jit tracing";
    case Fallback::autocast: return "torch.autocast region";
    case Fallback::no_bf16_isa: return "no native BF16: fp32 kernels";
    case Fallback::symbolic_sizes: return "symbolic sizes (tracing)";
    case Fallback::mode_off: return "mode off";
    case Fallback::special_values: return "NaN or -inf in the input";
    case Fallback::stock_faster: return "stock is faster here";
    case Fallback::not_quantized: return "quantized: false in the INT8 config";
    case Fallback::count_: break;
  }
  return "?";
}

void OpStats::say_detail(Path path, Fallback reason, uint64_t seen) const {
  std::string text = name_ + ": " + path_name(path);
  if (reason != Fallback::none) text += std::string(" (") + fallback_name(reason) + ")";
  if (seen + 1 == kDetailCalls) text += "; further calls on this path are only counted";
  log_line(Severity::info, text);
}

uint64_t OpStats::total() const {
  uint64_t sum = 0;
  for (const auto& counter : paths_) sum += counter.load(std::memory_order_relaxed);
  return sum;
}

void OpStats::reset() {
  for (auto& counter : paths_) counter.store(0);
  for (auto& counter : fallbacks_) counter.store(0);
}

namespace {

struct Registry {
  std::mutex mutex;
  std::deque<OpStats> stats;  // a deque never moves its elements
};

Registry& registry() {
  static Registry* instance = new Registry();  // read by the exit summary: never destroyed
  return *instance;
}

}  // namespace

OpStats& op_stats(const std::string& name) {
  Registry& reg = registry();
  std::lock_guard<std::mutex> lock(reg.mutex);
  for (OpStats& entry : reg.stats)
    if (entry.name() == name) return entry;
  reg.stats.emplace_back(name);
  return reg.stats.back();
}

void reset_all_op_stats() {
  Registry& reg = registry();
  std::lock_guard<std::mutex> lock(reg.mutex);
  for (OpStats& entry : reg.stats) entry.reset();
}

std::vector<const OpStats*> all_op_stats() {
  Registry& reg = registry();
  std::lock_guard<std::mutex> lock(reg.mutex);
  std::vector<const OpStats*> out;
  for (const OpStats& entry : reg.stats) out.push_back(&entry);
  return out;
}

}  // namespace ipex_shim
