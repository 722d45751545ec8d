// BF16 linear for calls autograd records (bf16 mode): oneDNN inner product forward, backward
// data and backward weights with fp32 in and out, the casts inside the reorders (as
// kernels/convolution_training.h does for convolutions). The input is read as a matrix of
// its rows (every dimension but the last).
#pragma once

#include <ATen/core/Tensor.h>

#include <array>

#include "shim/op_stats.h"

namespace ipex_shim {

// Contiguous fp32 input of rank 2 or more, 2-D contiguous weight, contiguous bias (or none).
Fallback linear_training_support(const at::Tensor& input, const at::Tensor& weight,
                                 const c10::optional<at::Tensor>& bias);

struct LinearSaved {
  at::Tensor source;  // the input rows as BF16 bytes in the primitive's layout
};

at::Tensor linear_training_forward(const at::Tensor& input, const at::Tensor& weight,
                                   const at::Tensor& bias, LinearSaved* saved);

std::array<at::Tensor, 3> linear_training_backward(const at::Tensor& grad_output,
                                                   const at::Tensor& input,
                                                   const at::Tensor& weight, bool has_bias,
                                                   const LinearSaved& saved,
                                                   std::array<bool, 3> wanted);

}  // namespace ipex_shim
