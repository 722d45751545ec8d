// IPEX_MODE=int8: which entry of the loaded config an op of the program uses, by the rules
// that shim/int8_inference.h states. Torch-free, so that the rules are tested and fuzzed
// without a model.
#pragma once

#include <cstdint>
#include <string>
#include <unordered_map>

#include "config/int8_config.h"

namespace ipex_shim {

class Int8Matcher {
 public:
  Int8Matcher() = default;
  explicit Int8Matcher(Int8Config config);

  const Int8Config& config() const { return config_; }
  // True when an entry has the shim's key: ops are then matched by key, else by id.
  bool keyed() const { return keyed_; }

  // The entry that op `index` (of `kind`, e.g. "Convolution", and identity `key`) uses: the
  // one with its key (a key with a copy suffix ".N" and no entry of its own: the entry of the
  // key without it), or in a file without keys the one with id `index`, provided that entry
  // passed validation, names `kind` and has an input scale. Otherwise null, with *why saying
  // which of these failed, in one line.
  const Int8Entry* match(int64_t index, const std::string& kind, const std::string& key,
                         std::string* why) const;

 private:
  Int8Config config_;
  bool keyed_ = false;
  std::unordered_map<std::string, size_t> by_key_;
  std::unordered_map<int64_t, size_t> by_id_;
};

}  // namespace ipex_shim
