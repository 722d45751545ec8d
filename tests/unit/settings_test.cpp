// The environment table: every variable, valid and invalid values.
#include <gtest/gtest.h>

#include <cstring>
#include <map>
#include <string>

#include "shim/core_interface.h"
#include "shim/cpu_features.h"
#include "shim/settings.h"

namespace ipex_shim {
namespace {

// A fake environment for parse_settings (it takes a plain function pointer).
std::map<std::string, std::string>& fake_env() {
  static std::map<std::string, std::string> env;
  return env;
}

const char* lookup(const char* name) {
  auto it = fake_env().find(name);
  return it == fake_env().end() ? nullptr : it->second.c_str();
}

class EnvTest : public ::testing::Test {
 protected:
  void SetUp() override { fake_env().clear(); }
  Settings parse(int cpus = 8) {
    problems.clear();
    return parse_settings(&lookup, cpus, &problems);
  }
  std::vector<std::string> problems;
};

TEST_F(EnvTest, EmptyEnvironmentGivesDefaults) {
  Settings s = parse(6);
  EXPECT_EQ(s.mode, Mode::off);
  EXPECT_EQ(s.config_path, "");
  EXPECT_EQ(s.verbose, 0);
  EXPECT_TRUE(s.fusion);
  EXPECT_FALSE(s.strict);
  EXPECT_EQ(s.num_threads, 6);
  EXPECT_FALSE(s.threads_from_env);
  EXPECT_TRUE(problems.empty());
}

TEST_F(EnvTest, EveryModeNameIsAccepted) {
  const std::pair<const char*, Mode> cases[] = {
      {"off", Mode::off},   {"fp32", Mode::fp32},
      {"bf16", Mode::bf16}, {"calibration", Mode::calibration},
      {"int8", Mode::int8}, {"inference", Mode::int8}};
  for (const auto& [text, mode] : cases) {
    fake_env()["IPEX_MODE"] = text;
    EXPECT_EQ(parse().mode, mode) << text;
    EXPECT_TRUE(problems.empty()) << text;
  }
}

TEST_F(EnvTest, InvalidModeFallsBackToOffAndNamesAllowedValues) {
  for (const char* bad : {"BF16", "bf16 ", "", "fast", "int4"}) {
    fake_env()["IPEX_MODE"] = bad;
    Settings s = parse();
    EXPECT_EQ(s.mode, Mode::off) << "'" << bad << "'";
    ASSERT_EQ(problems.size(), 1u) << "'" << bad << "'";
    const std::string& message = problems[0];
    EXPECT_NE(message.find("IPEX_MODE"), std::string::npos) << message;
    EXPECT_NE(message.find(std::string("'") + bad + "'"), std::string::npos) << message;
    EXPECT_NE(message.find("off, fp32, bf16, calibration, int8"), std::string::npos) << message;
    EXPECT_NE(message.find("using 'off'"), std::string::npos) << message;
  }
}

TEST_F(EnvTest, ConfigPathIsKeptVerbatim) {
  fake_env()["IPEX_CONFIG"] = "/tmp/some dir/conf.json";
  EXPECT_EQ(parse().config_path, "/tmp/some dir/conf.json");
  EXPECT_TRUE(problems.empty());
}

TEST_F(EnvTest, EmptyConfigIsReportedAndIgnored) {
  fake_env()["IPEX_CONFIG"] = "";
  EXPECT_EQ(parse().config_path, "");
  ASSERT_EQ(problems.size(), 1u);
  EXPECT_NE(problems[0].find("IPEX_CONFIG"), std::string::npos);
}

TEST_F(EnvTest, VerboseAcceptsZeroToTwo) {
  for (int level = 0; level <= 2; ++level) {
    fake_env()["IPEX_VERBOSE"] = std::to_string(level);
    EXPECT_EQ(parse().verbose, level);
    EXPECT_TRUE(problems.empty());
  }
}

TEST_F(EnvTest, InvalidVerboseFallsBackToZero) {
  for (const char* bad : {"3", "-1", "yes", "1.0", " 1", ""}) {
    fake_env()["IPEX_VERBOSE"] = bad;
    EXPECT_EQ(parse().verbose, 0) << bad;
    ASSERT_EQ(problems.size(), 1u) << bad;
    EXPECT_NE(problems[0].find("IPEX_VERBOSE"), std::string::npos);
    EXPECT_NE(problems[0].find("0, 1, 2"), std::string::npos);
  }
}

TEST_F(EnvTest, FusionAndStrictSwitches) {
  fake_env()["IPEX_FUSION"] = "0";
  fake_env()["IPEX_STRICT"] = "1";
  Settings s = parse();
  EXPECT_FALSE(s.fusion);
  EXPECT_TRUE(s.strict);
  EXPECT_TRUE(problems.empty());
}

// Found by tests/fuzz/settings_fuzz.cpp: a value holding a newline made its message two lines.
TEST_F(EnvTest, InvalidValueIsShownOnOneLineAndCutShort) {
  fake_env()["IPEX_MODE"] = "bf16\nipex_shim: forged line\x1b[2J";
  fake_env()["IPEX_INT8_ALGORITHM"] = std::string(1000, 'a');
  Settings s = parse();
  EXPECT_EQ(s.mode, Mode::off);
  ASSERT_EQ(problems.size(), 2u);
  EXPECT_NE(problems[0].find("IPEX_MODE='bf16\\x0aipex_shim: forged line\\x1b[2J'"),
            std::string::npos) << problems[0];
  EXPECT_LT(problems[1].size(), 200u);
  for (const std::string& problem : problems) {
    for (char c : problem) EXPECT_GE(static_cast<unsigned char>(c), 0x20) << problem;
  }
}

TEST_F(EnvTest, InvalidSwitchKeepsDefaultAndSaysSo) {
  fake_env()["IPEX_FUSION"] = "off";
  fake_env()["IPEX_STRICT"] = "true";
  Settings s = parse();
  EXPECT_TRUE(s.fusion);
  EXPECT_FALSE(s.strict);
  ASSERT_EQ(problems.size(), 2u);
  EXPECT_NE(problems[0].find("IPEX_FUSION='off'"), std::string::npos) << problems[0];
  EXPECT_NE(problems[1].find("IPEX_STRICT='true'"), std::string::npos) << problems[1];
}

TEST_F(EnvTest, ThreadsFollowOmpNumThreads) {
  fake_env()["OMP_NUM_THREADS"] = "3";
  Settings s = parse(16);
  EXPECT_EQ(s.num_threads, 3);
  EXPECT_TRUE(s.threads_from_env);
  fake_env()["OMP_NUM_THREADS"] = "4,2";  // nested levels: the outer one counts
  EXPECT_EQ(parse(16).num_threads, 4);
  EXPECT_TRUE(problems.empty());
}

TEST_F(EnvTest, ThreadsDefaultToAffinityMask) {
  EXPECT_EQ(parse(2).num_threads, 2);
  EXPECT_EQ(parse(0).num_threads, 1);  // never zero threads
}

TEST_F(EnvTest, InvalidOmpNumThreadsUsesAffinityMask) {
  for (const char* bad : {"0", "-2", "many", ""}) {
    fake_env()["OMP_NUM_THREADS"] = bad;
    Settings s = parse(5);
    EXPECT_EQ(s.num_threads, 5) << bad;
    EXPECT_FALSE(s.threads_from_env) << bad;
    ASSERT_EQ(problems.size(), 1u) << bad;
    EXPECT_NE(problems[0].find("OMP_NUM_THREADS"), std::string::npos);
  }
}

TEST_F(EnvTest, Int8CalibrationChoicesAreParsedStrictly) {
  fake_env()["IPEX_INT8_ALGORITHM"] = "percentile";
  fake_env()["IPEX_INT8_GRANULARITY"] = "per_tensor";
  fake_env()["IPEX_INT8_MIN_SQNR"] = "22.5";
  Settings s = parse(2);
  EXPECT_EQ(s.int8_algorithm, "percentile");
  EXPECT_EQ(s.int8_granularity, "per_tensor");
  EXPECT_DOUBLE_EQ(s.int8_min_sqnr_db, 22.5);
  EXPECT_TRUE(problems.empty());
  fake_env()["IPEX_INT8_ALGORITHM"] = "min_max";
  EXPECT_EQ(parse(2).int8_algorithm, "min_max");
  EXPECT_TRUE(problems.empty());
  fake_env().erase("IPEX_INT8_ALGORITHM");
  EXPECT_EQ(parse(2).int8_algorithm, "mse");  // the default
  EXPECT_TRUE(problems.empty());
  for (const char* bad : {"entropy", "MIN_MAX", "", "MSE", "l2"}) {
    problems.clear();
    fake_env()["IPEX_INT8_ALGORITHM"] = bad;
    EXPECT_EQ(parse(2).int8_algorithm, "mse") << bad;
    ASSERT_EQ(problems.size(), 1u) << bad;
    EXPECT_NE(problems[0].find("IPEX_INT8_ALGORITHM"), std::string::npos);
  }
  fake_env().erase("IPEX_INT8_ALGORITHM");
  for (const char* bad : {"-1", "101", "nan", "inf", " 20", "20dB", ""}) {
    problems.clear();
    fake_env()["IPEX_INT8_MIN_SQNR"] = bad;
    EXPECT_DOUBLE_EQ(parse(2).int8_min_sqnr_db, 15.0) << bad;
    ASSERT_EQ(problems.size(), 1u) << bad;
    EXPECT_NE(problems[0].find("IPEX_INT8_MIN_SQNR"), std::string::npos) << bad;
  }
}

TEST_F(EnvTest, Int8FallbackPrecisionIsParsedStrictly) {
  EXPECT_EQ(parse(2).int8_fallback, "bf16");
  fake_env()["IPEX_INT8_FALLBACK"] = "fp32";
  EXPECT_EQ(parse(2).int8_fallback, "fp32");
  EXPECT_TRUE(problems.empty());
  for (const char* bad : {"BF16", "fp16", "int8", ""}) {
    problems.clear();
    fake_env()["IPEX_INT8_FALLBACK"] = bad;
    EXPECT_EQ(parse(2).int8_fallback, "bf16") << bad;
    ASSERT_EQ(problems.size(), 1u) << bad;
    EXPECT_NE(problems[0].find("IPEX_INT8_FALLBACK"), std::string::npos) << bad;
    EXPECT_NE(problems[0].find("bf16, fp32"), std::string::npos) << problems[0];
  }
}

// A field missing from the C struct between bootstrap and core arrives as its default: the
// core would silently ignore that variable.
TEST_F(EnvTest, EverySettingCrossesToTheCore) {
  fake_env()["IPEX_MODE"] = "calibration";
  fake_env()["IPEX_CONFIG"] = "/tmp/x.json";
  fake_env()["IPEX_VERBOSE"] = "2";
  fake_env()["IPEX_FUSION"] = "0";
  fake_env()["IPEX_STRICT"] = "1";
  fake_env()["IPEX_INT8_ALGORITHM"] = "percentile";
  fake_env()["IPEX_INT8_GRANULARITY"] = "per_tensor";
  fake_env()["IPEX_INT8_MIN_SQNR"] = "31.5";
  fake_env()["IPEX_INT8_FALLBACK"] = "fp32";
  fake_env()["IPEX_BUFFER_CACHE_MB"] = "7";
  fake_env()["IPEX_BF16_EMULATION"] = "1";
  fake_env()["OMP_NUM_THREADS"] = "3";
  const Settings sent = parse(2);
  ASSERT_TRUE(problems.empty());
  const IpexShimCoreSettings wire = to_core_settings(sent);
  const Settings got = from_core_settings(wire);
  EXPECT_EQ(got.mode, Mode::calibration);
  EXPECT_EQ(got.config_path, "/tmp/x.json");
  EXPECT_EQ(got.verbose, 2);
  EXPECT_FALSE(got.fusion);
  EXPECT_TRUE(got.strict);
  EXPECT_EQ(got.int8_algorithm, "percentile");
  EXPECT_EQ(got.int8_granularity, "per_tensor");
  EXPECT_DOUBLE_EQ(got.int8_min_sqnr_db, 31.5);
  EXPECT_EQ(got.int8_fallback, "fp32");
  EXPECT_EQ(got.buffer_cache_mb, 7);
  EXPECT_EQ(got.num_threads, 3);
  EXPECT_TRUE(got.threads_from_env);
  EXPECT_TRUE(got.bf16_emulation);
  // Each of these differs from its default, so a dropped field fails above.
  const Settings defaults;
  EXPECT_NE(sent.int8_algorithm, defaults.int8_algorithm);
  EXPECT_NE(sent.int8_granularity, defaults.int8_granularity);
  EXPECT_NE(sent.int8_min_sqnr_db, defaults.int8_min_sqnr_db);
  EXPECT_NE(sent.int8_fallback, defaults.int8_fallback);
  EXPECT_NE(sent.buffer_cache_mb, defaults.buffer_cache_mb);
}

TEST_F(EnvTest, BufferCacheSizeIsParsedStrictly) {
  fake_env()["IPEX_BUFFER_CACHE_MB"] = "0";
  EXPECT_EQ(parse(2).buffer_cache_mb, 0);
  fake_env()["IPEX_BUFFER_CACHE_MB"] = "4096";
  EXPECT_EQ(parse(2).buffer_cache_mb, 4096);
  EXPECT_TRUE(problems.empty());
  for (const char* bad : {"-1", "1048577", "1G", " 5", "", "2.5"}) {
    problems.clear();
    fake_env()["IPEX_BUFFER_CACHE_MB"] = bad;
    EXPECT_EQ(parse(2).buffer_cache_mb, 1024) << bad;
    ASSERT_EQ(problems.size(), 1u) << bad;
    EXPECT_NE(problems[0].find("IPEX_BUFFER_CACHE_MB"), std::string::npos) << bad;
  }
}

TEST(EnvTable, ListsEveryVariableTheParserReads) {
  std::vector<std::string> names;
  for (const EnvVar& var : environment_table()) names.push_back(var.name);
  const std::vector<std::string> expected = {
      "IPEX_MODE",           "IPEX_CONFIG",           "IPEX_VERBOSE",       "IPEX_FUSION",
      "IPEX_STRICT",         "IPEX_INT8_ALGORITHM",   "IPEX_INT8_GRANULARITY",
      "IPEX_INT8_MIN_SQNR",  "IPEX_INT8_FALLBACK",    "IPEX_BF16_EMULATION",
      "IPEX_BUFFER_CACHE_MB",
      "OMP_NUM_THREADS"};
  EXPECT_EQ(names, expected);
}

TEST(EnvTable, AffinityMaskCountIsPositive) { EXPECT_GE(cpus_in_affinity_mask(), 1); }

TEST_F(EnvTest, Bf16EmulationIsASwitchThatDefaultsToOff) {
  EXPECT_FALSE(parse(2).bf16_emulation);
  fake_env()["IPEX_BF16_EMULATION"] = "1";
  EXPECT_TRUE(parse(2).bf16_emulation);
  fake_env()["IPEX_BF16_EMULATION"] = "yes";
  EXPECT_FALSE(parse(2).bf16_emulation);
  ASSERT_EQ(problems.size(), 1u);
  EXPECT_NE(problems[0].find("IPEX_BF16_EMULATION"), std::string::npos);
}

// Every branch of bf16 mode's CPU check, with the CPU's features stubbed.
TEST(Bf16Decision, NativeBf16RunsBf16AndAnythingElseRunsFp32UnlessForced) {
  CpuFeatures avx2_only;
  avx2_only.avx2 = true;
  CpuFeatures avx512_vnni = avx2_only;
  avx512_vnni.avx512f = avx512_vnni.avx512_vnni = true;
  CpuFeatures avx512_bf16 = avx512_vnni;
  avx512_bf16.avx512_bf16 = true;
  CpuFeatures amx = avx512_bf16;
  amx.amx_tile = amx.amx_bf16 = amx.amx_int8 = true;
  CpuFeatures ne_convert = avx2_only;
  ne_convert.avx_ne_convert = true;

  for (const CpuFeatures& native : {avx512_bf16, amx, ne_convert}) {
    Bf16Decision d = decide_bf16(native, true, false);
    EXPECT_TRUE(d.run_bf16 && d.native) << d.why;
    // oneDNN held below BF16 (ONEDNN_MAX_CPU_ISA): emulated, so fp32.
    d = decide_bf16(native, false, false);
    EXPECT_FALSE(d.run_bf16) << d.why;
    EXPECT_NE(d.why.find("ONEDNN_MAX_CPU_ISA"), std::string::npos) << d.why;
  }
  for (const CpuFeatures& emulated : {avx2_only, avx512_vnni}) {
    Bf16Decision d = decide_bf16(emulated, false, false);
    EXPECT_FALSE(d.run_bf16) << d.why;
    EXPECT_NE(d.why.find("no native BF16"), std::string::npos) << d.why;
    EXPECT_NE(d.why.find("IPEX_BF16_EMULATION=1"), std::string::npos) << d.why;
    d = decide_bf16(emulated, false, true);  // forced
    EXPECT_TRUE(d.run_bf16) << d.why;
    EXPECT_FALSE(d.native) << d.why;
  }
}

}  // namespace
}  // namespace ipex_shim
