// The INT8 config: the seed's format reads without problems, every validation rule reports the
// entry and field and sends only that op to fp32, writing round-trips exactly, and the file is
// replaced atomically.
#include <gtest/gtest.h>

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <limits>
#include <sstream>
#include <string>
#include <vector>

#include "config/int8_config.h"
#include "config/json_file.h"

namespace ipex_shim {
namespace {

using nlohmann::json;
namespace fs = std::filesystem;

const char* const kSeedExample = R"([{"id": 0, "name": "Convolution", "algorithm": "min_max", "weight_granularity": "per_channel",
  "inputs_scale": [25.05583953857422], "outputs_scale": [43.98969650268555],
  "inputs_uint8_used": [false], "outputs_uint8_used": [false], "quantized": true},
 {"id": 1, "name": "Relu", "algorithm": "min_max", "weight_granularity": "per_channel",
  "inputs_scale": [43.98969650268555], "outputs_scale": [43.98969650268555],
  "inputs_uint8_used": [false], "outputs_uint8_used": [false], "quantized": true}])";

// One valid entry in the seed's form, for the validation tests to spoil one field at a time.
json good_entry(int64_t id = 0) {
  return json{{"id", id},
              {"name", "Convolution"},
              {"algorithm", "min_max"},
              {"weight_granularity", "per_channel"},
              {"inputs_scale", {25.05583953857422}},
              {"outputs_scale", {43.98969650268555}},
              {"inputs_uint8_used", {false}},
              {"outputs_uint8_used", {false}},
              {"quantized", true}};
}

struct Parsed {
  bool ok = false;
  Int8Config config;
  std::vector<std::string> problems;
  std::string all_problems() const {
    std::string text;
    for (const auto& problem : problems) text += problem + "\n";
    return text;
  }
};

Parsed parse(const json& value) {
  Parsed result;
  result.ok = parse_int8_config(value, &result.config, &result.problems);
  return result;
}

Parsed parse_text(const std::string& text) {
  JsonFile file = parse_json_text(text);
  EXPECT_TRUE(file.ok) << file.error;
  return parse(file.value);
}

// A single entry with `field` set to `bad`: it must be the one invalid entry, with exactly one
// problem that names the field and says the op runs in fp32.
void expect_field_rejected(const std::string& field, const json& bad) {
  json entry = good_entry();
  entry[field] = bad;
  Parsed parsed = parse(json::array({entry}));
  const std::string shown = field + " = " + bad.dump();
  ASSERT_TRUE(parsed.ok) << shown;
  ASSERT_EQ(parsed.config.entries.size(), 1u) << shown;
  EXPECT_FALSE(parsed.config.entries[0].valid) << shown;
  ASSERT_EQ(parsed.problems.size(), 1u) << shown << "\n" << parsed.all_problems();
  EXPECT_NE(parsed.problems[0].find("field \"" + field + "\""), std::string::npos)
      << shown << ": " << parsed.problems[0];
  EXPECT_NE(parsed.problems[0].find("this op runs in fp32"), std::string::npos)
      << shown << ": " << parsed.problems[0];
}

void expect_same_entry(const Int8Entry& a, const Int8Entry& b) {
  EXPECT_EQ(a.id, b.id);
  EXPECT_EQ(a.name, b.name);
  EXPECT_EQ(a.algorithm, b.algorithm);
  EXPECT_EQ(a.weight_granularity, b.weight_granularity);
  EXPECT_EQ(a.inputs_scale, b.inputs_scale);
  EXPECT_EQ(a.outputs_scale, b.outputs_scale);
  EXPECT_EQ(a.inputs_uint8_used, b.inputs_uint8_used);
  EXPECT_EQ(a.outputs_uint8_used, b.outputs_uint8_used);
  EXPECT_EQ(a.quantized, b.quantized);
  EXPECT_EQ(a.key, b.key);
  EXPECT_EQ(a.inputs_min, b.inputs_min);
  EXPECT_EQ(a.inputs_max, b.inputs_max);
  EXPECT_EQ(a.outputs_min, b.outputs_min);
  EXPECT_EQ(a.outputs_max, b.outputs_max);
  EXPECT_EQ(a.sqnr_db, b.sqnr_db);
  EXPECT_EQ(a.calls, b.calls);
  EXPECT_EQ(a.valid, b.valid);
}

// --- names -------------------------------------------------------------------------------------

TEST(Int8Names, GranularityAndAlgorithmNamesReadBack) {
  for (Granularity granularity : {Granularity::per_channel, Granularity::per_tensor}) {
    Granularity read = granularity == Granularity::per_channel ? Granularity::per_tensor
                                                               : Granularity::per_channel;
    EXPECT_TRUE(parse_granularity(granularity_name(granularity), &read));
    EXPECT_EQ(read, granularity);
  }
  for (CalibrationAlgorithm algorithm : {CalibrationAlgorithm::min_max,
                                         CalibrationAlgorithm::percentile,
                                         CalibrationAlgorithm::mse}) {
    CalibrationAlgorithm read = algorithm == CalibrationAlgorithm::min_max
                                    ? CalibrationAlgorithm::percentile
                                    : CalibrationAlgorithm::min_max;
    EXPECT_TRUE(parse_algorithm(algorithm_name(algorithm), &read));
    EXPECT_EQ(read, algorithm);
  }
  EXPECT_STREQ(granularity_name(Granularity::per_tensor), "per_tensor");
  EXPECT_STREQ(algorithm_name(CalibrationAlgorithm::percentile), "percentile");
  EXPECT_STREQ(algorithm_name(CalibrationAlgorithm::mse), "mse");
}

// --- the mse algorithm's clipping -------------------------------------------------------------

// The summed squared error of quantising to multiples of t / levels, clipped at t: written
// out here again, plainly, as the reference the search is held to.
double quantisation_error(const std::vector<float>& values, int levels, double t) {
  double sum = 0.0;
  for (float v : values) {
    const double q = std::min(std::round(v / t * levels), double(levels)) * t / levels;
    sum += (v - q) * (v - q);
  }
  return sum;
}

