#pragma once

#include <ATen/core/Tensor.h>

namespace ipex_shim {

// The ops that can be answered by a fused convolution (shim/fusion.h); otherwise stock, and
// they teach the learned graph what consumed what.
at::Tensor batch_norm_override(const at::Tensor& input, const c10::optional<at::Tensor>& weight,
                               const c10::optional<at::Tensor>& bias,
                               const c10::optional<at::Tensor>& running_mean,
                               const c10::optional<at::Tensor>& running_var, bool training,
                               double momentum, double eps, bool cudnn_enabled);
at::Tensor relu_override(const at::Tensor& input);
at::Tensor gelu_override(const at::Tensor& input, c10::string_view approximate);
at::Tensor& relu__override(at::Tensor& input);
// hardtanh/hardtanh_ (relu6): fused into a convolution when it clamps to [0, upper].
at::Tensor hardtanh_override(const at::Tensor& input, const at::Scalar& min_val,
                             const at::Scalar& max_val);
at::Tensor& hardtanh__override(at::Tensor& input, const at::Scalar& min_val,
                               const at::Scalar& max_val);
// silu/silu_ and hardswish/hardswish_: fused into a convolution (EfficientNet, MobileNetV3).
at::Tensor silu_override(const at::Tensor& input);
at::Tensor& silu__override(at::Tensor& input);
at::Tensor hardswish_override(const at::Tensor& input);
at::Tensor& hardswish__override(at::Tensor& input);
// max_pool2d: pools a result handed over in oneDNN's layout as it is and hands it on.
at::Tensor max_pool2d_override(const at::Tensor& self, c10::IntArrayRef kernel_size,
                               c10::IntArrayRef stride, c10::IntArrayRef padding,
                               c10::IntArrayRef dilation, bool ceil_mode);
// avg_pool2d and adaptive_avg_pool2d: pool a result handed over in oneDNN's layout as it is
// and return its values.
at::Tensor avg_pool2d_override(const at::Tensor& self, c10::IntArrayRef kernel_size,
                               c10::IntArrayRef stride, c10::IntArrayRef padding, bool ceil_mode,
                               bool count_include_pad, c10::optional<int64_t> divisor_override);
at::Tensor adaptive_avg_pool2d_override(const at::Tensor& self, c10::SymIntArrayRef output_size);
// cat: joins convolution chains' results handed over in oneDNN's layout as they are and
// hands the result on; otherwise stock (learning which chains a cat joins).
at::Tensor cat_override(const at::ITensorListRef& tensors, int64_t dim);
// mul, at the fusion observer's key (registered there, so it runs only in a thread holding
// handed-over results): a convolution chain's result handed over in oneDNN's layout times a
// per-channel gate (squeeze-excitation's `x * gate`), computed on the bytes and handed to the
// next convolution; otherwise the observer's checks, then on to stock.
at::Tensor mul_observed(c10::DispatchKeySet keys, const at::Tensor& self,
                        const at::Tensor& other);
// add: `x + bn(conv(...))` answered by a convolution that fused it.
at::Tensor add_override(const at::Tensor& self, const at::Tensor& other, const at::Scalar& alpha);
// add_: `out += identity` answered by a convolution that fused it.
at::Tensor& add__override(at::Tensor& self, const at::Tensor& other, const at::Scalar& alpha);

}  // namespace ipex_shim
