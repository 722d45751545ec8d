#include "shim/status.h"

#include <ATen/Parallel.h>
#include <unistd.h>

#include <cstdio>
#include <mutex>
#include <nlohmann/json.hpp>

#include "kernels/buffer_pool.h"
#include "kernels/int8.h"
#include "kernels/weight_cache.h"
#include "shim/core_start.h"
#include "shim/cpu_features.h"
#include "shim/dispatch_key.h"
#include "shim/torch_compat.h"
#include "shim/fusion.h"
#include "shim/int8_calibration.h"
#include "shim/int8_inference.h"
#include "shim/mode_control.h"
#include "shim/op_stats.h"
#include "shim/registration.h"
#include "shim/runtime.h"

namespace ipex_shim {
namespace {

nlohmann::json op_json(const OpStats& stats) {
  nlohmann::json entry = nlohmann::json::object();
  for (int p = 0; p < kPathCount; ++p) {
    uint64_t calls = stats.calls(static_cast<Path>(p));
    if (calls > 0) entry[path_name(static_cast<Path>(p))] = calls;
  }
  nlohmann::json reasons = nlohmann::json::object();
  for (int r = 1; r < kFallbackCount; ++r) {
    uint64_t calls = stats.fallbacks(static_cast<Fallback>(r));
    if (calls > 0) reasons[fallback_name(static_cast<Fallback>(r))] = calls;
  }
  if (!reasons.empty()) entry["fallback_reasons"] = reasons;
  return entry;
}

// Why start_core refused (empty while the shim runs); never destroyed, as status() may be
// called while the process exits.
struct Refusal {
  std::mutex mutex;
  std::string why;
};

Refusal& refusal_storage() {
  static Refusal* refusal = new Refusal();
  return *refusal;
}

nlohmann::json isa_json() {
  nlohmann::json isa = nlohmann::json::object();
  for (const auto& [name, present] : cpu_feature_list(cpu_features())) isa[name] = present;
  return isa;
}

std::string threads_origin(const Settings& settings) {
  return settings.threads_from_env ? "OMP_NUM_THREADS" : "affinity mask";
}

// Where int8 mode runs the ops its config leaves out of INT8, and why.
std::string int8_fallback_text() {
  const std::string what = "ops the config leaves out of INT8 (quantized: false) run in ";
  if (int8_fallback_bf16())
    return what + "BF16 (IPEX_INT8_FALLBACK=bf16): " + bf16_decision().why;
  if (runtime_settings().int8_fallback == "fp32") return what + "fp32 (IPEX_INT8_FALLBACK=fp32)";
  return what + "fp32, as bf16 mode runs " + bf16_decision().why;
}

// What each lower-precision mode runs on this CPU, and why.
nlohmann::json cpu_plan() {
  return {{"bf16", bf16_decision().why},
          {"int8", onednn_reaches_int8()
                       ? "INT8 kernels (VNNI or AMX), 8-bit weights"
                       : "INT8 kernels with 7-bit weights: no VNNI or AMX within oneDNN's ISA "
                         "here (" + onednn_isa() + "), whose 16-bit pair sums 8-bit weights "
                         "would overflow"},
          {"int8_fallback", int8_fallback_text()},
          {"int8_weight_bound", int8_weight_bound()},
          {"int8_residual_addends",
           int8_sum_reads_addends_as_they_are()
               ? "read by the convolution's sum as they are (it rescales them)"
               : "requantised into the convolution's destination first (no avx512_core_bf16 "
                 "or AMX within oneDNN's ISA here, " + onednn_isa() + ")"}};
}

}  // namespace

void set_refusal(const std::string& why) {
  Refusal& stored = refusal_storage();
  std::lock_guard<std::mutex> lock(stored.mutex);
  if (stored.why.empty()) stored.why = why;
}

std::string refusal() {
  Refusal& stored = refusal_storage();
  std::lock_guard<std::mutex> lock(stored.mutex);
  return stored.why;
}

std::string refused_status_json() {
  const std::string why = refusal();
  const std::string plan = "stock PyTorch: the shim stays off in this process (" + why + ")";
  nlohmann::json status;
  status["version"] = IPEX_SHIM_VERSION;
  status["running"] = false;
  status["refused"] = why;
  status["active"] = false;
  status["mode"] = mode_name(Mode::off);
  status["process_mode"] = mode_name(Mode::off);
  status["environment_mode"] = mode_name(runtime_settings().mode);
  status["implemented_modes"] = nlohmann::json::array();
  status["torch"] = compat::kTorchVersion;
  status["isa"] = isa_json();
  status["onednn"] = {{"version", onednn_version()}, {"isa", onednn_isa()}};
  status["on_this_cpu"] = {{"bf16", plan}, {"int8", plan}};
  status["ops"] = nlohmann::json::object();
  status["pid"] = static_cast<long>(getpid());
  return status.dump();
}

std::string status_json() {
  const Settings& settings = runtime_settings();
  nlohmann::json status;
  status["version"] = IPEX_SHIM_VERSION;
  status["running"] = core_running();
  const std::string why = refusal();
  status["refused"] = why.empty() ? nlohmann::json(nullptr) : nlohmann::json(why);
  // The mode of a call made now from this thread, the process's, and where it came from.
  const Mode mode = current_mode();
  status["mode"] = mode_name(mode);
  status["mode_available"] = mode == Mode::off || mode_implemented(mode);
  status["process_mode"] = mode_name(process_mode());
  status["mode_source"] = mode_source_name(process_mode_source());
  status["environment_mode"] = mode_name(settings.mode);
  nlohmann::json scopes = nlohmann::json::array();
  for (Mode scoped : thread_scopes()) scopes.push_back(mode_name(scoped));
  status["thread_scopes"] = scopes;
  nlohmann::json modes = nlohmann::json::array();
  for (Mode mode : implemented_modes()) modes.push_back(mode_name(mode));
  status["implemented_modes"] = modes;
  status["active"] = active_in_this_thread();
  status["dispatch_key"] = c10::toString(shim_key());
  status["observer_key"] = c10::toString(observer_key());
  status["torch"] = compat::kTorchVersion;
  status["num_threads"] = at::get_num_threads();
  status["num_threads_setting"] = settings.num_threads;
  status["num_threads_from"] = threads_origin(settings);
  status["isa"] = isa_json();
  status["onednn"] = {{"version", onednn_version()}, {"isa", onednn_isa()}};
  status["on_this_cpu"] = cpu_plan();
  const std::string int8_config = int8::loaded_path();
  const std::string& config_path = int8_config.empty() ? settings.config_path : int8_config;
  status["config"] = config_path.empty() ? nlohmann::json(nullptr) : nlohmann::json(config_path);
  status["config_state"] = config_state();
  fusion::Stats fused = fusion::stats();
  status["fusion"] = {{"enabled", fusion::enabled()},
                      {"fused_convolutions", fused.fused_convolutions},
                      {"fused_linears", fused.fused_linears},
                      {"handoffs", fused.handoffs},
                      {"sums_in_place", fused.sums_in_place},
                      {"mispredictions", fused.mispredictions},
                      {"repairs", fused.repairs},
                      {"sites", fused.sites},
                      {"sites_off", fused.sites_off}};
  if (mode == Mode::int8 || !int8_config.empty()) {
    int8::Int8Summary summary = int8::int8_summary();
    status["int8"] = {{"entries", summary.entries},
                      {"matched", summary.matched},
                      {"mismatched", summary.mismatched},
                      {"not_quantized", summary.not_quantized},
                      {"identified_ops", int8::op_count()}};
  } else if (mode == Mode::calibration || calibration::active()) {
    status["int8"] = {{"calibrating", calibration::active()},
                      {"identified_ops", int8::op_count()}};
  }
  status["strict"] = settings.strict;
  status["verbose"] = settings.verbose;
  status["pid"] = static_cast<long>(getpid());
  nlohmann::json ops = nlohmann::json::object();
  for (const OpStats* stats : all_op_stats()) ops[stats->name()] = op_json(*stats);
  status["ops"] = ops;
  WeightCache::Stats cache = weight_cache().stats();
  status["weight_cache"] = {{"entries", cache.entries}, {"bytes", cache.bytes},
                            {"hits", cache.hits}, {"packs", cache.packs},
                            {"unversioned_packs", cache.unversioned_packs}};
  BufferPoolStats buffers = buffer_pool_stats();
  status["buffer_cache"] = {{"limit_bytes", buffers.limit},
                            {"serves_all_cpu_tensors", serves_all_cpu_tensors()},
                            {"cached_bytes", buffers.cached_bytes},
                            {"cached_buffers", buffers.cached_buffers},
                            {"in_use_bytes", buffers.in_use_bytes},
                            {"reused", buffers.reused},
                            {"allocated", buffers.allocated}};
  nlohmann::json table = nlohmann::json::object();
  for (const TableEntry& entry : override_table()) table[entry.op] = policy_name(entry.policy);
  status["policy"] = table;
  nlohmann::json kept = nlohmann::json::array();
  for (const OpStats* stats : all_op_stats())
    if (stats->keep_fp32) kept.push_back(stats->name());
  status["keep_fp32"] = kept;
  return status.dump();
}

void reset_stats() { reset_all_op_stats(); }

int64_t clear_weight_cache() {
  const auto entries = static_cast<int64_t>(weight_cache().stats().entries);
  weight_cache().clear();
  return entries;
}

std::string banner_text() {
  const Settings& settings = runtime_settings();
  std::string text = std::string("ipex-shim ") + IPEX_SHIM_VERSION + ": mode " +
                     mode_name(settings.mode);
  if (!mode_implemented(settings.mode)) {
    text += " (not available yet in this version: every op runs on stock PyTorch)";
  }
  text += ", config " + (settings.config_path.empty() ? std::string("none") : settings.config_path);
  text += ", threads " + std::to_string(settings.num_threads) + " (" + threads_origin(settings) + ")";
  text += std::string(", fusion ") + (settings.fusion ? "on" : "off");
  if (settings.strict) text += ", strict";
  text += ", cpu: " + cpu_feature_summary(cpu_features());
  text += ", oneDNN " + onednn_version() + " (" + onednn_isa() + ")";
  const nlohmann::json plan = cpu_plan();
  for (const char* mode : {"bf16", "int8"})
    text += std::string("; ") + mode + " mode: " + plan[mode].get<std::string>();
  text += ", " + plan["int8_fallback"].get<std::string>();
  return text;
}

std::vector<std::string> summary_lines() {
  std::vector<std::string> lines;
  lines.push_back("summary for pid " + std::to_string(getpid()) + ", mode " +
                  mode_name(runtime_settings().mode) + ": calls per op and path");
  char buffer[512];
  std::snprintf(buffer, sizeof(buffer), "  %-24s %10s %12s %12s %12s %14s %16s %8s %10s %10s  %s",
                "op", "stock", "onednn_fp32", "onednn_bf16", "onednn_int8", "autograd_bf16",
                "autograd_shim", "fused", "observed", "composed", "fallback reasons");
  lines.push_back(buffer);
  for (const OpStats* stats : all_op_stats()) {
    if (stats->total() == 0) continue;
    std::string reasons;
    for (int r = 1; r < kFallbackCount; ++r) {
      uint64_t calls = stats->fallbacks(static_cast<Fallback>(r));
      if (calls == 0) continue;
      if (!reasons.empty()) reasons += "; ";
      reasons += std::string(fallback_name(static_cast<Fallback>(r))) + ": " + std::to_string(calls);
    }
    std::snprintf(buffer, sizeof(buffer),
                  "  %-24s %10llu %12llu %12llu %12llu %14llu %16llu %8llu %10llu %10llu  %s",
                  stats->name().c_str(),
                  static_cast<unsigned long long>(stats->calls(Path::stock)),
                  static_cast<unsigned long long>(stats->calls(Path::onednn_fp32)),
                  static_cast<unsigned long long>(stats->calls(Path::onednn_bf16)),
                  static_cast<unsigned long long>(stats->calls(Path::onednn_int8)),
                  static_cast<unsigned long long>(stats->calls(Path::autograd_bf16)),
                  static_cast<unsigned long long>(stats->calls(Path::autograd_shim)),
                  static_cast<unsigned long long>(stats->calls(Path::fused)),
                  static_cast<unsigned long long>(stats->calls(Path::observed)),
                  static_cast<unsigned long long>(stats->calls(Path::composed)),
                  reasons.c_str());
    lines.push_back(buffer);
  }
  if (lines.size() == 2) lines.push_back("  (no intercepted op was called)");
  WeightCache::Stats cache = weight_cache().stats();
  lines.push_back("packed weights: " + std::to_string(cache.entries) + " entries, " +
                  std::to_string(cache.bytes / 1024) + " KiB, " + std::to_string(cache.packs) +
                  " packs, " + std::to_string(cache.hits) + " reuses");
  return lines;
}

}  // namespace ipex_shim
