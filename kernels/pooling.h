// Pooling of bytes handed over in oneDNN's layout: a fused convolution chain's result pooled
// as it is. Max pooling (resnet's stem, before the next convolutions read it) of INT8 bytes
// (max pooling commutes with quantisation, so the result keeps the input's scale and is exact
// for the quantised values) and of BF16 or fp32 bytes in fp32 and bf16 modes; average
// pooling likewise (resnet's head, before its linear layer).
#pragma once

#include <ATen/core/Tensor.h>

#include <dnnl.hpp>
#include <vector>

#include "shim/op_stats.h"

namespace ipex_shim {

// Whether max_pool2d's arguments are ones the kernel takes (PyTorch's defaults expanded).
Fallback max_pool_support(const at::Tensor& input, c10::IntArrayRef kernel,
                          c10::IntArrayRef stride, c10::IntArrayRef padding,
                          c10::IntArrayRef dilation);

// Pools `input`, whose bytes are in `layout` (a 4-D layout of any type), into a new tensor
// of PyTorch's output sizes (and input's dtype and memory format) whose bytes are the result
// in `*output_layout`.
at::Tensor max_pool_handed_over(const at::Tensor& input, const dnnl::memory::desc& layout,
                                c10::IntArrayRef kernel, c10::IntArrayRef stride,
                                c10::IntArrayRef padding, c10::IntArrayRef dilation,
                                bool ceil_mode, dnnl::memory::desc* output_layout);

// Max pooling of a tensor the program made (fp32, contiguous or channels-last), the
// result in stock's memory format. With `workspace` (training) the window winners are kept
// there for max_pool_plain_backward, which gives the input's gradient like stock's (ties go
// to the first element of a window). Callers send inputs for which max_pool_needs_stock
// holds to stock: oneDNN's max skips NaN where PyTorch's returns it, and a window of only
// -inf gives the lowest finite float (and, where it includes padding, its gradient to no
// input element) where PyTorch's gives -inf.
Fallback max_pool_plain_support(const at::Tensor& input, c10::IntArrayRef kernel,
                                c10::IntArrayRef stride, c10::IntArrayRef padding,
                                c10::IntArrayRef dilation);
bool max_pool_needs_stock(const at::Tensor& input);  // a NaN or a -inf anywhere
at::Tensor max_pool_plain(const at::Tensor& input, c10::IntArrayRef kernel,
                          c10::IntArrayRef stride, c10::IntArrayRef padding,
                          c10::IntArrayRef dilation, bool ceil_mode, at::Tensor* workspace);
at::Tensor max_pool_plain_backward(const at::Tensor& grad_output, const at::Tensor& input,
                                   const at::Tensor& workspace, c10::IntArrayRef kernel,
                                   c10::IntArrayRef stride, c10::IntArrayRef padding,
                                   c10::IntArrayRef dilation, bool ceil_mode);

// Average pooling (avg_pool2d without ceil_mode or divisor_override; adaptive_avg_pool2d
// whose output size divides the input's, which is then a plain average pool with kernel
// and stride input/output). avg_pool_handed_over gives the result as bytes of the source's
// type (INT8 bytes rounded to their own scale: half a quantisation step more error than the
// exact average).
Fallback avg_pool_support(const at::Tensor& input, c10::IntArrayRef kernel,
                          c10::IntArrayRef stride, c10::IntArrayRef padding, bool ceil_mode,
                          bool divisor_override);
bool adaptive_as_average(const at::Tensor& input, c10::IntArrayRef output_size,
                         std::vector<int64_t>* kernel);
at::Tensor avg_pool_handed_over(const at::Tensor& input, const dnnl::memory::desc& layout,
                                c10::IntArrayRef kernel, c10::IntArrayRef stride,
                                c10::IntArrayRef padding, bool count_include_pad,
                                dnnl::memory::desc* output_layout);
// The same average as fp32 values in a new tensor of stock's strides, computed in fp32 from
// the bytes (of scale `scale`; 1 for floating point) without rounding to their type.
// `fp32_layout`: when given, the average may stay fp32 in the blocked layout oneDNN pooled
// it in (the result's bytes, for a convolution to read as they are): that layout is written
// there, else it is left empty (values in stock's strides).
at::Tensor avg_pool_values(const at::Tensor& input, const dnnl::memory::desc& layout,
                           c10::IntArrayRef kernel, c10::IntArrayRef stride,
                           c10::IntArrayRef padding, bool count_include_pad, float scale,
                           dnnl::memory::desc* fp32_layout = nullptr);
// Inference pooling of a tensor the program made: what plain_pool_inference_input admits
// (a dense fp32 tensor, channels-last or NCHW whose channels fill oneDNN's blocks), the
// result in stock's memory format. Max pooling: as max_pool_plain (inputs for which
// max_pool_needs_stock holds go to stock); the average sums in another order than stock's,
// within a few units in the last place of it.
Fallback plain_pool_inference_input(const at::Tensor& input);
at::Tensor max_pool_values(const at::Tensor& input, c10::IntArrayRef kernel,
                           c10::IntArrayRef stride, c10::IntArrayRef padding,
                           c10::IntArrayRef dilation, bool ceil_mode);
at::Tensor avg_pool_plain(const at::Tensor& input, c10::IntArrayRef kernel,
                          c10::IntArrayRef stride, c10::IntArrayRef padding,
                          bool count_include_pad);

}  // namespace ipex_shim
