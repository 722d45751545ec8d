// Convolution forward (1-D, 2-D, 3-D, direct or transposed; groups, stride, padding,
// dilation, output padding, bias) on oneDNN, in fp32 or BF16, for calls that need no
// gradient. Results are fp32 in the memory format stock PyTorch would return.
#pragma once

#include <ATen/core/Tensor.h>

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
};

// Why a case cannot run on the kernel, or Fallback::none when it can.
Fallback convolution_support(const at::Tensor& input, const at::Tensor& weight,
                             const c10::optional<at::Tensor>& bias, const ConvolutionArgs& args);

// Handing data between convolutions in oneDNN's layout (shim/fusion.h decides when):
//   input_layout:  the input tensor's bytes are in this layout, not in its strides' layout;
//   keep_output_layout: write the primitive's destination bytes into the output tensor's
//                  storage as they are (no reorder) and say their layout in output_layout.
struct ConvolutionHandoff {
  const dnnl::memory::desc* input_layout = nullptr;
  bool keep_output_layout = false;
  dnnl::memory::desc* output_layout = nullptr;  // set when the output was kept
};

// Reorders a tensor whose bytes are in `layout` into a new tensor of its sizes and strides.
at::Tensor from_layout(const at::Tensor& tensor, const dnnl::memory::desc& layout);

// Requires convolution_support(...) == Fallback::none.
at::Tensor convolution_forward(const at::Tensor& input, const at::Tensor& weight,
                               const c10::optional<at::Tensor>& bias,
                               const ConvolutionArgs& args, Precision precision,
                               const ConvolutionPostOps& post_ops = {},
                               const ConvolutionHandoff& handoff = {});

}  // namespace ipex_shim