std::vector<float> gaussian_magnitudes(int count, unsigned seed) {
  // Box-Muller on a small linear congruential generator: the same values on every machine.
  uint64_t state = seed;
  auto uniform = [&state]() {
    state = state * 6364136223846793005ULL + 1442695040888963407ULL;
    return ((state >> 11) + 0.5) / double(1ULL << 53);
  };
  std::vector<float> values;
  while (static_cast<int>(values.size()) < count) {
    const double r = std::sqrt(-2.0 * std::log(uniform()));
    values.push_back(static_cast<float>(std::fabs(r * std::cos(2 * M_PI * uniform()))));
  }
  return values;
}

TEST(MseClip, ANearOutlierIsClippedWhereThatCostsLessThanTheCoarserSteps) {
  // 60000 values spread evenly over [0, 1] and one at 1.5, 127 steps: keeping the 1.5 makes
  // every step 1.5x coarser (error 0.70 in all); clipping near 1.14 costs the one value ~0.13
  // and leaves the bulk finer steps (0.53: the dense search's optimum).
  std::vector<float> values;
  for (int i = 0; i < 60000; ++i) values.push_back(static_cast<float>(i) / 59999.0f);
  values.push_back(1.5f);
  const double t = mse_clip_threshold(values.data(), values.size(), 127);
  EXPECT_GT(t, 1.0);
  EXPECT_LT(t, 1.3);
  EXPECT_LT(quantisation_error(values, 127, t), 0.8 * quantisation_error(values, 127, 1.5));
}

TEST(MseClip, AFarOutlierIsKeptBecauseClippingItCostsMore) {
  // One value at 1000 beside 10000 in [0, 1]: clipping it near 1 would cost it ~1e6, keeping
  // it costs the bulk coarse steps (~3.3e3 in all); the squared error keeps it.
  std::vector<float> values;
  for (int i = 0; i < 10000; ++i) values.push_back(static_cast<float>(i) / 9999.0f);
  values.push_back(1000.0f);
  EXPECT_EQ(mse_clip_threshold(values.data(), values.size(), 255), 1000.0);
}

TEST(MseClip, EvenlySpreadValuesAreNotClipped) {
  std::vector<float> values;
  for (int i = 0; i <= 4000; ++i) values.push_back(3.0f * static_cast<float>(i) / 4000.0f);
  for (int levels : {127, 255}) {
    const double t = mse_clip_threshold(values.data(), values.size(), levels);
    EXPECT_GT(t, 0.97 * 3.0) << levels;
    EXPECT_LE(t, 3.0) << levels;
  }
}

TEST(MseClip, TheThresholdIsNoWorseThanADenseSearch) {
  // |N(0, 1)| and |N(0, 1)|^2 (a heavier tail), 20000 values each: a dense search (every
  // 0.1% of the largest value) finds nothing more than 0.5% better than the answer.
  for (int levels : {127, 255}) {
    for (bool squared : {false, true}) {
      std::vector<float> values = gaussian_magnitudes(20000, 7 + levels);
      if (squared)
        for (float& v : values) v *= v;
      const double largest = *std::max_element(values.begin(), values.end());
      const double t = mse_clip_threshold(values.data(), values.size(), levels);
      const double error = quantisation_error(values, levels, t);
      double dense_best = std::numeric_limits<double>::infinity();
      for (int k = 1; k <= 1000; ++k)
        dense_best = std::min(dense_best, quantisation_error(values, levels, largest * k / 1000.0));
      EXPECT_LE(error, 1.005 * dense_best) << levels << " squared " << squared;
      EXPECT_LE(t, largest);
    }
  }
}

TEST(MseClip, NothingToClipGivesZero) {
  std::vector<float> zeros(100, 0.0f);
  EXPECT_EQ(mse_clip_threshold(zeros.data(), zeros.size(), 255), 0.0);
  EXPECT_EQ(mse_clip_threshold(nullptr, 0, 127), 0.0);
}

TEST(Int8Names, UnknownGranularityAndAlgorithmAreRejectedAndLeaveTheOutputAlone) {
  Granularity granularity = Granularity::per_tensor;
  CalibrationAlgorithm algorithm = CalibrationAlgorithm::percentile;
  for (const char* bad : {"", "per-channel", "PER_CHANNEL", "per_channel ", "kl"}) {
    EXPECT_FALSE(parse_granularity(bad, &granularity)) << bad;
    EXPECT_FALSE(parse_algorithm(bad, &algorithm)) << bad;
  }
  EXPECT_EQ(granularity, Granularity::per_tensor);
  EXPECT_EQ(algorithm, CalibrationAlgorithm::percentile);
}

TEST(Int8Names, OpNamesAreTheSeedsPlusTheShims) {
  const std::vector<std::string> expected = {"Convolution", "Linear",     "Matmul",
                                             "BatchNorm",   "Relu",       "MaxPooling",
                                             "AvgPooling",  "AdaptivePooling", "Add"};
  EXPECT_EQ(int8_op_names(), expected);
}

// --- reading -----------------------------------------------------------------------------------

