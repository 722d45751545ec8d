// Fuzzes validating and matching the INT8 config (config/int8_config.h, config/int8_match.h):
// the input is the file's text, read as the shim reads it, validated, written back, and
// matched against ops of every kind.
// Properties: nothing throws; the file is unusable exactly when it is not a list; every
// entry of a list becomes one entry; an entry left valid satisfies every rule of the format,
// and valid entries have distinct ids and keys; what the shim writes reads back with no
// problem and writes again byte for byte; an op gets an entry only if that entry is valid,
// names the op's kind and is the op's by key or id, and it gets one whenever such an entry
// exists; every problem and every mismatch is one printable line.
#include <cmath>
#include <cstdint>
#include <limits>
#include <set>
#include <string>
#include <vector>

#include "config/int8_config.h"
#include "config/int8_match.h"
#include "config/json_file.h"
#include "tests/fuzz/fuzz_check.h"

using ipex_shim::Int8Config;
using ipex_shim::Int8Entry;
using ipex_shim::fuzz::one_line;

namespace {

bool scales_ok(const std::vector<double>& scales) {
  if (scales.empty()) return false;
  for (double scale : scales) {
    if (!std::isfinite(scale) || !(scale > 0)) return false;
  }
  return true;
}

bool range_ok(const std::vector<double>& minimums, const std::vector<double>& maximums,
              size_t count) {
  if (minimums.empty() && maximums.empty()) return true;
  if (minimums.size() != count || maximums.size() != count) return false;
  for (size_t i = 0; i < count; ++i) {
    if (!std::isfinite(minimums[i]) || !std::isfinite(maximums[i]) || minimums[i] > maximums[i])
      return false;
  }
  return true;
}

void check_valid_entry(const Int8Entry& entry, size_t index) {
  const std::string where = "valid entry " + std::to_string(index) + ": ";
  const auto& names = ipex_shim::int8_op_names();
  FUZZ_CHECK(std::find(names.begin(), names.end(), entry.name) != names.end(), where + "name");
  FUZZ_CHECK(entry.id >= 0, where + "id");
  FUZZ_CHECK(scales_ok(entry.inputs_scale) && scales_ok(entry.outputs_scale), where + "scales");
  FUZZ_CHECK(entry.inputs_uint8_used.size() == entry.inputs_scale.size() &&
                 entry.outputs_uint8_used.size() == entry.outputs_scale.size(),
             where + "uint8 flags");
  FUZZ_CHECK(range_ok(entry.inputs_min, entry.inputs_max, entry.inputs_scale.size()) &&
                 range_ok(entry.outputs_min, entry.outputs_max, entry.outputs_scale.size()),
             where + "observed ranges");
  FUZZ_CHECK(!entry.sqnr_db || std::isfinite(*entry.sqnr_db), where + "sqnr_db");
  FUZZ_CHECK(!entry.calls || *entry.calls >= 0, where + "calls");
}

void check_matching(const Int8Config& config) {
  const ipex_shim::Int8Matcher matcher(config);
  bool keyed = false;
  for (const Int8Entry& entry : config.entries) keyed |= !entry.key.empty();
  FUZZ_CHECK(matcher.keyed() == keyed, "keyed() differs from the entries' keys");

  // The entries that some op may take: valid ones, by (key or id, kind). The ops asked
  // about: every entry's key or id with every kind any entry names, plus ones no entry has.
  std::set<std::pair<std::string, std::string>> by_key;  // (key, kind)
  std::set<std::pair<int64_t, std::string>> by_id;       // (id, kind)
  std::set<std::string> keys = {"", "no such op"};
  std::set<int64_t> ids = {0, 1, 2};
  std::set<std::string> kinds = {"Convolution"};
  for (const Int8Entry& entry : config.entries) {
    keys.insert(entry.key);
    ids.insert(entry.id);
    if (entry.id < std::numeric_limits<int64_t>::max()) ids.insert(entry.id + 1);
    if (!entry.name.empty()) kinds.insert(entry.name);
    if (!entry.valid) continue;
    if (!entry.key.empty()) by_key.emplace(entry.key, entry.name);
    by_id.emplace(entry.id, entry.name);
  }
  // In a keyed file only the key picks the entry, in the seed's form only the index.
  auto check = [&](int64_t index, const std::string& kind, const std::string& key) {
    std::string why;
    const Int8Entry* entry = matcher.match(index, kind, key, &why);
    const bool expected = keyed ? by_key.count({key, kind}) == 1 : by_id.count({index, kind}) == 1;
    auto op = [&] { return "op " + std::to_string(index) + " " + kind + " '" + key + "'"; };
    if (entry) {
      FUZZ_CHECK(entry->valid && entry->name == kind && !entry->inputs_scale.empty(),
                 op() + " got an entry that is invalid or of another kind");
      FUZZ_CHECK(keyed ? entry->key == key : entry->id == index, op() + " got another op's entry");
      FUZZ_CHECK(why.empty(), op() + " matched but with a reason: " + why);
    } else {
      FUZZ_CHECK(!expected, op() + " got no entry though a valid one of its kind exists: " + why);
      if (one_line(key)) FUZZ_CHECK(one_line(why), op() + ": the reason is not one line: " + why);
    }
  };
  for (const std::string& kind : kinds) {
    if (keyed) {
      for (const std::string& key : keys) check(0, kind, key);
    } else {
      for (int64_t index : ids) check(index, kind, "");
    }
  }
  // A copy of a calibrated layer (its key with a copy suffix) may take the entry of the key
  // without the suffix: then a valid entry of its kind, whose key is the asked one shortened.
  if (!keyed) return;
  for (const std::string& kind : kinds) {
    for (const std::string& key : keys) {
      for (const std::string& copy : {key + ".7", key + ".12#0", key + "."}) {
        if (keys.count(copy)) continue;
        std::string why;
        const Int8Entry* entry = matcher.match(3, kind, copy, &why);
        if (!entry) continue;
        FUZZ_CHECK(entry->valid && entry->name == kind && !entry->inputs_scale.empty(),
                   "copy '" + copy + "' got an entry that is invalid or of another kind");
        FUZZ_CHECK(entry->key.size() < copy.size() && why.empty(),
                   "copy '" + copy + "' got an entry whose key is not a shortened one");
      }
    }
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const ipex_shim::JsonFile file =
      ipex_shim::parse_json_text(std::string(reinterpret_cast<const char*>(data), size));
  if (!file.ok) return 0;

  Int8Config config;
  std::vector<std::string> problems;
  const bool usable = ipex_shim::parse_int8_config(file.value, &config, &problems);
  ipex_shim::fuzz::check_messages(problems);
  FUZZ_CHECK(usable == file.value.is_array(), "usable exactly when the file is a list");
  if (!usable) {
    FUZZ_CHECK(config.entries.empty() && problems.size() == 1, "an unusable file left entries");
    return 0;
  }
  FUZZ_CHECK(config.entries.size() == file.value.size(), "entries and the list differ in length");

  size_t valid = 0;
  std::set<int64_t> ids;
  std::set<std::string> keys;
  for (size_t i = 0; i < config.entries.size(); ++i) {
    const Int8Entry& entry = config.entries[i];
    if (!entry.valid) continue;
    ++valid;
    check_valid_entry(entry, i);
    FUZZ_CHECK(ids.insert(entry.id).second, "two valid entries with id " + std::to_string(entry.id));
    if (!entry.key.empty()) FUZZ_CHECK(keys.insert(entry.key).second, "two valid entries with one key");
  }
  FUZZ_CHECK(valid == config.entries.size() || !problems.empty(), "an invalid entry without a problem");

  // What calibration would write from it reads back clean and writes again byte for byte.
  const std::string text = ipex_shim::int8_config_text(config);
  const ipex_shim::JsonFile written = ipex_shim::parse_json_text(text);
  FUZZ_CHECK(written.ok, "the shim's own output does not parse: " + written.error);
  Int8Config again;
  std::vector<std::string> again_problems;
  FUZZ_CHECK(ipex_shim::parse_int8_config(written.value, &again, &again_problems),
             "the shim's own output is unusable");
  FUZZ_CHECK(again_problems.empty(), "the shim's own output has a problem: " + again_problems.front());
  FUZZ_CHECK(again.entries.size() == valid, "entries lost or gained through a write and a read");
  FUZZ_CHECK(ipex_shim::int8_config_text(again) == text, "a second write differs from the first");

  check_matching(config);
  return 0;
}
