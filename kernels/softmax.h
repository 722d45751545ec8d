// Softmax over the last dimension on oneDNN's primitive, for inference: the attention
// probabilities of the composed transformer ops. oneDNN's kernel took half of stock's time on
// 8x12x128x128 fp32 scores (0.55 against 1.08 ms, 2 threads), and it can write BF16 for a
// BF16 product that reads the probabilities next.
#pragma once

#include <ATen/core/Tensor.h>

namespace ipex_shim {

// Whether softmax_last_dim takes `input`: fp32 on the CPU, contiguous, at least one element.
bool softmax_last_dim_supported(const at::Tensor& input);

// softmax(input, dim=-1): written over `input` (`in_place`, fp32), or as a new contiguous
// tensor, fp32 or (`bf16_result`) BF16.
at::Tensor softmax_last_dim(const at::Tensor& input, bool bf16_result, bool in_place = false);

// softmax(input, dim=-1) quantised for the INT8 product that reads it: a new contiguous u8
// tensor, round(p * scale) saturated to [0, 255], with no fp32 result written in between.
at::Tensor softmax_last_dim_u8(const at::Tensor& input, float scale);

}  // namespace ipex_shim