TEST(Int8Parse, SeedExampleParsesWithoutProblems) {
  Parsed parsed = parse_text(kSeedExample);
  ASSERT_TRUE(parsed.ok);
  EXPECT_TRUE(parsed.problems.empty()) << parsed.all_problems();
  ASSERT_EQ(parsed.config.entries.size(), 2u);
  const Int8Entry& conv = parsed.config.entries[0];
  EXPECT_TRUE(conv.valid);
  EXPECT_EQ(conv.id, 0);
  EXPECT_EQ(conv.name, "Convolution");
  EXPECT_EQ(conv.algorithm, CalibrationAlgorithm::min_max);
  EXPECT_EQ(conv.weight_granularity, Granularity::per_channel);
  EXPECT_EQ(conv.inputs_scale, std::vector<double>{25.05583953857422});
  EXPECT_EQ(conv.outputs_scale, std::vector<double>{43.98969650268555});
  EXPECT_EQ(conv.inputs_uint8_used, std::vector<bool>{false});
  EXPECT_EQ(conv.outputs_uint8_used, std::vector<bool>{false});
  EXPECT_TRUE(conv.quantized);
  EXPECT_EQ(conv.key, "");
  EXPECT_TRUE(conv.inputs_min.empty() && conv.inputs_max.empty());
  EXPECT_TRUE(conv.outputs_min.empty() && conv.outputs_max.empty());
  EXPECT_FALSE(conv.sqnr_db.has_value());
  EXPECT_FALSE(conv.calls.has_value());
  const Int8Entry& relu = parsed.config.entries[1];
  EXPECT_TRUE(relu.valid);
  EXPECT_EQ(relu.id, 1);
  EXPECT_EQ(relu.name, "Relu");
  EXPECT_EQ(relu.inputs_scale, std::vector<double>{43.98969650268555});
  EXPECT_EQ(relu.outputs_scale, std::vector<double>{43.98969650268555});
}

TEST(Int8Parse, EmptyListIsAnEmptyConfig) {
  Parsed parsed = parse_text("[]");
  EXPECT_TRUE(parsed.ok);
  EXPECT_TRUE(parsed.problems.empty()) << parsed.all_problems();
  EXPECT_TRUE(parsed.config.entries.empty());
}

TEST(Int8Parse, ParsingReplacesEarlierEntries) {
  Int8Config config;
  config.entries.resize(3);
  std::vector<std::string> problems;
  ASSERT_TRUE(parse_int8_config(json::array({good_entry()}), &config, &problems));
  EXPECT_EQ(config.entries.size(), 1u);
}

TEST(Int8Parse, FileThatIsNotAListIsUnusable) {
  for (const char* text : {R"({"keep_fp32": ["linear"]})", R"("Convolution")", "3", "null",
                           "true"}) {
    Parsed parsed = parse_text(text);
    EXPECT_FALSE(parsed.ok) << text;
    ASSERT_EQ(parsed.problems.size(), 1u) << text;
    EXPECT_NE(parsed.problems[0].find("top level"), std::string::npos) << parsed.problems[0];
    EXPECT_NE(parsed.problems[0].find("list"), std::string::npos) << parsed.problems[0];
  }
}

TEST(Int8Parse, OptionalSeedFieldsTakeDefaultsWhenAbsent) {
  Parsed parsed = parse_text(
      R"([{"id": 4, "name": "Linear", "inputs_scale": [2, 3], "outputs_scale": [4.5],
           "quantized": false}])");
  ASSERT_TRUE(parsed.ok);
  EXPECT_TRUE(parsed.problems.empty()) << parsed.all_problems();
  ASSERT_EQ(parsed.config.entries.size(), 1u);
  const Int8Entry& entry = parsed.config.entries[0];
  EXPECT_TRUE(entry.valid);
  EXPECT_EQ(entry.algorithm, CalibrationAlgorithm::min_max);
  EXPECT_EQ(entry.weight_granularity, Granularity::per_channel);
  EXPECT_EQ(entry.inputs_scale, (std::vector<double>{2, 3}));  // integers are numbers too
  EXPECT_EQ(entry.inputs_uint8_used, (std::vector<bool>{false, false}));
  EXPECT_EQ(entry.outputs_uint8_used, std::vector<bool>{false});
  EXPECT_FALSE(entry.quantized);
}

TEST(Int8Parse, ShimFieldsAreRead) {
  json entry = good_entry();
  entry["algorithm"] = "percentile";
  entry["weight_granularity"] = "per_tensor";
  entry["inputs_uint8_used"] = {true};
  entry["key"] = "features.0";
  entry["inputs_min"] = {0.0};
  entry["inputs_max"] = {5.5};
  entry["outputs_min"] = {-2.5};
  entry["outputs_max"] = {2.5};
  entry["sqnr_db"] = -3.5;
  entry["calls"] = 12;
  Parsed parsed = parse(json::array({entry}));
  ASSERT_TRUE(parsed.ok);
  EXPECT_TRUE(parsed.problems.empty()) << parsed.all_problems();
  const Int8Entry& read = parsed.config.entries.at(0);
  EXPECT_TRUE(read.valid);
  EXPECT_EQ(read.algorithm, CalibrationAlgorithm::percentile);
  EXPECT_EQ(read.weight_granularity, Granularity::per_tensor);
  EXPECT_EQ(read.inputs_uint8_used, std::vector<bool>{true});
  EXPECT_EQ(read.key, "features.0");
  EXPECT_EQ(read.inputs_min, std::vector<double>{0.0});
  EXPECT_EQ(read.inputs_max, std::vector<double>{5.5});
  EXPECT_EQ(read.outputs_min, std::vector<double>{-2.5});
  EXPECT_EQ(read.outputs_max, std::vector<double>{2.5});
  EXPECT_EQ(read.sqnr_db, std::optional<double>(-3.5));
  EXPECT_EQ(read.calls, std::optional<int64_t>(12));
}

TEST(Int8Parse, ProblemNamesEntryIndexIdNameAndField) {
  json list = json::array({good_entry(0), good_entry(1), good_entry(2), good_entry(3)});
  list[3]["inputs_scale"] = {0};
  Parsed parsed = parse(list);
  ASSERT_TRUE(parsed.ok);
  ASSERT_EQ(parsed.problems.size(), 1u) << parsed.all_problems();
  EXPECT_EQ(parsed.problems[0],
            "entry 3 (id 3, \"Convolution\"): field \"inputs_scale\"[0]: 0 is not a valid scale "
            "(must be finite and > 0); this op runs in fp32");
  EXPECT_FALSE(parsed.config.entries[3].valid);
}

