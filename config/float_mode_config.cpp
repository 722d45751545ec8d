#include "config/float_mode_config.h"

#include <algorithm>

namespace ipex_shim {
namespace {

// A name from the file as it may appear in a message: JSON's escapes for control characters
// (a newline would split the message, an escape would drive the terminal), cut short.
std::string shown(const std::string& text) {
  constexpr size_t kMaxShown = 60;
  std::string escaped = nlohmann::json(text).dump(-1, ' ', false,
                                                  nlohmann::json::error_handler_t::replace);
  escaped = escaped.substr(1, escaped.size() - 2);  // without JSON's quotes
  if (escaped.size() > kMaxShown) escaped = escaped.substr(0, kMaxShown) + "...";
  return "'" + escaped + "'";
}

}  // namespace

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
          problems->push_back("keep_fp32: " + shown(name) + " is not an op the shim intercepts; ignored");
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
      problems->push_back(shown(key) + ": unknown field (known: keep_fp32, fusion); ignored");
    }
  }
  return true;
}

}  // namespace ipex_shim
