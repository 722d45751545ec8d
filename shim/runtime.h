// Process-wide state of the running core: the settings it started with and what this build
// implements. Written once by start_core(), read everywhere afterwards.
#pragma once

#include <string>
#include <vector>

#include "shim/cpu_features.h"
#include "shim/op_stats.h"
#include "shim/settings.h"

namespace ipex_shim {

const Settings& runtime_settings();
void set_runtime_settings(const Settings& settings);

// What became of IPEX_CONFIG: "none", "applied", "applied in part (...)", "not used: why".
std::string config_state();
void set_config_state(const std::string& state);

// fp32, bf16 and int8 (for the ops its config does not quantise): the modes that run the
// shim's floating-point kernels.
inline bool uses_float_kernels(Mode mode) {
  return mode == Mode::fp32 || mode == Mode::bf16 || mode == Mode::int8;
}

// How bf16 mode runs on this CPU (shim/cpu_features.h), decided once at start.
const Bf16Decision& bf16_decision();
void set_bf16_decision(Bf16Decision decision);

// Whether int8 mode runs an op its config leaves out of INT8 (`quantized: false`) in BF16:
// IPEX_INT8_FALLBACK=bf16 (the default) where bf16 mode runs BF16 (bf16_decision), decided
// once at start after it. Otherwise such an op runs in fp32.
bool int8_fallback_bf16();
void set_int8_fallback_bf16(bool bf16);

// Whether oneDNN's effective ISA here (after ONEDNN_MAX_CPU_ISA) includes BF16 instructions,
// and VNNI (or AMX) for INT8.
bool onednn_reaches_bf16();
bool onednn_reaches_int8();
// Whether it includes AMX: oneDNN's AMX convolutions run on NHWC activations, not on channel
// blocks, and the kernels choose their layouts and INT8 addend handling by it.
bool onednn_reaches_amx();
// Whether oneDNN has BF16 kernels here at all, native or emulated (kernel tests need them).
bool onednn_has_bf16_kernels();
// Whether an INT8 convolution's sum post-op reads a handed-over INT8 addend's bytes as they
// are, rescaling them itself, instead of a reorder requantising them into the destination
// first: where oneDNN's ISA includes avx512_core_bf16 (AMX included), where that measured
// faster; below it, on a Xeon with VNNI and no BF16, the sum's scale slowed oneDNN 2.6's 1x1
// convolutions by more than the reorders cost (kernels/convolution.cpp).
bool int8_sum_reads_addends_as_they_are();

// Modes whose own kernels exist in this build; the others are accepted and run stock.
const std::vector<Mode>& implemented_modes();
bool mode_implemented(Mode mode);

// Why a call the shim does not handle went to stock, in `mode`.
inline Fallback fallback_for_mode(Mode mode) {
  if (mode == Mode::off) return Fallback::mode_off;
  return mode_implemented(mode) ? Fallback::policy_fp32 : Fallback::mode_not_available;
}

// oneDNN as loaded in this process: "2.6.3", and the ISA it dispatches to.
std::string onednn_version();
std::string onednn_isa();

}  // namespace ipex_shim