TEST(Int8Parse, ZeroNegativeStringAndNullScalesAreRejectedWithTheirIndex) {
  const std::pair<json, std::string> cases[] = {
      {0, "0 is not a valid scale"},
      {0.0, "0.0 is not a valid scale"},
      {-1.5, "-1.5 is not a valid scale"},
      {-0.0, "-0.0 is not a valid scale"},
      {"25.0", "expected a scale (a number), got \"25.0\""},
      {nullptr, "expected a scale (a number), got null"},
      {true, "expected a scale (a number), got true"},
      {json::array({1.0}), "expected a scale (a number), got a list"},
  };
  for (const char* field : {"inputs_scale", "outputs_scale"}) {
    for (const auto& [bad, message] : cases) {
      json entry = good_entry();
      entry[field] = {1.0, bad};
      Parsed parsed = parse(json::array({entry}));
      ASSERT_EQ(parsed.problems.size(), 1u) << field << " " << bad.dump();
      EXPECT_FALSE(parsed.config.entries[0].valid);
      EXPECT_NE(parsed.problems[0].find("field \"" + std::string(field) + "\"[1]: " + message),
                std::string::npos)
          << parsed.problems[0];
    }
  }
}

TEST(Int8Parse, NonFiniteScalesAreRejected) {
  // JSON has no NaN or infinity, but a config built in memory (or by a lenient writer) can.
  for (double bad : {std::numeric_limits<double>::quiet_NaN(),
                     std::numeric_limits<double>::infinity(),
                     -std::numeric_limits<double>::infinity()}) {
    json entry = good_entry();
    entry["outputs_scale"] = {bad};
    Parsed parsed = parse(json::array({entry}));
    ASSERT_EQ(parsed.problems.size(), 1u);
    EXPECT_FALSE(parsed.config.entries[0].valid);
    EXPECT_NE(parsed.problems[0].find("is not a valid scale"), std::string::npos)
        << parsed.problems[0];
  }
}

TEST(Int8Parse, OutOfRangeNumbersInTheFile) {
  // nlohmann refuses a number that overflows a double: the whole file fails to parse, with
  // a message that says so, rather than reading an infinite scale.
  JsonFile overflow = parse_json_text(R"([{"id": 0, "inputs_scale": [1e309]}])");
  EXPECT_FALSE(overflow.ok);
  EXPECT_NE(overflow.error.find("overflow"), std::string::npos) << overflow.error;
  // One that underflows reads as 0, which is not a valid scale.
  json entry = good_entry();
  Parsed parsed = parse_text("[" + entry.dump().replace(entry.dump().find("25.05583953857422"),
                                                        17, "1e-400") + "]");
  ASSERT_EQ(parsed.problems.size(), 1u) << parsed.all_problems();
  EXPECT_NE(parsed.problems[0].find("field \"inputs_scale\"[0]: 0.0 is not a valid scale"),
            std::string::npos)
      << parsed.problems[0];
  // The smallest positive double is tiny but valid.
  Parsed tiny = parse_text(R"([{"id": 0, "name": "Add", "inputs_scale": [5e-324],
                               "outputs_scale": [1.7976931348623157e308], "quantized": true}])");
  EXPECT_TRUE(tiny.problems.empty()) << tiny.all_problems();
  EXPECT_TRUE(tiny.config.entries.at(0).valid);
}

TEST(Int8Parse, EmptyScaleListIsRejected) {
  expect_field_rejected("inputs_scale", json::array());
  expect_field_rejected("outputs_scale", json::array());
}

TEST(Int8Parse, MissingRequiredFieldIsRejected) {
  for (const char* field : {"id", "name", "inputs_scale", "outputs_scale", "quantized"}) {
    json entry = good_entry();
    entry.erase(field);
    Parsed parsed = parse(json::array({entry}));
    ASSERT_TRUE(parsed.ok) << field;
    EXPECT_FALSE(parsed.config.entries.at(0).valid) << field;
    ASSERT_EQ(parsed.problems.size(), 1u) << field << "\n" << parsed.all_problems();
    EXPECT_NE(parsed.problems[0].find("field \"" + std::string(field) + "\": missing"),
              std::string::npos)
        << parsed.problems[0];
  }
}

TEST(Int8Parse, WrongTypeOfEachFieldIsRejected) {
  const std::pair<const char*, json> cases[] = {
      {"id", "0"},
      {"id", -1},
      {"id", 1.0},
      {"id", 1.5},
      {"id", nullptr},
      {"id", 18446744073709551615ull},  // does not fit int64_t
      {"name", 3},
      {"name", json::array({"Convolution"})},
      {"name", ""},
      {"algorithm", "kl_divergence"},
      {"algorithm", 0},
      {"weight_granularity", "per_row"},
      {"weight_granularity", false},
      {"inputs_scale", 25.0},
      {"inputs_scale", json::object()},
      {"outputs_scale", "43.9"},
      {"inputs_uint8_used", false},
      {"inputs_uint8_used", json::array({0})},
      {"outputs_uint8_used", json::array({"false"})},
      {"quantized", 1},
      {"quantized", "true"},
      {"key", ""},
      {"key", 7},
      {"sqnr_db", "30"},
      {"sqnr_db", nullptr},
      {"sqnr_db", std::numeric_limits<double>::infinity()},
      {"calls", -1},
      {"calls", 2.5},
      {"calls", "10"},
  };
  for (const auto& [field, bad] : cases) expect_field_rejected(field, bad);
}

