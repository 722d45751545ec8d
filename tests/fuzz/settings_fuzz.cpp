// Fuzzes the environment table's parsing (shim/settings.h) through a lookup that serves
// values taken from the input: its first two bytes say which of the table's variables are
// set, and the rest, split at NUL bytes (which an environment value cannot hold), gives
// their values in table order.
// Properties: every setting ends within its allowed range; a variable whose value is allowed
// is taken without a problem, any other value gives exactly one problem naming the variable;
// every problem is one printable line.
#include <cstdint>
#include <cstring>
#include <map>
#include <string>
#include <vector>

#include "shim/settings.h"
#include "tests/fuzz/fuzz_check.h"

namespace {

std::map<std::string, std::string>& environment() {
  static std::map<std::string, std::string> values;
  return values;
}

const char* lookup(const char* name) {
  auto found = environment().find(name);
  return found == environment().end() ? nullptr : found->second.c_str();
}

const char* value_of(const char* name) { return lookup(name); }

// A whole base-10 integer (an optional '-', then digits only) within [lo, hi].
bool whole_number(const char* text, long lo, long hi, long* out) {
  const char* digits = text[0] == '-' ? text + 1 : text;
  if (*digits == '\0') return false;
  for (const char* c = digits; *c; ++c) {
    if (*c < '0' || *c > '9') return false;
  }
  while (digits[0] == '0' && digits[1] != '\0') ++digits;  // leading zeros change nothing
  if (std::strlen(digits) > 18) return false;
  long value = 0;
  for (const char* c = digits; *c; ++c) value = value * 10 + (*c - '0');
  if (text[0] == '-') value = -value;
  *out = value;
  return value >= lo && value <= hi;
}

// Whether `problem` is about variable `name`: it starts "NAME=" or "NAME ".
bool names(const std::string& problem, const char* name) {
  const size_t length = std::strlen(name);
  return problem.size() > length && problem.compare(0, length, name) == 0 &&
         (problem[length] == '=' || problem[length] == ' ');
}

int problems_naming(const std::vector<std::string>& problems, const char* name) {
  int count = 0;
  for (const std::string& problem : problems) count += names(problem, name);
  return count;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using ipex_shim::Mode;
  if (size < 2) return 0;
  const auto& table = ipex_shim::environment_table();
  const unsigned mask = data[0] | (data[1] << 8);
  std::vector<std::string> values(1);
  for (size_t i = 2; i < size; ++i) {
    if (data[i] == 0) values.emplace_back();
    else values.back().push_back(static_cast<char>(data[i]));
  }
  environment().clear();
  size_t next = 0;
  for (size_t i = 0; i < table.size(); ++i) {
    if (mask & (1u << i)) environment()[table[i].name] = next < values.size() ? values[next++] : "";
  }

  constexpr int kCpus = 7;
  std::vector<std::string> problems;
  const ipex_shim::Settings settings = ipex_shim::parse_settings(lookup, kCpus, &problems);
  ipex_shim::fuzz::check_messages(problems);
  for (const std::string& problem : problems) {
    bool names_a_set_variable = false;
    for (const auto& [name, value] : environment()) {
      names_a_set_variable |= names(problem, name.c_str());
    }
    FUZZ_CHECK(names_a_set_variable, "a problem that names no variable that is set: " + problem);
  }

  // Each variable: its value is taken exactly when allowed, with one problem otherwise.
  auto expect = [&](const char* name, bool allowed) {
    const int count = problems_naming(problems, name);
    FUZZ_CHECK(count == (allowed ? 0 : 1), std::string(name) + ": " + std::to_string(count) +
                                               " problems for a value that is " +
                                               (allowed ? "allowed" : "not allowed"));
  };
  long number = 0;

  if (const char* text = value_of("IPEX_MODE")) {
    static const std::map<std::string, Mode> modes = {
        {"off", Mode::off},   {"fp32", Mode::fp32}, {"bf16", Mode::bf16},
        {"calibration", Mode::calibration}, {"int8", Mode::int8}, {"inference", Mode::int8}};
    auto found = modes.find(text);
    expect("IPEX_MODE", found != modes.end());
    FUZZ_CHECK(settings.mode == (found != modes.end() ? found->second : Mode::off), "IPEX_MODE");
  } else {
    FUZZ_CHECK(settings.mode == Mode::off, "the mode without IPEX_MODE");
  }

  if (const char* text = value_of("IPEX_CONFIG")) {
    expect("IPEX_CONFIG", *text != '\0');
    FUZZ_CHECK(settings.config_path == text, "IPEX_CONFIG is not taken as written");
  }

  if (const char* text = value_of("IPEX_VERBOSE")) {
    const bool allowed = whole_number(text, 0, 2, &number);
    expect("IPEX_VERBOSE", allowed);
    FUZZ_CHECK(settings.verbose == (allowed ? number : 0), "IPEX_VERBOSE");
  }
  FUZZ_CHECK(settings.verbose >= 0 && settings.verbose <= 2, "verbose out of range");

  const std::pair<const char*, bool> switches[] = {
      {"IPEX_FUSION", settings.fusion}, {"IPEX_STRICT", settings.strict},
      {"IPEX_BF16_EMULATION", settings.bf16_emulation}};
  for (const auto& [name, on] : switches) {
    const char* text = value_of(name);
    const bool default_on = std::strcmp(name, "IPEX_FUSION") == 0;
    if (!text) {
      FUZZ_CHECK(on == default_on, std::string(name) + " unset is not its default");
      continue;
    }
    const bool allowed = std::strcmp(text, "0") == 0 || std::strcmp(text, "1") == 0;
    expect(name, allowed);
    FUZZ_CHECK(on == (allowed ? text[0] == '1' : default_on), name);
  }

  if (const char* text = value_of("IPEX_INT8_ALGORITHM")) {
    const bool allowed = std::strcmp(text, "min_max") == 0 ||
                         std::strcmp(text, "percentile") == 0 || std::strcmp(text, "mse") == 0;
    expect("IPEX_INT8_ALGORITHM", allowed);
  }
  FUZZ_CHECK(settings.int8_algorithm == "min_max" || settings.int8_algorithm == "percentile" ||
                 settings.int8_algorithm == "mse",
             "int8_algorithm out of its set: " + settings.int8_algorithm);
  if (const char* text = value_of("IPEX_INT8_GRANULARITY")) {
    const bool allowed = std::strcmp(text, "per_channel") == 0 || std::strcmp(text, "per_tensor") == 0;
    expect("IPEX_INT8_GRANULARITY", allowed);
  }
  FUZZ_CHECK(settings.int8_granularity == "per_channel" || settings.int8_granularity == "per_tensor",
             "int8_granularity out of its set: " + settings.int8_granularity);

  if (value_of("IPEX_INT8_MIN_SQNR")) {
    FUZZ_CHECK(problems_naming(problems, "IPEX_INT8_MIN_SQNR") <= 1, "IPEX_INT8_MIN_SQNR: two problems");
  }
  FUZZ_CHECK(settings.int8_min_sqnr_db >= 0.0 && settings.int8_min_sqnr_db <= 100.0,
             "int8_min_sqnr_db out of range");

  if (const char* text = value_of("IPEX_BUFFER_CACHE_MB")) {
    const bool allowed = whole_number(text, 0, 1048576, &number);
    expect("IPEX_BUFFER_CACHE_MB", allowed);
    FUZZ_CHECK(settings.buffer_cache_mb == (allowed ? number : 1024), "IPEX_BUFFER_CACHE_MB");
  }
  FUZZ_CHECK(settings.buffer_cache_mb >= 0 && settings.buffer_cache_mb <= 1048576,
             "buffer_cache_mb out of range");

  if (const char* text = value_of("OMP_NUM_THREADS")) {
    const std::string first(text, std::strcspn(text, ","));
    const bool allowed = whole_number(first.c_str(), 1, 4096, &number);
    expect("OMP_NUM_THREADS", allowed);
    FUZZ_CHECK(settings.num_threads == (allowed ? number : kCpus) && settings.threads_from_env == allowed,
               "OMP_NUM_THREADS");
  } else {
    FUZZ_CHECK(settings.num_threads == kCpus && !settings.threads_from_env,
               "threads without OMP_NUM_THREADS are not the CPUs in the mask");
  }
  return 0;
}
