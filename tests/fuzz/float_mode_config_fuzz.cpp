// Fuzzes the fp32/bf16 overrides (config/float_mode_config.h): the input is the file's text,
// read as the shim reads it, then validated against op names like the override table's.
// Properties: nothing throws; the file is unusable exactly when it is not an object; only
// known op names reach keep_fp32, and every known name listed as a string does; fusion is set
// exactly when the file has a boolean "fusion"; every problem is one printable line.
#include <algorithm>
#include <cstdint>
#include <string>
#include <vector>

#include "config/float_mode_config.h"
#include "config/json_file.h"
#include "tests/fuzz/fuzz_check.h"

using nlohmann::json;

namespace {

// Names in the form of status()["ops"] (shim/registration.cpp); which ones does not matter.
const std::vector<std::string> kKnownOps = {
    "conv1d", "conv2d", "conv3d", "conv_transpose2d.input", "_convolution", "linear",
    "matmul", "mm",     "bmm",    "addmm",                  "baddbmm",      "batch_norm",
    "add.Tensor", "add_.Tensor", "relu", "relu_", "hardtanh", "max_pool2d", "softmax"};

bool known(const std::string& name) {
  return std::find(kKnownOps.begin(), kKnownOps.end(), name) != kKnownOps.end();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const ipex_shim::JsonFile file =
      ipex_shim::parse_json_text(std::string(reinterpret_cast<const char*>(data), size));
  if (!file.ok) return 0;
  const json& value = file.value;

  ipex_shim::FloatModeConfig config;
  std::vector<std::string> problems;
  const bool usable = ipex_shim::parse_float_mode_config(value, kKnownOps, &config, &problems);
  ipex_shim::fuzz::check_messages(problems);
  FUZZ_CHECK(usable == value.is_object(), "usable for a value that is not an object, or not "
                                          "usable for one that is");
  if (!usable) {
    FUZZ_CHECK(problems.size() == 1 && config.keep_fp32.empty() && !config.fusion,
               "an unusable file left settings or more than one problem");
    return 0;
  }

  std::vector<std::string> expected_fp32;
  bool any_problem_expected = false;
  for (const auto& [key, field] : value.items()) {
    if (key == "keep_fp32" && field.is_array()) {
      for (const json& item : field) {
        if (item.is_string() && known(item.get<std::string>())) {
          expected_fp32.push_back(item.get<std::string>());
        } else {
          any_problem_expected = true;
        }
      }
    } else if (!(key == "fusion" && field.is_boolean())) {
      any_problem_expected = true;
    }
  }
  for (const std::string& name : config.keep_fp32) {
    FUZZ_CHECK(known(name), "keep_fp32 holds an op the table does not have: " + name);
    FUZZ_CHECK(std::find(expected_fp32.begin(), expected_fp32.end(), name) != expected_fp32.end(),
               "keep_fp32 holds an op the file does not list: " + name);
  }
  for (const std::string& name : expected_fp32) {
    FUZZ_CHECK(config.keep_fp32.count(name) == 1, "a known op listed in keep_fp32 was dropped: " + name);
  }
  const auto fusion = value.find("fusion");
  const bool fusion_given = fusion != value.end() && fusion->is_boolean();
  FUZZ_CHECK(config.fusion.has_value() == fusion_given, "fusion set without a boolean, or not set with one");
  if (fusion_given) FUZZ_CHECK(*config.fusion == fusion->get<bool>(), "fusion differs from the file");
  FUZZ_CHECK(problems.empty() == !any_problem_expected,
             "a problem reported for a clean file, or none for a file with a problem");
  return 0;
}
