// BF16 linear for calls autograd records (bf16 mode): forward, input gradient and weight
// gradient as oneDNN BF16 matmuls with fp32 results, reading BF16 copies of the input and
// weight that the forward makes once (a cast each, as stock's path pays too) and keeps for
// the backward. The input is read as a matrix of its rows (every dimension but the last).
#pragma once

#include <ATen/core/Tensor.h>

#include <array>

#include "shim/op_stats.h"

namespace ipex_shim {

// Contiguous fp32 input of rank 2 or more, 2-D contiguous weight, contiguous bias (or none).
Fallback linear_training_support(const at::Tensor& input, const at::Tensor& weight,
                                 const c10::optional<at::Tensor>& bias);

// What the forward keeps for the backward: BF16 copies of the input rows and the weight.
struct LinearSaved {
  at::Tensor source;
  at::Tensor weights;
};

at::Tensor linear_training_forward(const at::Tensor& input, const at::Tensor& weight,
                                   const at::Tensor& bias, LinearSaved* saved);

std::array<at::Tensor, 3> linear_training_backward(const at::Tensor& grad_output,
                                                   const at::Tensor& input,
                                                   const at::Tensor& weight, bool has_bias,
                                                   const LinearSaved& saved,
                                                   std::array<bool, 3> wanted);

}  // namespace ipex_shim
