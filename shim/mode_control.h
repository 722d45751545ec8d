// The mode a call runs in, and changing it while the program runs.
//
// IPEX_MODE sets the process mode at start. The Python packages (shim/python/) change it
// later through torch.ops.ipex_shim: set_mode() changes the process mode, and
// enter_mode()/exit_mode() open and close a scope of the calling thread, which takes
// precedence over the process mode until it closes. Scopes nest; closing one restores the
// mode that was there before it. A call reads the mode once, at its start, so a change made
// by another thread takes effect from that thread's next call on.
//
// A mode is made ready before it first takes effect: int8 needs its config loaded
// (a new path replaces the config in use, for every thread; the path in use is not read
// again), calibration starts observing.
// A mode that cannot be made ready is refused with the reason and the mode in effect stays.
#pragma once

#include <atomic>
#include <cstdint>
#include <string>
#include <vector>

#include "shim/settings.h"

namespace ipex_shim {

namespace detail {
extern std::atomic<int> g_process_mode;
// The innermost open scope of this thread, or -1. Inline: every op call reads it.
inline thread_local int t_scope_mode = -1;
}  // namespace detail

// The mode of a call starting now on this thread.
inline Mode current_mode() {
  const int scoped = detail::t_scope_mode;
  return static_cast<Mode>(scoped >= 0 ? scoped
                                       : detail::g_process_mode.load(std::memory_order_relaxed));
}

enum class ModeSource { environment, api };
const char* mode_source_name(ModeSource source);

// At start, from the settings (IPEX_MODE).
void init_process_mode(Mode mode);

// Parses "off", "fp32", "bf16", "calibration", "int8" (and "inference" for int8); false
// for anything else.
bool parse_mode(const std::string& text, Mode* mode);

// Each returns empty when done, or why not (and nothing changed).
// `config`: for int8, the config file to apply (empty: the one already loaded); for
// calibration it must be empty (the observations are written by save_calibration()).
std::string set_process_mode(Mode mode, const std::string& config, Mode* previous);
std::string enter_thread_mode(Mode mode, const std::string& config, int64_t* depth);
// `depth` is what enter_thread_mode gave: scopes close innermost first.
std::string exit_thread_mode(int64_t depth);

Mode process_mode();
ModeSource process_mode_source();
// This thread's open scopes, outermost first.
std::vector<Mode> thread_scopes();

}  // namespace ipex_shim

namespace ipex_shim::api {

// torch.ops.ipex_shim's mode functions (registered in shim/registration.cpp). Each raises a
// RuntimeError that names the argument and the allowed values on bad input, and changes
// nothing then.
std::string set_mode(std::string mode, std::string config);  // returns the previous mode
int64_t enter_mode(std::string mode, std::string config);    // returns the scope's depth
void exit_mode(int64_t depth);
void enable_thread();                  // switches the shim on for the calling thread
std::string save_config(std::string path);  // calibration's observations, atomically
std::string load_config(std::string path);  // reads and applies an INT8 config now
void reset_calibration();

}  // namespace ipex_shim::api
