// What the CPU offers for the shim's kernels, read with CPUID (torch-free), so the banner
// and status() can say why a kernel was or was not chosen.
#pragma once

#include <string>
#include <utility>
#include <vector>

namespace ipex_shim {

struct CpuFeatures {
  bool avx2 = false;
  bool avx512f = false;
  bool avx512bw = false;
  bool avx512vl = false;
  bool avx512_vnni = false;
  bool avx512_bf16 = false;
  bool avx_vnni = false;
  bool amx_tile = false;
  bool amx_bf16 = false;
  bool amx_int8 = false;
  bool avx_ne_convert = false;   // BF16 conversions for AVX2-class cores
  bool os_saves_avx512 = false;  // XCR0 enables the AVX-512 state
};

const CpuFeatures& cpu_features();

// (name, present) pairs in a fixed order, for JSON and the banner.
std::vector<std::pair<std::string, bool>> cpu_feature_list(const CpuFeatures& features);

// How bf16 mode runs here, decided once at start from what the CPU computes natively.
// Without native BF16 (avx512_bf16, amx_bf16 or avx_ne_convert, within the ISA oneDNN is
// allowed to use) oneDNN emulates BF16 or has no BF16 kernels at all: emulated BF16 ran
// ResNet-50 at half the speed of fp32, so bf16 mode then runs the fp32 kernels unless the
// user forces BF16 (IPEX_BF16_EMULATION=1, for numerics work).
struct Bf16Decision {
  bool run_bf16 = false;
  bool native = false;
  std::string why;  // one line for the banner, status() and the warning
};
// `onednn_reaches_bf16`: oneDNN's effective ISA (after ONEDNN_MAX_CPU_ISA) includes the BF16
// instructions the CPU has. Pure: the unit tests pass any combination.
Bf16Decision decide_bf16(const CpuFeatures& features, bool onednn_reaches_bf16,
                         bool emulation_forced);

// Space-separated names of the features present, e.g. "avx2 avx512f avx512_bf16".
std::string cpu_feature_summary(const CpuFeatures& features);

}  // namespace ipex_shim
