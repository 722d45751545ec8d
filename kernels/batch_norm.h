// Batch normalisation's forward in training mode (batch statistics) for contiguous fp32
// (N, C, ...) tensors: resnet18's 20 batch norms take stock 1.13 about 58 ms a step at batch
// 32, this kernel about 35. Each channel is done by one thread in three passes over its
// values (mean, variance, result), the later ones served from cache. The backward is stock's
// (shim/autograd_kernels.cpp), from the mean and 1/std this forward returns.
#pragma once

#include <ATen/core/Tensor.h>

#include "shim/op_stats.h"

namespace ipex_shim {

// Whether the kernels take this call: contiguous fp32 input of rank 3 to 5 with at least 16
// values per channel and sample, fp32 parameters and statistics of C values.
Fallback batch_norm_training_support(const at::Tensor& input, const at::Tensor& weight,
                                     const at::Tensor& bias, const at::Tensor& running_mean,
                                     const at::Tensor& running_var);

struct BatchNormForward {
  at::Tensor output;
  at::Tensor mean;    // the batch's mean per channel
  at::Tensor invstd;  // 1 / sqrt(biased variance + eps)
};

// y = (x - mean) * invstd * weight + bias (undefined weight/bias: 1/0). Running statistics,
// when defined, move by `momentum` towards the batch's (the variance unbiased), in place and
// without a version bump, as stock's native_batch_norm does.
BatchNormForward batch_norm_training(const at::Tensor& input, const at::Tensor& weight,
                                     const at::Tensor& bias, const at::Tensor& running_mean,
                                     const at::Tensor& running_var, double momentum, double eps);

}  // namespace ipex_shim
