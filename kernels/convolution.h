// Convolution forward (1-D, 2-D, 3-D, direct or transposed; groups, stride, padding,
// dilation, output padding, bias) on oneDNN, in fp32, BF16 or INT8, for calls that need no
// gradient. Results are fp32 in the memory format stock PyTorch would return.
#pragma once

#include <ATen/core/Tensor.h>

#include <vector>

#include "kernels/int8.h"
#include "kernels/onednn_compat.h"
#include "kernels/onednn_context.h"
#include "shim/op_stats.h"

namespace ipex_shim {

// Views of the caller's arrays: they must outlive the call.
struct ConvolutionArgs {
  c10::IntArrayRef stride;
  c10::IntArrayRef padding;
  c10::IntArrayRef dilation;
  int64_t groups = 1;
  bool transposed = false;
  c10::IntArrayRef output_padding = {};  // transposed only
};

// An inference batch norm after the convolution, folded into its weights and bias:
//   scale = gamma / sqrt(var + eps)
//   W' = W * scale (per output channel),  b' = (b - mean) * scale + beta
struct BatchNormFold {
  at::Tensor gamma, beta, mean, var;  // gamma/beta may be undefined (affine=False)
  double eps = 1e-5;
};

// Work applied to the convolution's result inside the same primitive.
struct ConvolutionPostOps {
  const BatchNormFold* batch_norm = nullptr;  // not for transposed convolutions
  bool relu = false;
  float relu_upper = 0.f;  // > 0: the relu also clamps at this value (relu6: 6)
  // Instead of the relu (which must then be false): silu (x * sigmoid(x)) or hardswish
  // (x * relu6(x + 3) / 6), applied after the sum. An INT8 result with it may be negative.
  enum class Activation { none, silu, hardswish };
  Activation activation = Activation::none;
  // A tensor of the result's shape added before the relu (a residual connection). Its bytes
  // are in `sum_layout` when given (a tensor handed over in oneDNN's layout; INT8 bytes with
  // scale `sum_scale`), else in its strides' layout.
  const at::Tensor* sum = nullptr;
  const dnnl::memory::desc* sum_layout = nullptr;
  float sum_scale = 1.f;
  // INT8 result: an addend that may be negative, or wider than the result's scale allows, is
  // stored as s8 with this (calibrated) scale and rescaled by the sum; 0: stored in the
  // result's own type and scale.
  float sum_s8_scale = 0.f;
  // The addend's memory may be the destination: its bytes are summed over where they lie
  // when they are exactly what the sum reads in the result's kept layout (else it is copied
  // as usual), and the result is then a tensor over that memory with a storage of its own.
  // Only for an addend whose bytes nothing reads afterwards (the caller knows).
  bool sum_in_place = false;
};

// PyTorch's output sizes and the window geometry in oneDNN's terms.
struct ConvolutionGeometry {
  std::vector<int64_t> output_sizes;
  onednn::ConvolutionWindow window;
};
ConvolutionGeometry convolution_geometry(const at::Tensor& input, const at::Tensor& weight,
                                         const ConvolutionArgs& args);
int64_t output_channels(const at::Tensor& weight, const ConvolutionArgs& args);
// Whether a 2-D BF16 convolution may ask oneDNN for 16-channel blocked activations (where
// its avx512 BF16 kernels without AMX ran fastest): ungrouped or depthwise, with whole
// blocks of input and output channels. Other grouped convolutions in those blocks reached
// only oneDNN's reference kernel (regnet_x_1_6gf's 24-channel groups: 494 ms of a 508 ms
// batch-2 pass).
bool bf16_blocks_fit(const at::Tensor& input, int64_t out_channels, const ConvolutionArgs& args);
// Whether oneDNN serves `pd` with its reference implementation (C loops, no JIT kernel).
bool served_by_reference(const dnnl::primitive_desc_base& pd);

// The fp32 weight as oneDNN sees it, over the tensor's own memory: (out, in, k...) with a
// leading group dimension when grouped (transposed: its first two dimensions swapped).
dnnl::memory::desc weight_user_desc(const at::Tensor& weight, const ConvolutionArgs& args);

// Why a case cannot run on the kernel, or Fallback::none when it can.
Fallback convolution_support(const at::Tensor& input, const at::Tensor& weight,
                             const c10::optional<at::Tensor>& bias, const ConvolutionArgs& args);

// Handing data between convolutions in oneDNN's layout (shim/fusion.h decides when):
//   input_layout:  the input tensor's bytes are in this layout, not in its strides' layout;
//   keep_output_layout: write the primitive's destination bytes into the output tensor's
//                  storage as they are (no reorder) and say their layout in output_layout.
//   input_scale:   when the handed-over bytes are INT8, their scale (1 for floating point).
struct ConvolutionHandoff {
  const dnnl::memory::desc* input_layout = nullptr;
  float input_scale = 1.f;
  bool keep_output_layout = false;
  dnnl::memory::desc* output_layout = nullptr;  // set when the output was kept
};

// Reorders a tensor whose bytes are in `layout` into a new tensor of its sizes and strides;
// INT8 bytes (quantised with `scale`) come back as fp32 values.
at::Tensor from_layout(const at::Tensor& tensor, const dnnl::memory::desc& layout,
                       float scale = 1.f);

// INT8: int8_convolution_support(...) must also be none; then `int8` says how to quantise
// (kernels/int8.h) and `precision` is not used.
Fallback int8_convolution_support(const at::Tensor& input, const ConvolutionArgs& args);

// Requires convolution_support(...) == Fallback::none.
at::Tensor convolution_forward(const at::Tensor& input, const at::Tensor& weight,
                               const c10::optional<at::Tensor>& bias,
                               const ConvolutionArgs& args, Precision precision,
                               const ConvolutionPostOps& post_ops = {},
                               const ConvolutionHandoff& handoff = {},
                               const Int8Spec* int8 = nullptr);

}  // namespace ipex_shim