TEST(Int8Parse, RangeListsMustBeNumbersMatchingTheScales) {
  // Alone, each bad range list gives its own problem and the entry is invalid.
  const std::pair<const char*, json> cases[] = {
      {"inputs_min", json::array({"0"})},
      {"inputs_max", 5.0},
      {"outputs_min", json::array({nullptr})},
      {"outputs_max", json::array({std::numeric_limits<double>::quiet_NaN()})},
  };
  for (const auto& [field, bad] : cases) {
    json entry = good_entry();
    const std::string name = field;
    const std::string partner = name.substr(0, name.size() - 3) +
                                (name.substr(name.size() - 3) == "min" ? "max" : "min");
    entry[partner] = {1.0};
    entry[field] = bad;
    Parsed parsed = parse(json::array({entry}));
    EXPECT_FALSE(parsed.config.entries.at(0).valid) << field;
    ASSERT_FALSE(parsed.problems.empty()) << field;
    EXPECT_NE(parsed.problems[0].find("field \"" + name + "\""), std::string::npos)
        << parsed.problems[0];
  }

  json entry = good_entry();
  entry["inputs_min"] = {0.0, 1.0};  // two values for one scale
  entry["inputs_max"] = {1.0, 2.0};
  Parsed mismatch = parse(json::array({entry}));
  EXPECT_FALSE(mismatch.config.entries.at(0).valid);
  EXPECT_NE(mismatch.all_problems().find("field \"inputs_min\": has 2 values but "
                                         "\"inputs_scale\" has 1 scales"),
            std::string::npos)
      << mismatch.all_problems();

  entry = good_entry();
  entry["outputs_min"] = {0.0};  // without outputs_max
  Parsed alone = parse(json::array({entry}));
  EXPECT_FALSE(alone.config.entries.at(0).valid);
  ASSERT_EQ(alone.problems.size(), 1u) << alone.all_problems();
  EXPECT_NE(alone.problems[0].find("field \"outputs_min\": present without \"outputs_max\""),
            std::string::npos)
      << alone.problems[0];

  entry = good_entry();
  entry["outputs_min"] = {3.0};
  entry["outputs_max"] = {-3.0};
  Parsed reversed = parse(json::array({entry}));
  EXPECT_FALSE(reversed.config.entries.at(0).valid);
  ASSERT_EQ(reversed.problems.size(), 1u) << reversed.all_problems();
  EXPECT_NE(reversed.problems[0].find("field \"outputs_min\"[0]: 3.0 is larger than "
                                      "\"outputs_max\"[0] -3.0"),
            std::string::npos)
      << reversed.problems[0];
}

TEST(Int8Parse, Uint8ListLengthMustMatchTheScales) {
  expect_field_rejected("inputs_uint8_used", json::array({false, false}));
  expect_field_rejected("outputs_uint8_used", json::array());
  json entry = good_entry();
  entry["inputs_scale"] = {1.0, 2.0, 3.0};
  entry["inputs_uint8_used"] = {true, false};
  Parsed parsed = parse(json::array({entry}));
  ASSERT_EQ(parsed.problems.size(), 1u) << parsed.all_problems();
  EXPECT_NE(parsed.problems[0].find("field \"inputs_uint8_used\": has 2 flags but "
                                    "\"inputs_scale\" has 3 scales"),
            std::string::npos)
      << parsed.problems[0];
}

TEST(Int8Parse, DuplicateIdInvalidatesOnlyTheLaterEntry) {
  json first = good_entry(5), second = good_entry(5), third = good_entry(6);
  second["name"] = "Relu";
  Parsed parsed = parse(json::array({first, second, third}));
  ASSERT_TRUE(parsed.ok);
  EXPECT_TRUE(parsed.config.entries[0].valid);
  EXPECT_FALSE(parsed.config.entries[1].valid);
  EXPECT_TRUE(parsed.config.entries[2].valid);
  ASSERT_EQ(parsed.problems.size(), 1u) << parsed.all_problems();
  EXPECT_EQ(parsed.problems[0],
            "entry 1 (id 5, \"Relu\"): field \"id\": 5 is also the id of entry 0; this op runs "
            "in fp32");
}

TEST(Int8Parse, DuplicateKeyInvalidatesOnlyTheLaterEntry) {
  json first = good_entry(0), second = good_entry(1), third = good_entry(2);
  first["key"] = "layer1.0.conv1";
  second["key"] = "layer1.0.conv2";
  third["key"] = "layer1.0.conv1";
  Parsed parsed = parse(json::array({first, second, third}));
  EXPECT_TRUE(parsed.config.entries[0].valid);
  EXPECT_TRUE(parsed.config.entries[1].valid);
  EXPECT_FALSE(parsed.config.entries[2].valid);
  ASSERT_EQ(parsed.problems.size(), 1u) << parsed.all_problems();
  EXPECT_EQ(parsed.problems[0],
            "entry 2 (id 2, \"Convolution\"): field \"key\": \"layer1.0.conv1\" is also the key "
            "of entry 0; this op runs in fp32");
}

TEST(Int8Parse, UnknownOpNameIsRejectedWithTheKnownNames) {
  json entry = good_entry(7);
  entry["name"] = "LSTM";
  Parsed parsed = parse(json::array({entry}));
  EXPECT_FALSE(parsed.config.entries.at(0).valid);
  ASSERT_EQ(parsed.problems.size(), 1u);
  EXPECT_EQ(parsed.problems[0],
            "entry 0 (id 7, \"LSTM\"): field \"name\": \"LSTM\" is not an op the INT8 config knows "
            "(known: Convolution, Linear, Matmul, BatchNorm, Relu, MaxPooling, AvgPooling, "
            "AdaptivePooling, Add); this op runs in fp32");
}

TEST(Int8Parse, UnknownFieldIsReportedButTheEntryStaysValid) {
  json entry = good_entry(2);
  entry["valid"] = false;  // not a field of the file: validity is decided on reading
  entry["scale_zero_point"] = 0;
  Parsed parsed = parse(json::array({entry}));
  EXPECT_TRUE(parsed.config.entries.at(0).valid);
  ASSERT_EQ(parsed.problems.size(), 2u) << parsed.all_problems();
  EXPECT_EQ(parsed.problems[0],
            "entry 0 (id 2, \"Convolution\"): field \"scale_zero_point\" is not known; ignored");
  EXPECT_EQ(parsed.problems[1],
            "entry 0 (id 2, \"Convolution\"): field \"valid\" is not known; ignored");
}

