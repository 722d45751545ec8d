// IPEX_CONFIG in fp32 and bf16 modes: optional overrides, as a JSON object
//   {"keep_fp32": ["linear", "matmul"], "fusion": false}
// `keep_fp32` names ops of the override table that must compute in fp32 in bf16 mode;
// `fusion` false turns fusion off (as IPEX_FUSION=0 does). Anything else is reported.
#pragma once

#include <nlohmann/json.hpp>

#include <optional>
#include <set>
#include <string>
#include <vector>

namespace ipex_shim {

struct FloatModeConfig {
  std::set<std::string> keep_fp32;
  std::optional<bool> fusion;
};

// Reads `value` (the parsed file). `known_ops` are the op names of the override table.
// Problems are appended as "<field>: <what is wrong>"; a problem in one field leaves the
// other fields in effect. Returns false when the file as a whole is unusable.
bool parse_float_mode_config(const nlohmann::json& value, const std::vector<std::string>& known_ops,
                             FloatModeConfig* config, std::vector<std::string>* problems);

}  // namespace ipex_shim
