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
  bool os_saves_avx512 = false;  // XCR0 enables the AVX-512 state
};

const CpuFeatures& cpu_features();

// (name, present) pairs in a fixed order, for JSON and the banner.
std::vector<std::pair<std::string, bool>> cpu_feature_list(const CpuFeatures& features);

// Space-separated names of the features present, e.g. "avx2 avx512f avx512_bf16".
std::string cpu_feature_summary(const CpuFeatures& features);

}  // namespace ipex_shim
