// Matrix products on oneDNN's matmul primitive, in fp32 or BF16 (linear also INT8), for calls that need no
// gradient; results are fp32 and contiguous, as stock PyTorch returns them, or BF16 where the
// caller hands a BF16 product's result straight to another BF16 product (`bf16_result`, only
// with Precision::bf16; an input may then be BF16 already).
//   linear_forward:  y = x W^T + b, the weight packed once through the weight cache.
//   batched_matmul:  C = A B for two activations of equal rank >= 2, batch dimensions equal
//                    or 1 (broadcast); A and B may be strided views (a transpose is free).
#pragma once

#include <ATen/core/Tensor.h>

#include "kernels/int8.h"
#include "kernels/onednn_context.h"
#include "shim/op_stats.h"

namespace ipex_shim {

enum class MatmulActivation { none, relu, gelu_erf, gelu_tanh };

Fallback linear_support(const at::Tensor& input, const at::Tensor& weight,
                        const c10::optional<at::Tensor>& bias);

// A linear's result handed straight to the next linear (a feed-forward block's two layers),
// its bytes left in that linear's input type inside the program's fp32 tensor.
//   input_layout: the input's bytes are already in this layout (rows x in_features, plain),
//                 s8/u8 quantised with the call's Int8Spec input_scale, or BF16: read as
//                 they are, no conversion.
//   keep_result:  write the result as the next linear reads it: INT8 (int8->output_scale,
//                 output_uint8) or BF16 (a BF16 product); `kept` receives its layout.
struct LinearHandoff {
  const dnnl::memory::desc* input_layout = nullptr;
  float input_scale = 1.f;  // INT8 bytes: the scale they were written in (must be the spec's)
  bool keep_result = false;
  dnnl::memory::desc* kept = nullptr;
};

at::Tensor linear_forward(const at::Tensor& input, const at::Tensor& weight,
                          const c10::optional<at::Tensor>& bias, Precision precision,
                          MatmulActivation activation = MatmulActivation::none,
                          const Int8Spec* int8 = nullptr, bool bf16_result = false,
                          const LinearHandoff& handoff = {});

Fallback batched_matmul_support(const at::Tensor& a, const at::Tensor& b);

// C = alpha * (A B) [+ bias], where bias (if defined) broadcasts to C along leading dims
// (shape (N), (1, N) or C's shape). alpha must not be 0 when a bias is given.
at::Tensor batched_matmul(const at::Tensor& a, const at::Tensor& b, Precision precision,
                          float alpha = 1.f, const at::Tensor& bias = at::Tensor(),
                          bool bf16_result = false);

// C = A B in INT8: A and B quantised with the spec's scales (any strides), s32 products,
// fp32 result. Same shapes as batched_matmul (without alpha and bias).
//   a_factor: C = (a_factor A) B, the factor applied as A is quantised (the spec's A scale is
//             that of a_factor A): no pass of its own.
//   A may also come quantised already, as a u8/s8 tensor in the spec's A scale and type.
at::Tensor batched_matmul_int8(const at::Tensor& a, const at::Tensor& b,
                               const Int8MatmulSpec& spec, float a_factor = 1.f);

}  // namespace ipex_shim
