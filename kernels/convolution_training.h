// BF16 convolution for calls autograd records (bf16 mode): forward, backward data and
// backward weights on oneDNN with fp32 in and out. The casts stock's path pays around each
// BF16 convolution (to BF16 and back, forward and backward) happen inside the reorders
// oneDNN needs anyway, and the forward's reordered input is kept for the weights' gradient
// instead of being reordered again.
#pragma once

#include <ATen/core/Tensor.h>

#include <array>

#include "kernels/convolution.h"
#include "shim/op_stats.h"

namespace ipex_shim {

// Direct (not transposed) 1-D/2-D/3-D convolutions of contiguous fp32 input and weight, or
// channels-last ones of a 2-D convolution; otherwise the reason.
Fallback convolution_training_support(const at::Tensor& input, const at::Tensor& weight,
                                      const c10::optional<at::Tensor>& bias,
                                      const ConvolutionArgs& args);

// What the forward keeps for the backward: the input as BF16 bytes in the primitive's layout.
struct ConvolutionSaved {
  at::Tensor source;
};

// The fp32 result in stock's memory format; `saved` gets what the backward needs.
at::Tensor convolution_training_forward(const at::Tensor& input, const at::Tensor& weight,
                                        const at::Tensor& bias, const ConvolutionArgs& args,
                                        ConvolutionSaved* saved);

// Gradients of input, weight and bias (those `wanted`; the others undefined), fp32, the
// input's in the result's memory format and the weight's in the weight's.
std::array<at::Tensor, 3> convolution_training_backward(const at::Tensor& grad_output,
                                                        const at::Tensor& input,
                                                        const at::Tensor& weight, bool has_bias,
                                                        const ConvolutionArgs& args,
                                                        const ConvolutionSaved& saved,
                                                        std::array<bool, 3> wanted);

}  // namespace ipex_shim