TEST(Int8Parse, EntryThatIsNotAnObjectIsKeptInvalidSoIndexesStayAligned) {
  Parsed parsed = parse(json::array({good_entry(0), 42, json::array(), good_entry(3)}));
  ASSERT_TRUE(parsed.ok);
  ASSERT_EQ(parsed.config.entries.size(), 4u);
  EXPECT_TRUE(parsed.config.entries[0].valid);
  EXPECT_FALSE(parsed.config.entries[1].valid);
  EXPECT_FALSE(parsed.config.entries[2].valid);
  EXPECT_TRUE(parsed.config.entries[3].valid);
  EXPECT_EQ(parsed.config.entries[3].id, 3);
  ASSERT_EQ(parsed.problems.size(), 2u) << parsed.all_problems();
  EXPECT_EQ(parsed.problems[0], "entry 1: expected an object, got 42; this entry is ignored");
  EXPECT_EQ(parsed.problems[1],
            "entry 2: expected an object, got a list; this entry is ignored");
}

TEST(Int8Parse, BadEntryLeavesTheGoodOnesUsable) {
  json bad = good_entry(1);
  bad["outputs_scale"] = {-4.0};
  bad["quantized"] = "yes";
  Parsed parsed = parse(json::array({good_entry(0), bad, good_entry(2)}));
  ASSERT_TRUE(parsed.ok);
  ASSERT_EQ(parsed.config.entries.size(), 3u);
  EXPECT_TRUE(parsed.config.entries[0].valid);
  EXPECT_FALSE(parsed.config.entries[1].valid);
  EXPECT_TRUE(parsed.config.entries[2].valid);
  EXPECT_EQ(parsed.config.entries[2].outputs_scale, std::vector<double>{43.98969650268555});
  // Both problems of the bad entry are reported, each naming it.
  ASSERT_EQ(parsed.problems.size(), 2u) << parsed.all_problems();
  for (const auto& problem : parsed.problems) {
    EXPECT_EQ(problem.rfind("entry 1 (id 1, \"Convolution\"): field ", 0), 0u) << problem;
  }
}

TEST(Int8Parse, EntryWithoutIdOrNameIsStillNamedByIndex) {
  json entry = good_entry();
  entry.erase("id");
  entry["name"] = 12;
  Parsed parsed = parse(json::array({good_entry(0), entry}));
  ASSERT_EQ(parsed.problems.size(), 2u) << parsed.all_problems();
  EXPECT_EQ(parsed.problems[0].rfind("entry 1 (no id, name 12): field \"id\": missing", 0), 0u)
      << parsed.problems[0];
}

TEST(Int8Parse, EachProblemIsOneLineEvenForHostileText) {
  json entry = good_entry();
  entry["name"] = std::string("Conv\nolution\"") + std::string(500, 'x');
  entry["key"] = "a\nb";
  entry["weird\nfield"] = 1;
  Parsed parsed = parse(json::array({entry}));
  ASSERT_FALSE(parsed.problems.empty());
  for (const auto& problem : parsed.problems) {
    EXPECT_EQ(problem.find('\n'), std::string::npos) << problem;
    EXPECT_LT(problem.size(), 400u) << problem;
  }
}

// --- writing -----------------------------------------------------------------------------------

Int8Config full_config() {
  Int8Config config;
  Int8Entry conv;
  conv.id = 0;
  conv.name = "Convolution";
  conv.algorithm = CalibrationAlgorithm::percentile;
  conv.weight_granularity = Granularity::per_tensor;
  conv.inputs_scale = {25.05583953857422, 0.1, 1e-30};
  conv.outputs_scale = {1.0 / 3.0};
  conv.inputs_uint8_used = {true, false, true};
  conv.outputs_uint8_used = {false};
  conv.quantized = true;
  conv.key = "features.0 \"conv\" \xce\xb1";  // quotes and a non-ASCII character
  conv.inputs_min = {-0.0, -1e-300, 0.30000000000000004};
  conv.inputs_max = {5.0684, 2.2250738585072014e-308, 1.7976931348623157e308};
  conv.outputs_min = {-3.0};
  conv.outputs_max = {4.9e-324};
  conv.sqnr_db = -12.345678901234567;
  conv.calls = int64_t{1} << 40;
  config.entries.push_back(conv);

  Int8Entry add;
  add.id = 9007199254740993;  // 2^53 + 1: not representable as a double
  add.name = "Add";
  add.inputs_scale = {43.98969650268555, 5e-324};
  add.outputs_scale = {123456789012345680.0};
  add.inputs_uint8_used = {false, false};
  add.outputs_uint8_used = {true};
  add.quantized = false;
  config.entries.push_back(add);
  return config;
}

TEST(Int8Write, RoundTripIsExactForEveryField) {
  const Int8Config config = full_config();
  const std::string text = int8_config_text(config);
  JsonFile file = parse_json_text(text);
  ASSERT_TRUE(file.ok) << file.error;
  Int8Config reread;
  std::vector<std::string> problems;
  ASSERT_TRUE(parse_int8_config(file.value, &reread, &problems));
  EXPECT_TRUE(problems.empty()) << problems.at(0);
  ASSERT_EQ(reread.entries.size(), config.entries.size());
  for (size_t i = 0; i < config.entries.size(); ++i) {
    SCOPED_TRACE("entry " + std::to_string(i));
    expect_same_entry(reread.entries[i], config.entries[i]);
  }
  EXPECT_TRUE(std::signbit(reread.entries[0].inputs_min[0]));  // -0.0 stays negative
  EXPECT_EQ(int8_config_text(reread), text);
}

