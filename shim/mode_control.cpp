#include "shim/mode_control.h"

#include <c10/util/Exception.h>

#include <mutex>

#include "shim/core_start.h"
#include "shim/dispatch_key.h"
#include "shim/int8_calibration.h"
#include "shim/int8_inference.h"
#include "shim/log.h"
#include "shim/runtime.h"

namespace ipex_shim {
namespace detail {
std::atomic<int> g_process_mode{static_cast<int>(Mode::off)};
}  // namespace detail

namespace {

std::atomic<int> g_source{static_cast<int>(ModeSource::environment)};

// Making a mode ready is rare and may read a file: one at a time.
std::mutex& prepare_mutex() {
  static std::mutex* mutex = new std::mutex();
  return *mutex;
}

std::vector<int>& scope_stack() {
  thread_local std::vector<int> stack;
  return stack;
}

std::string prepare(Mode mode, const std::string& config) {
  if (!mode_implemented(mode) && mode != Mode::off)
    return std::string("mode '") + mode_name(mode) + "' is not available in this version";
  if (!config.empty() && mode != Mode::int8)
    return std::string("a config is applied only in int8 mode (mode '") + mode_name(mode) +
           "' was given one); calibration's observations are written by save_config(path)";
  std::lock_guard<std::mutex> lock(prepare_mutex());
  if (uses_float_kernels(mode)) use_all_threads();
  switch (mode) {
    case Mode::int8: {
      if (config.empty()) {
        if (int8::loaded_path().empty())
          return "int8 mode needs a config: pass the file calibration wrote";
        return {};
      }
      if (int8::in_use(config)) return {};  // a scope entered per batch reads it once
      std::string error;
      const std::string state = int8::apply_config_file(config, &error);
      if (error.empty()) set_config_state(state);
      return error;
    }
    case Mode::calibration:
      calibration::start_observing(runtime_settings());
      return {};
    case Mode::bf16:
      if (!bf16_decision().native)
        log_limited("bf16-not-native", 1, Severity::warning,
                    std::string("bf16 mode runs ") + bf16_decision().why);
      return {};
    default:
      return {};
  }
}

}  // namespace

const char* mode_source_name(ModeSource source) {
  return source == ModeSource::api ? "api" : "environment";
}

void init_process_mode(Mode mode) {
  detail::g_process_mode.store(static_cast<int>(mode));
  g_source.store(static_cast<int>(ModeSource::environment));
}

bool parse_mode(const std::string& text, Mode* mode) {
  for (Mode candidate : {Mode::off, Mode::fp32, Mode::bf16, Mode::calibration, Mode::int8}) {
    if (text == mode_name(candidate)) {
      *mode = candidate;
      return true;
    }
  }
  if (text == "inference") {
    *mode = Mode::int8;
    return true;
  }
  return false;
}

std::string set_process_mode(Mode mode, const std::string& config, Mode* previous) {
  std::string why = prepare(mode, config);
  if (!why.empty()) return why;
  *previous = static_cast<Mode>(detail::g_process_mode.exchange(static_cast<int>(mode)));
  g_source.store(static_cast<int>(ModeSource::api));
  return {};
}

std::string enter_thread_mode(Mode mode, const std::string& config, int64_t* depth) {
  std::string why = prepare(mode, config);
  if (!why.empty()) return why;
  std::vector<int>& stack = scope_stack();
  stack.push_back(static_cast<int>(mode));
  detail::t_scope_mode = stack.back();
  *depth = static_cast<int64_t>(stack.size());
  return {};
}

std::string exit_thread_mode(int64_t depth) {
  std::vector<int>& stack = scope_stack();
  if (depth < 1 || depth != static_cast<int64_t>(stack.size())) {
    return "scope " + std::to_string(depth) + " is not the innermost open scope of this thread (" +
           std::to_string(stack.size()) + " open); scopes close innermost first";
  }
  stack.pop_back();
  detail::t_scope_mode = stack.empty() ? -1 : stack.back();
  return {};
}

Mode process_mode() { return static_cast<Mode>(detail::g_process_mode.load()); }

ModeSource process_mode_source() { return static_cast<ModeSource>(g_source.load()); }

std::vector<Mode> thread_scopes() {
  std::vector<Mode> modes;
  for (int mode : scope_stack()) modes.push_back(static_cast<Mode>(mode));
  return modes;
}

}  // namespace ipex_shim

namespace ipex_shim::api {
namespace {

const char* kAllowedModes = "off, fp32, bf16, calibration, int8 (or inference)";

Mode mode_argument(const std::string& text) {
  Mode mode;
  TORCH_CHECK(parse_mode(text, &mode), "ipex_shim: mode '", text, "' is not valid (allowed: ",
              kAllowedModes, "); the mode in effect is unchanged");
  return mode;
}

}  // namespace

std::string set_mode(std::string mode, std::string config) {
  Mode previous = Mode::off;
  std::string why = set_process_mode(mode_argument(mode), config, &previous);
  TORCH_CHECK(why.empty(), "ipex_shim: cannot set mode '", mode, "': ", why,
              "; the mode in effect is unchanged");
  return mode_name(previous);
}

int64_t enter_mode(std::string mode, std::string config) {
  int64_t depth = 0;
  std::string why = enter_thread_mode(mode_argument(mode), config, &depth);
  TORCH_CHECK(why.empty(), "ipex_shim: cannot enter mode '", mode, "': ", why,
              "; the mode in effect is unchanged");
  return depth;
}

void exit_mode(int64_t depth) {
  std::string why = exit_thread_mode(depth);
  TORCH_CHECK(why.empty(), "ipex_shim: ", why);
}

void enable_thread() { enable_in_this_thread(); }

std::string save_config(std::string path) {
  TORCH_CHECK(!path.empty(), "ipex_shim: save_config needs a path");
  std::string said;
  const bool written = calibration::save_to(path, &said);
  TORCH_CHECK(written, "ipex_shim: ", said);
  // The file at that path is new: int8 mode reads it again when asked for it.
  int8::forget_path(path);
  log_line(Severity::info, "calibration: " + said);
  return said;
}

std::string load_config(std::string path) {
  TORCH_CHECK(!path.empty(), "ipex_shim: load_config needs a path");
  std::lock_guard<std::mutex> lock(prepare_mutex());
  std::string error;
  const std::string state = int8::apply_config_file(path, &error);
  TORCH_CHECK(error.empty(), "ipex_shim: cannot use the INT8 config: ", error,
              "; the config in use is unchanged");
  set_config_state(state);
  return state;
}

void reset_calibration() { calibration::reset_observations(); }

}  // namespace ipex_shim::api
