#include "config/float_mode_config.h"

#include <algorithm>

namespace ipex_shim {

bool parse_float_mode_config(const nlohmann::json& value, const std::vector<std::string>& known_ops,
                             FloatModeConfig* config, std::vector<std::string>* problems) {
  if (value.is_array()) {
    problems->push_back(
        "top level: this is a list (an INT8 calibration config?); fp32 and bf16 modes expect an "
        "object such as {\"keep_fp32\": [\"linear\"], \"fusion\": false}");
    return false;
  }
  if (!value.is_object()) {
    problems->push_back("top level: expected a JSON object, got " + std::string(value.type_name()));
    return false;
  }
  for (const auto& [key, field] : value.items()) {
    if (key == "keep_fp32") {
      if (!field.is_array()) {
        problems->push_back("keep_fp32: expected a list of op names, got " +
                            std::string(field.type_name()));
        continue;
      }
      for (const auto& item : field) {
        if (!item.is_string()) {
          problems->push_back("keep_fp32: expected op names (strings), got " +
                              std::string(item.type_name()));
          continue;
        }
        const std::string name = item.get<std::string>();
        if (std::find(known_ops.begin(), known_ops.end(), name) == known_ops.end()) {
          problems->push_back("keep_fp32: '" + name + "' is not an op the shim intercepts; ignored");
          continue;
        }
        config->keep_fp32.insert(name);
      }
    } else if (key == "fusion") {
      if (!field.is_boolean()) {
        problems->push_back("fusion: expected true or false, got " + std::string(field.type_name()));
        continue;
      }
      config->fusion = field.get<bool>();
    } else {
      problems->push_back("'" + key + "': unknown field (known: keep_fp32, fusion); ignored");
    }
  }
  return true;
}

}  // namespace ipex_shim
