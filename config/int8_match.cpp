#include "config/int8_match.h"

#include <utility>

namespace ipex_shim {
namespace {

std::string describe(const Int8Entry& entry, size_t position) {
  return "entry " + std::to_string(position) + " (id " + std::to_string(entry.id) + ", \"" +
         entry.name + "\")";
}

bool is_hex(char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'); }

// Whether `text` ends with '#' and at least one hex digit: a weight digest.
bool ends_with_digest(const std::string& text) {
  size_t i = text.size();
  while (i > 0 && is_hex(text[i - 1])) --i;
  return i < text.size() && i > 0 && text[i - 1] == '#';
}

// `key` without the copy suffixes shim/int8_identity.h gives a weight's digest where a live
// tensor with the same bytes was seen first: "Convolution(...)#<digest>.2" ->
// "Convolution(...)#<digest>", and so in an anchor ("Relu@Convolution(...)#<digest>.2#0").
// Empty when `key` has none.
std::string without_copy_suffixes(const std::string& key) {
  std::string out;
  out.reserve(key.size());
  bool changed = false;
  for (size_t i = 0; i < key.size();) {
    if (key[i] == '.' && ends_with_digest(out)) {
      size_t end = i + 1;
      while (end < key.size() && key[end] >= '0' && key[end] <= '9') ++end;
      if (end > i + 1 && (end == key.size() || key[end] == '#')) {
        i = end;
        changed = true;
        continue;
      }
    }
    out.push_back(key[i++]);
  }
  return changed ? out : std::string();
}

}  // namespace

Int8Matcher::Int8Matcher(Int8Config config) : config_(std::move(config)) {
  // Valid entries first: an entry whose id could not be read has id 0 in memory, and must not
  // take id 0 from a valid entry that has it. Of two entries with one id or key, validation
  // has already marked the later one invalid, so the first claim stands.
  for (bool valid : {true, false}) {
    for (size_t i = 0; i < config_.entries.size(); ++i) {
      const Int8Entry& entry = config_.entries[i];
      if (entry.valid != valid) continue;
      if (!entry.key.empty()) {
        keyed_ = true;
        by_key_.emplace(entry.key, i);
      }
      by_id_.emplace(entry.id, i);
    }
  }
}

const Int8Entry* Int8Matcher::match(int64_t index, const std::string& kind,
                                    const std::string& key, std::string* why) const {
  const std::string op = kind + " " + key;
  size_t position = 0;
  if (keyed_) {
    auto found = by_key_.find(key);
    // A copy of a calibrated layer alive beside it in the same process (prepare() and
    // convert() copy the model; so does copy.deepcopy) takes the key with a copy suffix; with
    // no entry of its own it uses the entry of the layer it copies: the same weights and
    // parameters.
    if (found == by_key_.end()) {
      const std::string base = without_copy_suffixes(key);
      if (!base.empty()) found = by_key_.find(base);
    }
    if (found == by_key_.end()) {
      *why = "no entry for op " + std::to_string(index) + ", " + op +
             " (calibrated on another model, other weights, or an op calibration never saw)";
      return nullptr;
    }
    position = found->second;
  } else {
    auto found = by_id_.find(index);
    if (found == by_id_.end()) {
      *why = "no entry with id " + std::to_string(index) + " for " + op +
             " (the program runs more quantisable ops than the config has)";
      return nullptr;
    }
    position = found->second;
  }
  const Int8Entry& entry = config_.entries[position];
  if (!entry.valid) {
    *why = describe(entry, position) + " failed validation (reported at start)";
    return nullptr;
  }
  if (entry.name != kind) {
    *why = describe(entry, position) + " is a " + entry.name + " but the program's op " +
           std::to_string(index) + " is " + op;
    return nullptr;
  }
  if (entry.inputs_scale.empty()) {
    *why = describe(entry, position) + " has no input scale";
    return nullptr;
  }
  why->clear();
  return &entry;
}

}  // namespace ipex_shim
