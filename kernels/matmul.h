// Matrix products on oneDNN's matmul primitive, in fp32 or BF16, for calls that need no
// gradient; results are fp32 and contiguous, as stock PyTorch returns them.
//   linear_forward:  y = x W^T + b, the weight packed once through the weight cache.
//   batched_matmul:  C = A B for two activations of equal rank >= 2, batch dimensions equal
//                    or 1 (broadcast); A and B may be strided views (a transpose is free).
#pragma once

#include <ATen/core/Tensor.h>

#include "kernels/onednn_context.h"
#include "shim/op_stats.h"

namespace ipex_shim {

enum class MatmulActivation { none, relu, gelu_erf, gelu_tanh };

Fallback linear_support(const at::Tensor& input, const at::Tensor& weight,
                        const c10::optional<at::Tensor>& bias);

at::Tensor linear_forward(const at::Tensor& input, const at::Tensor& weight,
                          const c10::optional<at::Tensor>& bias, Precision precision,
                          MatmulActivation activation = MatmulActivation::none);

Fallback batched_matmul_support(const at::Tensor& a, const at::Tensor& b);

// C = alpha * (A B) [+ bias], where bias (if defined) broadcasts to C along leading dims
// (shape (N), (1, N) or C's shape). alpha must not be 0 when a bias is given.
at::Tensor batched_matmul(const at::Tensor& a, const at::Tensor& b, Precision precision,
                          float alpha = 1.f, const at::Tensor& bias = at::Tensor());

}  // namespace ipex_shim
