#pragma once

#include <ATen/core/Tensor.h>

namespace ipex_shim {

// The kernel the override table registers for Op = at::_ops::conv1d / conv2d / conv3d.
template <class Op>
at::Tensor convolution_override(const at::Tensor& input, const at::Tensor& weight,
                                const c10::optional<at::Tensor>& bias, c10::IntArrayRef stride,
                                c10::IntArrayRef padding, c10::IntArrayRef dilation,
                                int64_t groups);

// aten::_convolution, which torch.jit.trace records for every convolution: handed to the
// wrapper of the public op of the same rank and kind (counted there), so traced modules get
// the shim's kernels and fusion as eager ones do.
at::Tensor underscore_convolution_override(
    const at::Tensor& input, const at::Tensor& weight, const c10::optional<at::Tensor>& bias,
    c10::IntArrayRef stride, c10::IntArrayRef padding, c10::IntArrayRef dilation,
    bool transposed, c10::IntArrayRef output_padding, int64_t groups, bool benchmark,
    bool deterministic, bool cudnn_enabled, bool allow_tf32);

// The kernel for Op = at::_ops::conv_transpose1d / conv_transpose2d_input / ..._3d_input.
template <class Op>
at::Tensor transposed_convolution_override(const at::Tensor& input, const at::Tensor& weight,
                                           const c10::optional<at::Tensor>& bias,
                                           c10::IntArrayRef stride, c10::IntArrayRef padding,
                                           c10::IntArrayRef output_padding, int64_t groups,
                                           c10::IntArrayRef dilation);

}  // namespace ipex_shim
