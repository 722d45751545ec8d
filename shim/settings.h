// The environment table: every variable ipex-shim reads, its default, its allowed values
// and a one-line doc, in one place. The README's table lists the same rows in the same
// order. Parsing is strict: a value outside the allowed set is reported once, naming the
// variable, the value and what is allowed, and the default is used instead.
//
// This file is torch-free: the preloaded bootstrap parses the environment before libtorch
// is in the process and hands the result to the core.
#pragma once

#include <string>
#include <vector>

namespace ipex_shim {

enum class Mode {
  off,          // nothing registered; the program runs exactly as without the preload
  fp32,         // own fp32 oneDNN kernels (packed weights, fusion), fp32 numerics
  bf16,         // auto-mixed precision: heavy ops in BF16, results returned in fp32
  calibration,  // fp32 results, observe every quantisable op, write IPEX_CONFIG at exit
  int8,         // apply the INT8 config read from IPEX_CONFIG
};

const char* mode_name(Mode mode);

struct Settings {
  Mode mode = Mode::off;
  std::string config_path;  // IPEX_CONFIG; empty when unset
  int verbose = 0;          // IPEX_VERBOSE: 0 quiet, 1 banner + exit summary, 2 per-op detail
  bool fusion = true;       // IPEX_FUSION
  bool strict = false;      // IPEX_STRICT: a bad IPEX_CONFIG stops the program
  std::string int8_algorithm = "mse";            // IPEX_INT8_ALGORITHM
  std::string int8_granularity = "per_channel";  // IPEX_INT8_GRANULARITY
  double int8_min_sqnr_db = 15.0;                // IPEX_INT8_MIN_SQNR
  // IPEX_INT8_FALLBACK: the precision int8 mode gives an op its config leaves out of INT8
  // (`quantized: false`): "bf16" where bf16 mode runs BF16 on this CPU, else "fp32".
  std::string int8_fallback = "bf16";
  bool bf16_emulation = false;  // IPEX_BF16_EMULATION: BF16 kernels even without native BF16
  long buffer_cache_mb = 1024;  // IPEX_BUFFER_CACHE_MB: freed kernel buffers kept for reuse
  int num_threads = 0;      // OMP_NUM_THREADS when set and valid, else CPUs in the affinity mask
  bool threads_from_env = false;  // whether OMP_NUM_THREADS decided num_threads
};

// One row of the environment table, for documentation (README, --help, verbose banner).
struct EnvVar {
  const char* name;
  const char* default_value;
  const char* allowed;
  const char* doc;
};

const std::vector<EnvVar>& environment_table();

// Reads a variable; a test passes its own lookup instead of the process environment.
using EnvLookup = const char* (*)(const char* name);

// Parses the table from `lookup`. Every problem is appended to `problems` as one line
// ("IPEX_MODE='fast' is not valid (allowed: off, fp32, ...); using 'off'").
Settings parse_settings(EnvLookup lookup, int cpus_in_affinity_mask,
                        std::vector<std::string>* problems);

// Number of CPUs this process may run on (sched_getaffinity), at least 1.
int cpus_in_affinity_mask();

}  // namespace ipex_shim