TEST(Int8Write, FieldsComeInTheSeedsOrderThenTheShims) {
  const std::string text = int8_config_text(full_config());
  ASSERT_FALSE(text.empty());
  EXPECT_EQ(text.back(), '\n');
  EXPECT_EQ(text.rfind("[\n    {\n        \"id\": 0,\n        \"name\": \"Convolution\",", 0), 0u)
      << text;
  const char* order[] = {"\"id\"",          "\"name\"",        "\"algorithm\"",
                         "\"weight_granularity\"", "\"inputs_scale\"", "\"outputs_scale\"",
                         "\"inputs_uint8_used\"",  "\"outputs_uint8_used\"", "\"quantized\"",
                         "\"key\"",         "\"inputs_min\"",  "\"inputs_max\"",
                         "\"outputs_min\"", "\"outputs_max\"", "\"sqnr_db\"",
                         "\"calls\""};
  size_t position = 0;
  for (const char* field : order) {
    const size_t found = text.find(field, position);
    ASSERT_NE(found, std::string::npos) << field << " missing or out of order in\n" << text;
    position = found;
  }
  // The second entry sets none of the shim's fields, so none is written for it.
  const std::string second = text.substr(text.find("\"id\": 9007199254740993"));
  for (const char* field : {"\"key\"", "\"inputs_min\"", "\"sqnr_db\"", "\"calls\""}) {
    EXPECT_EQ(second.find(field), std::string::npos) << field;
  }
  EXPECT_EQ(text.find("\"valid\""), std::string::npos);
}

TEST(Int8Write, SeedExampleReadsAndWritesBackToTheSameValues) {
  Parsed parsed = parse_text(kSeedExample);
  JsonFile written = parse_json_text(int8_config_text(parsed.config));
  ASSERT_TRUE(written.ok);
  EXPECT_EQ(written.value, json::parse(kSeedExample));
}

TEST(Int8Write, InvalidEntriesAreNotWritten) {
  Int8Config config = full_config();
  config.entries[0].valid = false;
  const json written = json::parse(int8_config_text(config));
  ASSERT_EQ(written.size(), 1u);
  EXPECT_EQ(written[0]["name"], "Add");
  EXPECT_EQ(int8_config_text(Int8Config{}), "[]\n");
}

TEST(Int8Write, Uint8FlagsAreWrittenOnePerScale) {
  Int8Config config;
  Int8Entry entry;
  entry.id = 1;
  entry.name = "Linear";
  entry.inputs_scale = {1.0, 2.0};
  entry.outputs_scale = {3.0};
  entry.inputs_uint8_used = {true};  // one flag short
  config.entries.push_back(entry);
  const json written = json::parse(int8_config_text(config));
  EXPECT_EQ(written[0]["inputs_uint8_used"], json::array({true, false}));
  EXPECT_EQ(written[0]["outputs_uint8_used"], json::array({false}));
  std::vector<std::string> problems;
  Int8Config reread;
  ASSERT_TRUE(parse_int8_config(written, &reread, &problems));
  EXPECT_TRUE(problems.empty());
}

// --- the file ----------------------------------------------------------------------------------

class TemporaryDirectory {
 public:
  TemporaryDirectory() {
    std::string pattern = (fs::temp_directory_path() / "int8_config_test.XXXXXX").string();
    if (mkdtemp(pattern.data())) path_ = pattern;
  }
  ~TemporaryDirectory() {
    if (path_.empty()) return;
    std::error_code ignored;
    fs::permissions(path_, fs::perms::owner_all, fs::perm_options::add, ignored);
    fs::remove_all(path_, ignored);
  }
  const std::string& path() const { return path_; }
  std::string file(const std::string& name) const { return path_ + "/" + name; }
  std::vector<std::string> names() const {
    std::vector<std::string> names;
    for (const auto& item : fs::directory_iterator(path_)) {
      names.push_back(item.path().filename().string());
    }
    std::sort(names.begin(), names.end());
    return names;
  }

 private:
  std::string path_;
};

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

void write_plain(const std::string& path, const std::string& text) {
  std::ofstream(path, std::ios::binary) << text;
}

bool running_as_root() { return geteuid() == 0; }

TEST(ReadJsonFile, RefusesWhatIsNotARegularFileWithoutWaitingOrReading) {
  TemporaryDirectory directory;
  const std::string fifo = directory.file("fifo");
  ASSERT_EQ(mkfifo(fifo.c_str(), 0644), 0);  // no writer: a blocking open would wait forever
  EXPECT_EQ(read_json_file(fifo).error, "not a regular file (a FIFO)");
  EXPECT_EQ(read_json_file(directory.path()).error, "not a regular file (a directory)");
  EXPECT_EQ(read_json_file("/dev/zero").error, "not a regular file (a character device)");
}

TEST(ReadJsonFile, RefusesAFileLargerThanTheBoundBeforeReadingIt) {
  TemporaryDirectory directory;
  const std::string sparse = directory.file("sparse");
  write_plain(sparse, "[]");
  ASSERT_EQ(truncate(sparse.c_str(), 1 << 30), 0);
  EXPECT_EQ(read_json_file(sparse).error, "larger than 64 MiB (1073741824 bytes); not read");
  ASSERT_EQ(truncate(sparse.c_str(), 2), 0);
  EXPECT_TRUE(read_json_file(sparse).ok);
}

TEST(AtomicWrite, WritesANewFileAndLeavesNoTemporaryFile) {
  TemporaryDirectory directory;
  ASSERT_FALSE(directory.path().empty());
  const std::string path = directory.file("int8.json");
  std::string why;
  const std::string text = int8_config_text(full_config());
  ASSERT_TRUE(write_file_atomically(path, text, &why)) << why;
  EXPECT_EQ(read_file(path), text);
  EXPECT_EQ(directory.names(), std::vector<std::string>{"int8.json"});
}

TEST(AtomicWrite, ReplacesAnExistingFile) {
  TemporaryDirectory directory;
  const std::string path = directory.file("int8.json");
  write_plain(path, std::string(10000, 'o'));  // longer than the new text: no leftover tail
  std::string why;
  ASSERT_TRUE(write_file_atomically(path, "[]\n", &why)) << why;
  EXPECT_EQ(read_file(path), "[]\n");
  EXPECT_EQ(directory.names(), std::vector<std::string>{"int8.json"});
}

