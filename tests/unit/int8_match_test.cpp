// Matching ops to INT8 config entries (config/int8_match.h), and the fp32/bf16 overrides'
// messages: cases the fuzz targets' properties found (tests/fuzz/).
#include <gtest/gtest.h>

#include <string>
#include <utility>
#include <vector>

#include "config/float_mode_config.h"
#include "config/int8_config.h"
#include "config/int8_match.h"

namespace ipex_shim {
namespace {

using nlohmann::json;

json entry(json id, const char* name) {
  return json{{"id", id},           {"name", name},          {"inputs_scale", {25.0}},
              {"outputs_scale", {40.0}}, {"quantized", true}};
}

json keyed_entry(json id, const char* name, const char* key) {
  json value = entry(std::move(id), name);
  value["key"] = key;
  return value;
}

Int8Config parse(const json& value) {
  Int8Config config;
  std::vector<std::string> problems;
  EXPECT_TRUE(parse_int8_config(value, &config, &problems));
  return config;
}

// An entry whose id cannot be read holds id 0 in memory; it must not hide the valid entry
// that has id 0 (before, op 0 ran in fp32: "entry 0 (id 0, ...) failed validation").
TEST(Int8Match, EntryWithUnreadableIdDoesNotTakeIdZero) {
  for (const json& bad_id : {json(-1), json("0"), json(0.5), json(nullptr)}) {
    const Int8Matcher matcher(parse(json{entry(bad_id, "Convolution"), entry(0, "Convolution")}));
    ASSERT_FALSE(matcher.config().entries[0].valid);
    std::string why;
    const Int8Entry* found = matcher.match(0, "Convolution", "", &why);
    ASSERT_NE(found, nullptr) << bad_id.dump() << ": " << why;
    EXPECT_EQ(found, &matcher.config().entries[1]);
    EXPECT_EQ(why, "");
  }
}

TEST(Int8Match, InvalidEntryWithItsIdIsReportedAsSuch) {
  json bad = entry(1, "Linear");
  bad["inputs_scale"] = {0};
  const Int8Matcher matcher(parse(json{entry(0, "Convolution"), bad}));
  std::string why;
  EXPECT_EQ(matcher.match(1, "Linear", "", &why), nullptr);
  EXPECT_NE(why.find("entry 1 (id 1, \"Linear\") failed validation"), std::string::npos) << why;
  EXPECT_EQ(matcher.match(0, "Linear", "", &why), nullptr);
  EXPECT_NE(why.find("is a Convolution but the program's op 0 is Linear"), std::string::npos) << why;
  EXPECT_EQ(matcher.match(2, "Linear", "", &why), nullptr);
  EXPECT_NE(why.find("no entry with id 2"), std::string::npos) << why;
}

TEST(Int8Match, KeyedFileMatchesByKeyOnly) {
  const Int8Matcher matcher(parse(
      json{keyed_entry(0, "Convolution", "conv a"), keyed_entry(1, "Convolution", "conv b")}));
  ASSERT_TRUE(matcher.keyed());
  std::string why;
  EXPECT_EQ(matcher.match(0, "Convolution", "conv b", &why), &matcher.config().entries[1]);
  EXPECT_EQ(matcher.match(0, "Convolution", "conv c", &why), nullptr);
  EXPECT_NE(why.find("no entry for op 0, Convolution conv c"), std::string::npos) << why;
}

// A layer copied while the calibrated one lives (IPEX 2.x's convert() copies the prepared
// model) is identified with a copy suffix: it uses the entry of the layer it copies, unless
// the config has an entry of its own (two identical layers of one calibrated model).
TEST(Int8Match, CopySuffixFallsBackToTheCopiedLayersEntry) {
  const json first = keyed_entry(0, "Convolution", "Convolution(w=8x3x3x3)#00ff");
  const Int8Matcher matcher(
      parse(json{first, keyed_entry(1, "Convolution", "Convolution(w=8x3x3x3)#00ff.1")}));
  std::string why;
  EXPECT_EQ(matcher.match(5, "Convolution", "Convolution(w=8x3x3x3)#00ff.1", &why),
            &matcher.config().entries[1]);
  EXPECT_EQ(matcher.match(5, "Convolution", "Convolution(w=8x3x3x3)#00ff.2", &why),
            &matcher.config().entries[0]);
  EXPECT_EQ(why, "");
  // The ops anchored on a copied layer name it with its suffix.
  const Int8Matcher anchored(
      parse(json{first, keyed_entry(2, "Relu", "Relu@Convolution(w=8x3x3x3)#00ff#0")}));
  EXPECT_EQ(anchored.match(6, "Relu", "Relu@Convolution(w=8x3x3x3)#00ff.3#0", &why),
            &anchored.config().entries[1]);
  for (const char* other : {"Convolution(w=8x3x3x3)#00fe.1", "Convolution(w=8x3x3x3)#00ff.x",
                            "Convolution(w=8x3x3x3)#00ff.", "Convolution(w=8x3x3x3.1)",
                            "Convolution(w=8x3x3x3)#00ff.1x"}) {
    EXPECT_EQ(matcher.match(5, "Convolution", other, &why), nullptr) << other;
    EXPECT_NE(why.find("no entry for op 5"), std::string::npos) << why;
  }
}

// Found by tests/fuzz/float_mode_config_fuzz.cpp: a key holding a newline made its message
// two lines.
TEST(FloatModeConfig, NamesFromTheFileAreShownOnOneLine) {
  FloatModeConfig config;
  std::vector<std::string> problems;
  const json value = json::parse(R"({"a\nipex_shim: forged\u001b[2J": 1, "keep_fp32": ["x\ry"]})");
  ASSERT_TRUE(parse_float_mode_config(value, {"linear"}, &config, &problems));
  ASSERT_EQ(problems.size(), 2u);
  EXPECT_EQ(problems[0], R"('a\nipex_shim: forged\u001b[2J': unknown field (known: keep_fp32, fusion); ignored)");
  EXPECT_EQ(problems[1], R"(keep_fp32: 'x\ry' is not an op the shim intercepts; ignored)");
}

}  // namespace
}  // namespace ipex_shim
