// Max pooling of bytes handed over in oneDNN's layout: a fused convolution chain's result
// (resnet's stem) pooled as it is, before the next convolutions read it. INT8 bytes (max
// pooling commutes with quantisation, so the result keeps the input's scale and is exact for
// the quantised values), and BF16 or fp32 bytes in fp32 and bf16 modes.
#pragma once

#include <ATen/core/Tensor.h>

#include <dnnl.hpp>

#include "shim/op_stats.h"

namespace ipex_shim {

// Whether max_pool2d's arguments are ones the kernel takes (PyTorch's defaults expanded).
Fallback max_pool_support(const at::Tensor& input, c10::IntArrayRef kernel,
                          c10::IntArrayRef stride, c10::IntArrayRef padding,
                          c10::IntArrayRef dilation);

// Pools `input`, whose bytes are in `layout` (a 4-D layout of any type), into a new fp32-shaped
// tensor of PyTorch's output sizes whose bytes are the result in `*output_layout`.
at::Tensor max_pool_handed_over(const at::Tensor& input, const dnnl::memory::desc& layout,
                                c10::IntArrayRef kernel, c10::IntArrayRef stride,
                                c10::IntArrayRef padding, c10::IntArrayRef dilation,
                                bool ceil_mode, dnnl::memory::desc* output_layout);

}  // namespace ipex_shim
