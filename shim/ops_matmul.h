#pragma once

#include <ATen/core/Tensor.h>

#include <functional>

namespace ipex_shim {

// Kernels the override table registers for the matrix-product ops.
at::Tensor linear_override(const at::Tensor& input, const at::Tensor& weight,
                           const c10::optional<at::Tensor>& bias);
at::Tensor matmul_override(const at::Tensor& a, const at::Tensor& b);
at::Tensor mm_override(const at::Tensor& a, const at::Tensor& b);
at::Tensor bmm_override(const at::Tensor& a, const at::Tensor& b);
at::Tensor addmm_override(const at::Tensor& self, const at::Tensor& a, const at::Tensor& b,
                          const at::Scalar& beta, const at::Scalar& alpha);
at::Tensor baddbmm_override(const at::Tensor& self, const at::Tensor& a, const at::Tensor& b,
                            const at::Scalar& beta, const at::Scalar& alpha);

// A first step on A before `matmul(A, B)`, which the product may take into itself: the
// composed attention's (shim/ops_attention.cpp) q times 1/sqrt(head size) (`a_factor`), or
// the softmax of the scores over their last dimension (`softmax`). `run` does the step as the
// caller would, in place on A (which the caller owns).
struct ProductFirstStep {
  float a_factor = 1.f;
  bool softmax = false;
  std::function<void()> run;
};

// What matmul_override gives for A after `first` times B, on the config entry it would find
// for those tensors. Where that entry is INT8 the step is folded into the product: the factor
// into A's quantisation (no pass over A), the softmax writing A's u8 bytes (no fp32
// probabilities, no reorder of them). Otherwise `first.run` runs before the product.
at::Tensor matmul_after_first_step(const at::Tensor& a, const at::Tensor& b,
                                   const ProductFirstStep& first);

}  // namespace ipex_shim
