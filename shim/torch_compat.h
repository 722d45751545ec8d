// What differs between the torch releases the shim builds against (1.13 and 2.x), in one
// place. Wrappers and kernels are written against concrete sizes (IntArrayRef, int64_t);
// torch 2.x's operator schemas take symbolic ones (SymIntArrayRef, SymInt) for many ops
// (convolutions, layer_norm, _convolution), and torch 1.13's for a few (adaptive pooling).
//
//   as_kernel_arg<KernelParam>(arg)  a schema's argument in the type a wrapper takes
//   as_op_arg<OpParam>(arg)          a wrapper's value in the type an op's call takes
//   concrete(arg)                    false for a symbolic size (torch.compile's tracing with
//                                    dynamic shapes): such a call must run stock
#pragma once

#include <ATen/autocast_mode.h>
#include <ATen/core/Tensor.h>
#include <c10/core/DispatchKey.h>
#include <c10/core/Storage.h>
#include <c10/core/SymInt.h>
#include <torch/csrc/api/include/torch/version.h>
#include <c10/core/SymIntArrayRef.h>

#include <array>
#include <type_traits>
#include <utility>

namespace ipex_shim::compat {

constexpr const char* kTorchVersion = TORCH_VERSION;

// Mode keys the shim may take, in order of preference: autocast keys of devices a CPU
// program does not use, above Autograd. torch 2.x puts stock kernels at AutocastXPU (its own
// XPU autocast), so the first free one is taken at start (shim/dispatch_key.h).
#if TORCH_VERSION_MAJOR >= 2
constexpr std::array<c10::DispatchKey, 5> kModeKeyCandidates = {
    c10::DispatchKey::AutocastXPU, c10::DispatchKey::AutocastIPU,
    c10::DispatchKey::AutocastHPU, c10::DispatchKey::AutocastXLA,
    c10::DispatchKey::AutocastPrivateUse1};
#else
constexpr std::array<c10::DispatchKey, 1> kModeKeyCandidates = {c10::DispatchKey::AutocastXPU};
#endif

// Whether the program's own CPU autocast is on in this thread (torch 2.x deprecates, with a
// warning on every call, the 1.13 spelling).
inline bool cpu_autocast_enabled() {
#if TORCH_VERSION_MAJOR >= 2
  return at::autocast::is_autocast_enabled(at::kCPU);
#else
  return at::autocast::is_cpu_enabled();
#endif
}

// Whether stock's convolution of a channels-last input (or weight) returns a channels-last
// result. torch 1.13: direct 2-D convolutions only (its 3-D and transposed paths return
// contiguous results); torch 2.6: 2-D and 3-D, direct and transposed (measured: conv2d,
// conv3d, conv_transpose2d, conv_transpose3d, grouped and dilated).
inline bool convolution_keeps_channels_last(int64_t spatial, bool transposed) {
#if TORCH_VERSION_MAJOR >= 2
  (void)transposed;
  return spatial == 2 || spatial == 3;
#else
  return spatial == 2 && !transposed;
#endif
}

// c10::Allocator::allocate is const on torch 1.13 and not on 2.x.
#if TORCH_VERSION_MAJOR >= 2
#define IPEX_SHIM_ALLOCATE_CONST
#else
#define IPEX_SHIM_ALLOCATE_CONST const
#endif

// The writable start of a storage's bytes (torch 2.x splits data() into const and mutable).
inline void* storage_bytes(const c10::Storage& storage) {
#if TORCH_VERSION_MAJOR >= 2
  return storage.mutable_data();
#else
  return storage.data();
#endif
}

// The fusion observer's key: a mode key above the mode key that stock torch never uses.
constexpr c10::DispatchKey kObserverKey = c10::DispatchKey::TESTING_ONLY_GenericMode;

inline bool concrete(const c10::SymInt& value) { return !value.is_symbolic(); }
inline bool concrete(c10::SymIntArrayRef values) {
  for (const c10::SymInt& value : values)
    if (value.is_symbolic()) return false;
  return true;
}
template <class T>
constexpr bool concrete(const T&) {
  return true;
}

template <class Target, class Given>
decltype(auto) as_kernel_arg(Given&& given) {
  using From = std::decay_t<Given>;
  using To = std::decay_t<Target>;
  if constexpr (std::is_same_v<From, c10::SymIntArrayRef> && std::is_same_v<To, c10::IntArrayRef>) {
    return c10::asIntArrayRefUnchecked(given);  // checked concrete() first
  } else if constexpr (std::is_same_v<From, c10::SymInt> && std::is_same_v<To, int64_t>) {
    return given.expect_int();
  } else {
    return std::forward<Given>(given);
  }
}

template <class Target, class Given>
decltype(auto) as_op_arg(Given&& given) {
  using From = std::decay_t<Given>;
  using To = std::decay_t<Target>;
  if constexpr (std::is_same_v<To, c10::SymIntArrayRef> &&
                !std::is_same_v<From, c10::SymIntArrayRef> &&
                std::is_convertible_v<Given, c10::IntArrayRef>) {
    return c10::fromIntArrayRefUnchecked(c10::IntArrayRef(given));
  } else if constexpr (std::is_same_v<To, c10::SymInt> && std::is_integral_v<From>) {
    return c10::SymInt(static_cast<int64_t>(given));
  } else {
    return std::forward<Given>(given);
  }
}

}  // namespace ipex_shim::compat
