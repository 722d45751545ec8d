#include "shim/core_start.h"

#include <ATen/Parallel.h>
#include <dnnl.h>

#include <cstdlib>
#include <exception>
#include <mutex>

#include "config/float_mode_config.h"
#include "config/json_file.h"
#include "kernels/buffer_pool.h"
#include "kernels/onednn_context.h"
#include "shim/dispatch_key.h"
#include "shim/fusion.h"
#include "shim/int8_calibration.h"
#include "shim/int8_inference.h"
#include "shim/log.h"
#include "shim/mode_control.h"
#include "shim/registration.h"
#include "shim/runtime.h"
#include "shim/status.h"

namespace ipex_shim {
namespace {

Settings& settings_storage() {
  static Settings* settings = new Settings();
  return *settings;
}

std::atomic<bool> g_started{false};
std::atomic<bool> g_running{false};
std::atomic<bool> g_threads_set{false};

std::string& config_state_storage() {
  static std::string* state = new std::string("none");
  return *state;
}

void enable_in_new_thread() noexcept {
  try {
    enable_in_this_thread();
  } catch (...) {
    // The thread runs stock; nothing else to do.
  }
}

// The shim stays off in this process: says why once, and registers the status op alone
// (unless the full set is there already) so that a program asking is told why. Never throws.
int refuse(const std::string& why) noexcept {
  try {
    log_line(Severity::error, why + "; the shim stays off (running stock PyTorch)");
    set_refusal(why);
  } catch (...) {
  }
  register_refused_status();
  return 1;
}

void print_summary_at_exit() {
  try {
    for (const std::string& line : summary_lines()) log_line(Severity::info, line);
  } catch (...) {
  }
}

// A problem with the user's input: said once; with IPEX_STRICT=1 the run stops here, as the
// user asked, instead of going on without the input.
void input_problem(const Settings& settings, const std::string& text) {
  log_line(settings.strict ? Severity::error : Severity::warning, text);
  if (settings.strict) {
    log_line(Severity::error, "IPEX_STRICT=1: stopping (exit code 2)");
    std::_Exit(2);
  }
}

// IPEX_CONFIG in fp32/bf16 modes: optional overrides (config/float_mode_config.h).
void apply_float_mode_config(Settings& settings) {
  if (settings.config_path.empty()) return;
  const std::string where = "IPEX_CONFIG=" + settings.config_path;
  JsonFile file = read_json_file(settings.config_path);
  if (!file.ok) {
    input_problem(settings, where + ": " + file.error + (settings.strict ? "" : "; running without it"));
    set_config_state("not used: " + file.error);
    return;
  }
  std::vector<std::string> known_ops;
  for (const TableEntry& entry : override_table()) known_ops.push_back(entry.op);
  FloatModeConfig config;
  std::vector<std::string> problems;
  const bool usable = parse_float_mode_config(file.value, known_ops, &config, &problems);
  for (const std::string& problem : problems) {
    const bool whole_file_dropped = !usable && !settings.strict;
    input_problem(settings, where + ": " + problem + (whole_file_dropped ? "; running without it" : ""));
  }
  if (!usable) {
    set_config_state("not used: " + problems.front());
    return;
  }
  for (const std::string& op : config.keep_fp32) op_stats(op).keep_fp32 = true;
  if (config.fusion) settings.fusion = *config.fusion;
  set_config_state(problems.empty() ? "applied" : "applied in part (" + std::to_string(problems.size()) + " problems reported)");
}

}  // namespace

const Settings& runtime_settings() { return settings_storage(); }
static std::mutex g_config_state_mutex;
std::string config_state() {
  std::lock_guard<std::mutex> lock(g_config_state_mutex);
  return config_state_storage();
}
void set_config_state(const std::string& state) {
  std::lock_guard<std::mutex> lock(g_config_state_mutex);
  config_state_storage() = state;
}
void set_runtime_settings(const Settings& settings) { settings_storage() = settings; }

const std::vector<Mode>& implemented_modes() {
  static const std::vector<Mode> modes = {Mode::fp32, Mode::bf16, Mode::calibration,
                                          Mode::int8};
  return modes;
}

bool mode_implemented(Mode mode) {
  for (Mode implemented : implemented_modes())
    if (implemented == mode) return true;
  return false;
}

namespace {
Bf16Decision g_bf16_decision;
}  // namespace

const Bf16Decision& bf16_decision() { return g_bf16_decision; }
void set_bf16_decision(Bf16Decision decision) { g_bf16_decision = std::move(decision); }

namespace {
bool g_int8_fallback_bf16 = false;
}  // namespace

bool int8_fallback_bf16() { return g_int8_fallback_bf16; }
void set_int8_fallback_bf16(bool bf16) { g_int8_fallback_bf16 = bf16; }

namespace {

// oneDNN's ISA values are sets of feature bits: one ISA includes another when it has all of
// its bits.
bool onednn_isa_includes(dnnl_cpu_isa_t level) {
  const unsigned effective = static_cast<unsigned>(dnnl_get_effective_cpu_isa());
  return (effective & static_cast<unsigned>(level)) == static_cast<unsigned>(level);
}

}  // namespace

bool onednn_reaches_bf16() {
  if (onednn_isa_includes(dnnl_cpu_isa_avx512_core_bf16)) return true;
#if DNNL_VERSION_MAJOR >= 3
  if (onednn_isa_includes(dnnl_cpu_isa_avx2_vnni_2)) return true;  // avx_ne_convert
#endif
  return false;
}

bool onednn_has_bf16_kernels() {
  if (onednn_isa_includes(dnnl_cpu_isa_avx512_core)) return true;  // emulated below avx512_bf16
  return onednn_reaches_bf16();
}

bool onednn_reaches_int8() {
  return onednn_isa_includes(dnnl_cpu_isa_avx512_core_vnni) ||
         onednn_isa_includes(dnnl_cpu_isa_avx2_vnni);
}

bool int8_sum_reads_addends_as_they_are() {
  static const bool as_they_are = onednn_isa_includes(dnnl_cpu_isa_avx512_core_bf16);
  return as_they_are;
}

bool onednn_reaches_amx() {
  // Asked on every convolution call; oneDNN fixes its ISA at first use, so once is enough.
  static const bool amx = onednn_isa_includes(dnnl_cpu_isa_avx512_core_amx);
  return amx;
}

std::string onednn_version() {
  const dnnl_version_t* version = dnnl_version();
  return std::to_string(version->major) + "." + std::to_string(version->minor) + "." +
         std::to_string(version->patch);
}

std::string onednn_isa() {
  switch (dnnl_get_effective_cpu_isa()) {
    case dnnl_cpu_isa_sse41: return "sse41";
    case dnnl_cpu_isa_avx: return "avx";
    case dnnl_cpu_isa_avx2: return "avx2";
    case dnnl_cpu_isa_avx2_vnni: return "avx2_vnni";
    case dnnl_cpu_isa_avx512_core: return "avx512_core";
    case dnnl_cpu_isa_avx512_core_vnni: return "avx512_core_vnni";
    case dnnl_cpu_isa_avx512_core_bf16: return "avx512_core_bf16";
    case dnnl_cpu_isa_avx512_core_amx: return "avx512_core_amx";
    default: return "other";
  }
}

void use_all_threads() {
  // DESIGN.md fact 7: torch 1.13 defaults to half the hardware threads and oneDNN follows
  // OpenMP's setting, so use every CPU we may run on unless the user chose. Not before a
  // mode that runs the shim's kernels is in effect: calibration keeps stock's thread count
  // (its results must be bit-identical to stock's, and a reduction split over more threads
  // rounds differently), and off leaves the program as it was.
  const Settings& settings = runtime_settings();
  if (settings.threads_from_env || g_threads_set.exchange(true)) return;
  at::set_num_threads(settings.num_threads);
}

bool core_running() { return g_running.load(); }

int start_core(const Settings& settings, IpexShimCoreHooks* hooks) {
  try {
    if (g_started.exchange(true)) return g_running ? 0 : 1;  // the first start decided
    set_runtime_settings(settings);
    init_process_mode(settings.mode);
    std::string conflict = choose_keys();
    if (!conflict.empty()) return refuse(conflict);
    // A oneDNN whose reorders lose values would make every kernel of the shim wrong: stock
    // PyTorch runs instead (checked in every mode, which may change at run time).
    if (std::string broken = onednn_reorder_self_check(); !broken.empty()) {
      return refuse("oneDNN " + onednn_version() + " lost values in a reorder on this CPU (" +
                    broken + "), so the shim's kernels would give wrong results");
    }
    if (uses_float_kernels(settings.mode)) use_all_threads();

    set_buffer_cache_limit(static_cast<size_t>(settings.buffer_cache_mb) << 20);
    // Stock ops' large results (and in training autograd's saved activations and the
    // gradients) come from the pool too, their pages mapped once instead of on every pass.
    if (settings.buffer_cache_mb > 0 && !serve_all_cpu_tensors())
      log_line(Severity::warning,
               "another CPU allocator outranks the shim's buffer pool; stock ops keep "
               "PyTorch's allocator");
    set_bf16_decision(decide_bf16(cpu_features(), onednn_reaches_bf16(), settings.bf16_emulation));
    set_int8_fallback_bf16(settings.int8_fallback == "bf16" && bf16_decision().run_bf16);
    if (settings.mode == Mode::bf16 && !bf16_decision().native) {
      log_line(Severity::warning, std::string("IPEX_MODE=bf16 runs ") + bf16_decision().why);
    }
    register_introspection();
    register_overrides();
    if (settings.mode == Mode::fp32 || settings.mode == Mode::bf16)
      apply_float_mode_config(settings_storage());
    if (settings.mode == Mode::int8)
      set_config_state(int8::load_config(settings, &input_problem));
    if (settings.mode == Mode::calibration) {
      std::string why;
      if (calibration::start(settings, &why)) {
        set_config_state("to be written at exit");
      } else {
        input_problem(settings, "calibration does not start: " + why +
                                    (settings.strict ? "" : "; the program runs on stock PyTorch"));
        set_config_state("not used: " + why);
      }
    }
    // Installed in every mode: the mode may change at run time (shim/mode_control.h), and
    // the observer key is enabled only while a fused prediction is open.
    {
      std::string why;
      if (runtime_settings().fusion) {
        if (fusion::install(&why)) {
          register_observed_overrides();
        } else {
          log_line(Severity::warning, "fusion is off: " + why);
        }
      }
    }
    enable_in_this_thread();
    hooks->on_thread_start = &enable_in_new_thread;

    OpStats::set_detail(settings.verbose >= 2);
    if (settings.verbose >= 1) {
      log_line(Severity::info, banner_text());
      std::atexit(&print_summary_at_exit);
    }
    if (settings.mode != Mode::off && !mode_implemented(settings.mode) && settings.verbose == 0) {
      log_limited("mode-not-available", 1, Severity::warning,
                  std::string("IPEX_MODE=") + mode_name(settings.mode) +
                      " is not available yet in this version; every op runs on stock PyTorch");
    }
    g_running = true;
    return 0;
  } catch (const std::exception& error) {
    return refuse(std::string("could not start: ") + error.what());
  } catch (...) {
    return refuse("could not start (unknown error)");
  }
}

}  // namespace ipex_shim
