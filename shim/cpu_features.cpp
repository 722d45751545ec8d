#include "shim/cpu_features.h"

#include <cpuid.h>

namespace ipex_shim {
namespace {

bool bit(unsigned value, int index) { return (value >> index) & 1u; }

CpuFeatures detect() {
  CpuFeatures features;
  unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
  if (!__get_cpuid(1, &eax, &ebx, &ecx, &edx)) return features;
  const bool osxsave = bit(ecx, 27);
  unsigned long long xcr0 = 0;
  if (osxsave) {
    unsigned lo = 0, hi = 0;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    xcr0 = (static_cast<unsigned long long>(hi) << 32) | lo;
  }
  const bool os_avx = (xcr0 & 0x6) == 0x6;
  features.os_saves_avx512 = (xcr0 & 0xe6) == 0xe6;

  if (__get_cpuid_max(0, nullptr) < 7) return features;
  __cpuid_count(7, 0, eax, ebx, ecx, edx);
  features.avx2 = os_avx && bit(ebx, 5);
  const bool avx512 = features.os_saves_avx512;
  features.avx512f = avx512 && bit(ebx, 16);
  features.avx512bw = avx512 && bit(ebx, 30);
  features.avx512vl = avx512 && bit(ebx, 31);
  features.avx512_vnni = avx512 && bit(ecx, 11);
  // AMX state is enabled per process on Linux (arch_prctl), which oneDNN requests itself;
  // CPUID tells what the hardware has.
  features.amx_bf16 = bit(edx, 22);
  features.amx_tile = bit(edx, 24);
  features.amx_int8 = bit(edx, 25);
  const unsigned max_subleaf = eax;
  if (max_subleaf >= 1) {
    __cpuid_count(7, 1, eax, ebx, ecx, edx);
    features.avx_vnni = os_avx && bit(eax, 4);
    features.avx512_bf16 = avx512 && bit(eax, 5);
    features.avx_ne_convert = os_avx && bit(edx, 5);
  }
  return features;
}

}  // namespace

const CpuFeatures& cpu_features() {
  static const CpuFeatures features = detect();
  return features;
}

std::vector<std::pair<std::string, bool>> cpu_feature_list(const CpuFeatures& f) {
  return {{"avx2", f.avx2},           {"avx512f", f.avx512f},
          {"avx512bw", f.avx512bw},   {"avx512vl", f.avx512vl},
          {"avx512_vnni", f.avx512_vnni}, {"avx512_bf16", f.avx512_bf16},
          {"avx_vnni", f.avx_vnni},   {"amx_tile", f.amx_tile},
          {"amx_bf16", f.amx_bf16},   {"amx_int8", f.amx_int8},
          {"avx_ne_convert", f.avx_ne_convert}};
}

Bf16Decision decide_bf16(const CpuFeatures& f, bool onednn_reaches_bf16, bool emulation_forced) {
  const bool cpu_bf16 = f.avx512_bf16 || f.amx_bf16 || f.avx_ne_convert;
  if (cpu_bf16 && onednn_reaches_bf16) return {true, true, "BF16 kernels (native BF16)"};
  std::string missing =
      cpu_bf16 ? "oneDNN's ISA here has no BF16 kernels for it (its version, or ONEDNN_MAX_CPU_ISA)"
               : "this CPU has no native BF16 (avx512_bf16, amx_bf16 or avx_ne_convert)";
  if (emulation_forced)
    return {true, false, "BF16 kernels, emulated (IPEX_BF16_EMULATION=1; " + missing + ")"};
  return {false, false, "fp32 kernels: " + missing +
                     ", and emulated BF16 is slower than fp32 (IPEX_BF16_EMULATION=1 forces it)"};
}

std::string cpu_feature_summary(const CpuFeatures& features) {
  std::string out;
  for (const auto& [name, present] : cpu_feature_list(features)) {
    if (!present) continue;
    if (!out.empty()) out += ' ';
    out += name;
  }
  return out.empty() ? "none of interest" : out;
}

}  // namespace ipex_shim
