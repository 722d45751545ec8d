// Version counters, where a tensor has one. Tensors made under torch.inference_mode() have
// none (reading it throws "Inference tensors do not track version counter"), so every
// staleness check that relies on versions needs another way for them: the weight cache does
// not keep their packings (kernels/weight_cache.cpp), and fusion watches writes to the
// tensors it depends on through its observer (shim/fusion.cpp).
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>

namespace ipex_shim {

inline bool tracks_version(const at::Tensor& tensor) { return !tensor.is_inference(); }

// The version counter, or 0 for a tensor without one.
inline uint32_t version_of(const at::Tensor& tensor) {
  return tensor.is_inference() ? 0 : tensor._version();
}

}  // namespace ipex_shim