TEST(AtomicWrite, WritesEmptyTextAndRelativePaths) {
  TemporaryDirectory directory;
  std::string why;
  ASSERT_TRUE(write_file_atomically(directory.file("empty"), "", &why)) << why;
  EXPECT_EQ(read_file(directory.file("empty")), "");
  const fs::path previous = fs::current_path();
  fs::current_path(directory.path());
  const bool relative = write_file_atomically("relative.json", "x", &why);
  fs::current_path(previous);
  ASSERT_TRUE(relative) << why;
  EXPECT_EQ(read_file(directory.file("relative.json")), "x");
}

TEST(AtomicWrite, NewFileModeIs0644LessTheUmask) {
  TemporaryDirectory directory;
  const mode_t previous = umask(027);
  std::string why;
  const bool written = write_file_atomically(directory.file("a.json"), "[]\n", &why);
  umask(previous);
  ASSERT_TRUE(written) << why;
  struct stat status {};
  ASSERT_EQ(stat(directory.file("a.json").c_str(), &status), 0);
  EXPECT_EQ(status.st_mode & 0777, 0640u);
}

TEST(AtomicWrite, FailureLeavesTheOriginalUntouched) {
  TemporaryDirectory directory;
  std::string why;
  if (running_as_root()) {
    // Root ignores directory permissions; a missing directory fails the same way.
    const std::string missing = directory.file("missing");
    EXPECT_FALSE(write_file_atomically(missing + "/int8.json", "[]\n", &why));
    EXPECT_EQ(why, "cannot create temporary file in " + missing + ": No such file or directory");
    EXPECT_TRUE(directory.names().empty());
    return;
  }
  const std::string path = directory.file("int8.json");
  const std::string original = "[{\"original\": true}]\n";
  write_plain(path, original);
  ASSERT_EQ(chmod(directory.path().c_str(), 0555), 0);
  const bool written = write_file_atomically(path, "[]\n", &why);
  chmod(directory.path().c_str(), 0755);
  EXPECT_FALSE(written);
  EXPECT_EQ(why, "cannot create temporary file in " + directory.path() + ": Permission denied");
  EXPECT_EQ(read_file(path), original);
  EXPECT_EQ(directory.names(), std::vector<std::string>{"int8.json"});
}

TEST(AtomicWrite, FailureAfterTheTemporaryFileIsWrittenRemovesIt) {
  // Renaming a file over a directory fails after the temporary file exists, for root too.
  TemporaryDirectory directory;
  const std::string path = directory.file("int8.json");
  ASSERT_TRUE(fs::create_directory(path));
  write_plain(path + "/inside", "kept");
  std::string why;
  EXPECT_FALSE(write_file_atomically(path, "[]\n", &why));
  EXPECT_EQ(why.rfind("cannot replace " + path + " with " + path + ".tmp.", 0), 0u) << why;
  EXPECT_EQ(directory.names(), std::vector<std::string>{"int8.json"});
  EXPECT_TRUE(fs::is_directory(path));
  EXPECT_EQ(read_file(path + "/inside"), "kept");
}

TEST(AtomicWrite, EmptyPathFails) {
  std::string why;
  EXPECT_FALSE(write_file_atomically("", "x", &why));
  EXPECT_FALSE(why.empty());
}

TEST(CheckWritable, FileInAWritableDirectoryIsFineAndLeavesNothingBehind) {
  TemporaryDirectory directory;
  std::string why;
  EXPECT_TRUE(check_writable(directory.file("int8.json"), &why)) << why;
  EXPECT_TRUE(directory.names().empty());
  write_plain(directory.file("existing.json"), "old");
  EXPECT_TRUE(check_writable(directory.file("existing.json"), &why)) << why;
  EXPECT_EQ(read_file(directory.file("existing.json")), "old");
  EXPECT_EQ(directory.names(), std::vector<std::string>{"existing.json"});
}

TEST(CheckWritable, MissingDirectoryFailsAndNamesThePath) {
  TemporaryDirectory directory;
  const std::string path = directory.file("missing/int8.json");
  std::string why;
  EXPECT_FALSE(check_writable(path, &why));
  EXPECT_NE(why.find(path), std::string::npos) << why;
  EXPECT_NE(why.find("No such file or directory"), std::string::npos) << why;
}

TEST(CheckWritable, DirectoryOfAFileFailsAndNamesThePath) {
  TemporaryDirectory directory;
  write_plain(directory.file("plain"), "x");
  const std::string path = directory.file("plain/int8.json");
  std::string why;
  EXPECT_FALSE(check_writable(path, &why));
  EXPECT_NE(why.find(path), std::string::npos) << why;
  EXPECT_NE(why.find("is not a directory"), std::string::npos) << why;
}

TEST(CheckWritable, PathThatIsADirectoryFailsAndNamesThePath) {
  TemporaryDirectory directory;
  const std::string path = directory.file("int8.json");
  ASSERT_TRUE(fs::create_directory(path));
  std::string why;
  EXPECT_FALSE(check_writable(path, &why));
  EXPECT_EQ(why, "cannot write " + path + ": it is a directory");
}

TEST(CheckWritable, UnwritableDirectoryFailsAndNamesThePath) {
  if (running_as_root()) GTEST_SKIP() << "root ignores directory permissions";
  TemporaryDirectory directory;
  ASSERT_EQ(chmod(directory.path().c_str(), 0555), 0);
  const std::string path = directory.file("int8.json");
  std::string why;
  const bool writable = check_writable(path, &why);
  chmod(directory.path().c_str(), 0755);
  EXPECT_FALSE(writable);
  EXPECT_EQ(why, "cannot write " + path + ": cannot create temporary file in " +
                     directory.path() + ": Permission denied");
}

}  // namespace
}  // namespace ipex_shim
