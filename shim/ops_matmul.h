#pragma once

#include <ATen/core/Tensor.h>

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

// The composed attention's products in int8 mode (shim/ops_attention.cpp): what
// matmul_override gives for `matmul(a_factor * a, b)` (q scaled by 1/sqrt(head size), times
// k) or, with `softmax_a`, for `matmul(softmax(a, -1), b)` (the probabilities times v), on the
// config entry matmul_override would find for those tensors. Where that entry is INT8 the
// first step is folded into the product: a_factor into A's quantisation (no pass over A),
// the softmax writing A's u8 bytes (no fp32 probabilities, no reorder of them). Otherwise the
// first step runs as the caller ran it before (in place on `a`, which the caller owns) and
// the product as matmul_override runs it.
at::Tensor attention_product_int8(const at::Tensor& a, const at::Tensor& b, float a_factor,
                                  bool softmax_a);

}  // namespace ipex_shim
