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

}  // namespace ipex_shim
