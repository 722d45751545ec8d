// The shim's kernels for calls autograd records: each is a torch::autograd::Function whose
// forward and backward run on oneDNN, so parameters and inputs get their gradients as with
// stock (DESIGN.md fact 5). Inputs are plain fp32 CPU tensors; the callers check support.
#pragma once

#include <ATen/core/Tensor.h>

namespace ipex_shim {

// max_pool2d with oneDNN's forward (its workspace keeps each window's winner) and backward.
// A double backward (create_graph=True) recomputes with stock's differentiable ops.
at::Tensor max_pool2d_recorded(const at::Tensor& input, c10::IntArrayRef kernel,
                               c10::IntArrayRef stride, c10::IntArrayRef padding,
                               c10::IntArrayRef dilation, bool ceil_mode);

// batch_norm in training mode (batch statistics; running statistics, which may be undefined,
// updated as stock does). Weight and bias must be defined (affine).
// The forward is the shim's; the backward is stock's, from the forward's batch statistics.
at::Tensor batch_norm_recorded(const at::Tensor& input, const at::Tensor& weight,
                               const at::Tensor& bias, const at::Tensor& running_mean,
                               const at::Tensor& running_var, double momentum, double eps);

// A BF16 convolution (kernels/convolution_training.h) with an fp32 result and fp32
// gradients. A double backward computes the first gradients with stock's fp32
// convolution_backward, which autograd can differentiate again.
at::Tensor convolution_recorded(const at::Tensor& input, const at::Tensor& weight,
                                const at::Tensor& bias, c10::IntArrayRef stride,
                                c10::IntArrayRef padding, c10::IntArrayRef dilation,
                                int64_t groups);

// A BF16 linear (kernels/linear_training.h) with an fp32 result and fp32 gradients. A
// double backward computes the first gradients with stock's fp32 matmuls.
at::Tensor linear_recorded(const at::Tensor& input, const at::Tensor& weight,
                           const at::Tensor& bias);

}  // namespace ipex_shim
