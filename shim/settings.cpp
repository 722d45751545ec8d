#include "shim/settings.h"

#include <sched.h>

#include <cctype>
#include <cerrno>
#include <cstdlib>
#include <cstring>

namespace ipex_shim {

const char* mode_name(Mode mode) {
  switch (mode) {
    case Mode::off: return "off";
    case Mode::fp32: return "fp32";
    case Mode::bf16: return "bf16";
    case Mode::calibration: return "calibration";
    case Mode::int8: return "int8";
  }
  return "?";
}

const std::vector<EnvVar>& environment_table() {
  static const std::vector<EnvVar> table = {
      {"IPEX_MODE", "off", "off, fp32, bf16, calibration, int8 (inference = int8)",
       "what the shim does; off registers nothing"},
      {"IPEX_CONFIG", "(unset)", "a file path",
       "JSON config: written by calibration, read by int8, optional overrides for fp32/bf16"},
      {"IPEX_VERBOSE", "0", "0, 1, 2",
       "1: banner at load and per-op summary at exit on stderr; 2: also per-op detail"},
      {"IPEX_FUSION", "1", "0, 1", "0 turns off fusion of neighbouring ops"},
      {"IPEX_STRICT", "0", "0, 1",
       "1: a bad IPEX_CONFIG stops the program (exit code 2) instead of being ignored"},
      {"IPEX_INT8_ALGORITHM", "mse", "mse, min_max, percentile",
       "calibration: how activation ranges are taken; mse clips where the quantisation's "
       "squared error over all calls is smallest, min_max keeps the extremes (the seed's), "
       "percentile clips the rarest 0.01%"},
      {"IPEX_INT8_GRANULARITY", "per_channel", "per_channel, per_tensor",
       "calibration: how convolution and linear weights are quantised"},
      {"IPEX_INT8_MIN_SQNR", "15", "a number of dB (0 to 100)",
       "calibration: ops whose estimated INT8 signal-to-noise is lower are written quantized: false"},
      {"IPEX_INT8_FALLBACK", "bf16", "bf16, fp32",
       "int8 mode: the precision of ops the config leaves out of INT8 (quantized: false); bf16 "
       "runs them in BF16 where bf16 mode would (native BF16), else in fp32"},
      {"IPEX_BF16_EMULATION", "0", "0, 1",
       "bf16 mode on a CPU without native BF16: 0 runs the fp32 kernels (emulated BF16 is slower), "
       "1 runs BF16 anyway"},
      {"IPEX_BUFFER_CACHE_MB", "1024", "an integer from 0 to 1048576",
       "MiB of freed CPU tensor buffers (1 MiB and larger; the shim's kernels' and, in every mode "
       "but off, stock ops' too) kept for reuse (0: none kept, PyTorch's allocator left alone)"},
      {"OMP_NUM_THREADS", "(unset)", "a positive integer",
       "threads for the shim's kernels; unset: every CPU in the affinity mask"},
  };
  return table;
}

namespace {

struct ModeName {
  const char* text;
  Mode mode;
};

constexpr ModeName kModeNames[] = {
    {"off", Mode::off},          {"fp32", Mode::fp32},
    {"bf16", Mode::bf16},        {"calibration", Mode::calibration},
    {"int8", Mode::int8},        {"inference", Mode::int8},  // the seed's name for int8
};

// A value as it may appear in a message: control characters (a newline would split the
// message, an escape would drive the terminal) written as \xNN, and a long value cut short.
std::string shown(const char* value) {
  constexpr size_t kMaxShown = 80;
  std::string text;
  for (const char* c = value; *c != '\0'; ++c) {
    if (text.size() >= kMaxShown) return text + "...";
    const auto byte = static_cast<unsigned char>(*c);
    if (byte < 0x20 || byte == 0x7f) {
      static const char kHex[] = "0123456789abcdef";
      text += "\\x";
      text += kHex[byte >> 4];
      text += kHex[byte & 0xf];
    } else {
      text += *c;
    }
  }
  return text;
}

std::string invalid(const char* name, const char* value, const char* allowed,
                    const char* using_value) {
  return std::string(name) + "='" + shown(value) + "' is not valid (allowed: " + allowed +
         "); using " + using_value;
}

// Strict integer parse: the whole string, base 10, within [lo, hi].
bool parse_int(const char* text, long lo, long hi, long* out) {
  // strtol would skip leading blanks and a '+'; the table allows neither.
  if (text == nullptr || !(std::isdigit(static_cast<unsigned char>(*text)) || *text == '-'))
    return false;
  char* end = nullptr;
  errno = 0;
  long value = std::strtol(text, &end, 10);
  if (errno != 0 || *end != '\0' || value < lo || value > hi) return false;
  *out = value;
  return true;
}

bool parse_switch(EnvLookup lookup, const char* name, bool default_value,
                  std::vector<std::string>* problems) {
  const char* text = lookup(name);
  if (text == nullptr) return default_value;
  if (std::strcmp(text, "0") == 0) return false;
  if (std::strcmp(text, "1") == 0) return true;
  problems->push_back(invalid(name, text, "0, 1", default_value ? "1" : "0"));
  return default_value;
}

}  // namespace

Settings parse_settings(EnvLookup lookup, int cpus, std::vector<std::string>* problems) {
  Settings settings;

  if (const char* text = lookup("IPEX_MODE")) {
    bool known = false;
    for (const ModeName& entry : kModeNames) {
      if (std::strcmp(text, entry.text) == 0) {
        settings.mode = entry.mode;
        known = true;
      }
    }
    if (!known) {
      problems->push_back(invalid("IPEX_MODE", text,
                                  "off, fp32, bf16, calibration, int8, inference",
                                  "'off': the program runs without the shim"));
    }
  }

  if (const char* text = lookup("IPEX_CONFIG")) {
    if (*text == '\0') {
      problems->push_back("IPEX_CONFIG is set but empty; no config is used");
    } else {
      settings.config_path = text;
    }
  }

  if (const char* text = lookup("IPEX_VERBOSE")) {
    long level = 0;
    if (parse_int(text, 0, 2, &level)) {
      settings.verbose = static_cast<int>(level);
    } else {
      problems->push_back(invalid("IPEX_VERBOSE", text, "0, 1, 2", "0"));
    }
  }

  settings.fusion = parse_switch(lookup, "IPEX_FUSION", true, problems);
  settings.strict = parse_switch(lookup, "IPEX_STRICT", false, problems);

  if (const char* text = lookup("IPEX_INT8_ALGORITHM")) {
    if (std::strcmp(text, "min_max") == 0 || std::strcmp(text, "percentile") == 0 ||
        std::strcmp(text, "mse") == 0) {
      settings.int8_algorithm = text;
    } else {
      problems->push_back(
          invalid("IPEX_INT8_ALGORITHM", text, "mse, min_max, percentile", "mse"));
    }
  }
  if (const char* text = lookup("IPEX_INT8_GRANULARITY")) {
    if (std::strcmp(text, "per_channel") == 0 || std::strcmp(text, "per_tensor") == 0) {
      settings.int8_granularity = text;
    } else {
      problems->push_back(
          invalid("IPEX_INT8_GRANULARITY", text, "per_channel, per_tensor", "per_channel"));
    }
  }
  if (const char* text = lookup("IPEX_INT8_MIN_SQNR")) {
    char* end = nullptr;
    errno = 0;
    const double value = std::strtod(text, &end);
    const bool number = *text != '\0' && !std::isspace(static_cast<unsigned char>(*text)) &&
                        errno == 0 && *end == '\0';
    if (number && value >= 0.0 && value <= 100.0) {
      settings.int8_min_sqnr_db = value;
    } else {
      problems->push_back(invalid("IPEX_INT8_MIN_SQNR", text, "a number of dB from 0 to 100", "15"));
    }
  }

  if (const char* text = lookup("IPEX_INT8_FALLBACK")) {
    if (std::strcmp(text, "bf16") == 0 || std::strcmp(text, "fp32") == 0) {
      settings.int8_fallback = text;
    } else {
      problems->push_back(invalid("IPEX_INT8_FALLBACK", text, "bf16, fp32", "bf16"));
    }
  }

  settings.bf16_emulation = parse_switch(lookup, "IPEX_BF16_EMULATION", false, problems);

  if (const char* text = lookup("IPEX_BUFFER_CACHE_MB")) {
    long megabytes = 0;
    if (parse_int(text, 0, 1048576, &megabytes)) {
      settings.buffer_cache_mb = megabytes;
    } else {
      problems->push_back(invalid("IPEX_BUFFER_CACHE_MB", text, "an integer from 0 to 1048576",
                                  "1024"));
    }
  }

  settings.num_threads = cpus > 0 ? cpus : 1;
  if (const char* text = lookup("OMP_NUM_THREADS")) {
    // OpenMP also accepts a comma list for nested levels; the first entry is the outer one.
    std::string first(text, std::strcspn(text, ","));
    long threads = 0;
    if (parse_int(first.c_str(), 1, 4096, &threads)) {
      settings.num_threads = static_cast<int>(threads);
      settings.threads_from_env = true;
    } else {
      problems->push_back(invalid("OMP_NUM_THREADS", text, "a positive integer",
                                  (std::to_string(settings.num_threads) +
                                   " (the CPUs in the affinity mask)").c_str()));
    }
  }
  return settings;
}

int cpus_in_affinity_mask() {
  cpu_set_t mask;
  CPU_ZERO(&mask);
  if (sched_getaffinity(0, sizeof(mask), &mask) != 0) return 1;
  int count = CPU_COUNT(&mask);
  return count > 0 ? count : 1;
}

}  // namespace ipex_shim
