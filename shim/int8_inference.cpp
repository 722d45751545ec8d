#include "shim/int8_inference.h"

#include <dnnl.h>

#include <functional>
#include <mutex>
#include <vector>

#include "config/int8_config.h"
#include "config/int8_match.h"
#include "config/json_file.h"
#include "shim/log.h"
#include "shim/runtime.h"

namespace ipex_shim::int8 {
namespace {

struct Resolved {
  bool done = false;
  bool usable = false;
  Fallback why = Fallback::none;
  Int8Spec spec;
  std::vector<float> input_scales;
  std::vector<bool> input_uint8;
  float output_scale = 0.f;
  bool output_uint8 = false;
};

struct State {
  std::mutex mutex;
  Int8Matcher matcher;  // the loaded config
  bool loaded = false;
  std::string where;   // "IPEX_CONFIG=<path>"
  std::string path;    // the config in use; empty before one is loaded
  bool rewritten = false;  // the file at `path` was written since it was read
  std::vector<Resolved> resolved;  // by op index
  Int8Summary summary;
};

State& state() {
  static State* instance = new State();
  return *instance;
}

// Decides, once per op, which entry it uses; with st.mutex held.
Resolved resolve(State& st, int64_t index) {
  Resolved result;
  result.done = true;
  result.why = Fallback::config_mismatch;
  const OpInfo info = op_info(index);
  if (!st.loaded) return result;  // said at start
  std::string why;
  const Int8Entry* found = st.matcher.match(index, kind_name(info.kind), info.key, &why);
  if (!found) {
    log_limited("int8-mismatch", 20, Severity::warning,
                st.where + ": " + why + "; this op runs in fp32");
    ++st.summary.mismatched;
    return result;
  }
  const Int8Entry& entry = *found;
  ++st.summary.matched;
  if (!entry.quantized) {
    ++st.summary.not_quantized;
    result.why = Fallback::not_quantized;
    return result;
  }
  result.usable = true;
  result.why = Fallback::none;
  result.spec.input_scale = static_cast<float>(entry.inputs_scale[0]);
  result.spec.input_uint8 =
      !entry.inputs_uint8_used.empty() && entry.inputs_uint8_used[0];
  result.spec.weight_per_channel = entry.weight_granularity == Granularity::per_channel;
  if (!entry.outputs_scale.empty()) {
    result.output_scale = static_cast<float>(entry.outputs_scale[0]);
    result.output_uint8 = !entry.outputs_uint8_used.empty() && entry.outputs_uint8_used[0];
  }
  for (size_t i = 0; i < entry.inputs_scale.size(); ++i) {
    result.input_scales.push_back(static_cast<float>(entry.inputs_scale[i]));
    result.input_uint8.push_back(i < entry.inputs_uint8_used.size() && entry.inputs_uint8_used[i]);
  }
  return result;
}

}  // namespace

namespace {

// Reads and installs the config at `path` for every thread, replacing the one in use.
// Returns the config state; a problem that leaves the file unused is the state's reason.
std::string install_config(const std::string& path, const std::function<void(const std::string&)>& report,
                           bool* used) {
  *used = false;
  const std::string where = "IPEX_CONFIG=" + path;
  JsonFile file = read_json_file(path);
  if (!file.ok) {
    report(where + ": " + file.error + "; every op runs in fp32");
    return "not used: " + file.error;
  }
  std::vector<std::string> problems;
  Int8Config config;
  if (!parse_int8_config(file.value, &config, &problems)) {
    for (const std::string& problem : problems) report(where + ": " + problem);
    return "not used: " + (problems.empty() ? std::string("unusable") : problems.front());
  }
  for (const std::string& problem : problems) report(where + ": " + problem);
  State& st = state();
  std::lock_guard<std::mutex> lock(st.mutex);
  st.where = where;
  st.path = path;
  st.rewritten = false;
  st.summary = Int8Summary();
  st.summary.entries = static_cast<int64_t>(config.entries.size());
  st.matcher = Int8Matcher(std::move(config));
  st.loaded = true;
  // Entries stay (an op may be between its two lookups); each is decided again.
  for (Resolved& resolved : st.resolved) resolved = Resolved();
  *used = true;
  return problems.empty() ? "applied"
                          : "applied in part (" + std::to_string(problems.size()) +
                                " problems reported)";
}

}  // namespace

std::string load_config(const Settings& settings,
                        void (*report)(const Settings&, const std::string&)) {
  if (settings.config_path.empty()) {
    report(settings, "IPEX_MODE=int8 needs IPEX_CONFIG=<file written by IPEX_MODE=calibration>; "
                     "every op runs in fp32");
    return "not used: IPEX_CONFIG is not set";
  }
  bool used = false;
  return install_config(
      settings.config_path, [&](const std::string& text) { report(settings, text); }, &used);
}

std::string apply_config_file(const std::string& path, std::string* error) {
  // A file that is not used is refused by the caller's error alone; the problems of one
  // applied in part are said, as at start.
  std::vector<std::string> problems;
  bool used = false;
  std::string state_text = install_config(
      path, [&](const std::string& text) { problems.push_back(text); }, &used);
  if (!used) {
    *error = state_text.substr(std::string("not used: ").size()) + " (" + path + ")";
    return state_text;
  }
  for (const std::string& problem : problems) log_line(Severity::warning, problem);
  return state_text;
}

void forget_path(const std::string& path) {
  State& st = state();
  std::lock_guard<std::mutex> lock(st.mutex);
  if (st.path == path) st.rewritten = true;
}

bool in_use(const std::string& path) {
  State& st = state();
  std::lock_guard<std::mutex> lock(st.mutex);
  return st.path == path && !st.rewritten;
}

std::string loaded_path() {
  State& st = state();
  std::lock_guard<std::mutex> lock(st.mutex);
  return st.path;
}

bool spec_for(int64_t index, Int8Spec* spec, Fallback* why) {
  if (index == kNoOp) {
    *why = Fallback::config_mismatch;
    return false;
  }
  State& st = state();
  std::lock_guard<std::mutex> lock(st.mutex);
  if (static_cast<int64_t>(st.resolved.size()) <= index) st.resolved.resize(index + 1);
  Resolved& resolved = st.resolved[index];
  if (!resolved.done) resolved = resolve(st, index);
  *why = resolved.why;
  if (resolved.usable) *spec = resolved.spec;
  return resolved.usable;
}

bool output_quantisation(int64_t index, float* scale, bool* uint8) {
  Int8Spec ignored;
  Fallback why;
  if (!spec_for(index, &ignored, &why)) return false;
  State& st = state();
  std::lock_guard<std::mutex> lock(st.mutex);
  // A config installed by another thread since spec_for() leaves the entry undecided.
  if (static_cast<int64_t>(st.resolved.size()) <= index || !st.resolved[index].usable) return false;
  const Resolved& resolved = st.resolved[index];
  if (!(resolved.output_scale > 0.f)) return false;
  *scale = resolved.output_scale;
  *uint8 = resolved.output_uint8;
  return true;
}

bool matmul_spec_for(int64_t index, Int8MatmulSpec* spec, Fallback* why) {
  Int8Spec first;
  if (!spec_for(index, &first, why)) return false;
  State& st = state();
  std::lock_guard<std::mutex> lock(st.mutex);
  // A config installed by another thread since spec_for() leaves the entry undecided.
  if (static_cast<int64_t>(st.resolved.size()) <= index || !st.resolved[index].usable ||
      st.resolved[index].input_scales.size() < 2) {
    *why = Fallback::config_mismatch;
    return false;
  }
  const Resolved& resolved = st.resolved[index];
  spec->a_scale = resolved.input_scales[0];
  spec->a_uint8 = resolved.input_uint8[0];
  // B is quantised as s8: a scale calibrated for u8 (255 / max) becomes 127 / max.
  spec->b_scale = resolved.input_uint8[1] ? resolved.input_scales[1] * 127.f / 255.f
                                          : resolved.input_scales[1];
  return true;
}

Int8Summary int8_summary() {
  State& st = state();
  std::lock_guard<std::mutex> lock(st.mutex);
  return st.summary;
}

}  // namespace ipex_shim::int8
