// Max pooling of INT8 bytes handed over in oneDNN's layout (INT8 mode: resnet's stem pools
// the fused convolution's u8 NHWC result before the next convolutions read it). Max pooling
// commutes with quantisation, so the result keeps the input's scale and is exact for the
// quantised values.
#pragma once

#include <ATen/core/Tensor.h>

#include <dnnl.hpp>

#include "shim/op_stats.h"

namespace ipex_shim {

// Whether max_pool2d's arguments are ones the kernel takes (PyTorch's defaults expanded).
Fallback max_pool_support(const at::Tensor& input, c10::IntArrayRef kernel,
                          c10::IntArrayRef stride, c10::IntArrayRef padding,
                          c10::IntArrayRef dilation);

// Pools `input`, whose bytes are in `layout` (a 4-D s8/u8 layout), into a new fp32-shaped
// tensor of PyTorch's output sizes whose bytes are the result in `*output_layout`.
at::Tensor max_pool_handed_over(const at::Tensor& input, const dnnl::memory::desc& layout,
                                c10::IntArrayRef kernel, c10::IntArrayRef stride,
                                c10::IntArrayRef padding, c10::IntArrayRef dilation,
                                bool ceil_mode, dnnl::memory::desc* output_layout);

}  // namespace ipex_shim
