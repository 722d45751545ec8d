#pragma once

#include <ATen/core/Tensor.h>

namespace ipex_shim {

// The kernel the override table registers for Op = at::_ops::conv1d / conv2d / conv3d.
template <class Op>
at::Tensor convolution_override(const at::Tensor& input, const at::Tensor& weight,
                                const c10::optional<at::Tensor>& bias, c10::IntArrayRef stride,
                                c10::IntArrayRef padding, c10::IntArrayRef dilation,
                                int64_t groups);

}  // namespace ipex_shim
