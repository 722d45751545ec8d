// The one call between the preloaded bootstrap (no libtorch) and the core (libtorch): a C
// interface, so that the two libraries share no C++ types across the boundary. Every field
// of Settings crosses it (tests/unit/settings_test.cpp checks the round trip).
#pragma once

#include "shim/settings.h"

extern "C" {

struct IpexShimCoreSettings {
  int mode;  // ipex_shim::Mode
  const char* config_path;  // "" when unset
  int verbose;
  int fusion;
  int strict;
  const char* int8_algorithm;
  const char* int8_granularity;
  double int8_min_sqnr_db;
  const char* int8_fallback;
  long buffer_cache_mb;
  int num_threads;
  int threads_from_env;
  int bf16_emulation;
};

// Filled by the core: what the bootstrap calls at the start of every new thread.
struct IpexShimCoreHooks {
  void (*on_thread_start)(void);
};

// Returns 0 when the core is running; otherwise it has said why and left torch untouched.
typedef int (*IpexShimCoreStartFn)(const IpexShimCoreSettings* settings,
                                   IpexShimCoreHooks* hooks);
}

#define IPEX_SHIM_CORE_START_SYMBOL "ipex_shim_core_start"
#define IPEX_SHIM_CORE_FILE_NAME "libipex_shim_core.so"

namespace ipex_shim {

inline IpexShimCoreSettings to_core_settings(const Settings& settings) {
  return {static_cast<int>(settings.mode), settings.config_path.c_str(), settings.verbose,
          settings.fusion ? 1 : 0, settings.strict ? 1 : 0, settings.int8_algorithm.c_str(),
          settings.int8_granularity.c_str(), settings.int8_min_sqnr_db,
          settings.int8_fallback.c_str(), settings.buffer_cache_mb,
          settings.num_threads,
          settings.threads_from_env ? 1 : 0,
          settings.bf16_emulation ? 1 : 0};
}

inline Settings from_core_settings(const IpexShimCoreSettings& core) {
  Settings settings;
  settings.mode = static_cast<Mode>(core.mode);
  settings.config_path = core.config_path ? core.config_path : "";
  settings.verbose = core.verbose;
  settings.fusion = core.fusion != 0;
  settings.strict = core.strict != 0;
  if (core.int8_algorithm) settings.int8_algorithm = core.int8_algorithm;
  if (core.int8_granularity) settings.int8_granularity = core.int8_granularity;
  settings.int8_min_sqnr_db = core.int8_min_sqnr_db;
  if (core.int8_fallback) settings.int8_fallback = core.int8_fallback;
  settings.buffer_cache_mb = core.buffer_cache_mb;
  settings.num_threads = core.num_threads;
  settings.threads_from_env = core.threads_from_env != 0;
  settings.bf16_emulation = core.bf16_emulation != 0;
  return settings;
}

}  // namespace ipex_shim
