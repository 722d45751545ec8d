// Wrappers for conv1d/conv2d/conv3d (one schema) and conv_transpose1d/2d/3d (another).
//   no gradient needed  -> the shim's oneDNN convolution, fp32 or BF16 by mode;
//   gradient needed     -> bf16 mode: stock kernels on BF16 copies (autograd records the
//                          casts, so parameters get fp32 gradients) and an fp32 result;
//                          fp32 mode: stock.
#include "shim/ops_convolution.h"

#include <ATen/ops/conv1d_ops.h>
#include <ATen/ops/conv2d_ops.h>
#include <ATen/ops/conv3d_ops.h>
#include <ATen/ops/conv_transpose1d_ops.h>
#include <ATen/ops/conv_transpose2d_ops.h>
#include <ATen/ops/conv_transpose3d_ops.h>

#include "kernels/convolution.h"
#include "shim/fusion.h"
#include "shim/intercept.h"
#include "shim/mode_policy.h"

namespace ipex_shim {

template <class Op>
at::Tensor convolution_override(const at::Tensor& input, const at::Tensor& weight,
                                const c10::optional<at::Tensor>& bias, c10::IntArrayRef stride,
                                c10::IntArrayRef padding, c10::IntArrayRef dilation,
                                int64_t groups) {
  using Wrapped = Intercept<Op>;
  if (Fallback gate = float_kernel_gate(); gate != Fallback::none)
    return Wrapped::stock_because(gate, input, weight, bias, stride, padding, dilation, groups);
  const Precision precision = lower_precision(Wrapped::stats());
  if (needs_grad(input, weight, bias)) {
    if (precision == Precision::fp32)
      return with_grad<Op>(input, weight, bias, stride, padding, dilation, groups);
    return with_grad<Op>(to_bf16(input), to_bf16(weight), to_bf16(bias), stride, padding,
                         dilation, groups);
  }
  ConvolutionArgs args{stride, padding, dilation, groups};
  const Fallback why = convolution_support(input, weight, bias, args);
  return run_or_stock<Op>(
      why, precision,
      [&] {
        if (!fusion::enabled()) return convolution_forward(input, weight, bias, args, precision);
        fusion::ConvolutionPlan plan = fusion::plan_convolution(weight);
        ConvolutionPostOps post_ops;
        if (plan.fuse) {
          post_ops.batch_norm = plan.fold_batch_norm ? &plan.batch_norm : nullptr;
          post_ops.relu = plan.relu != fusion::Relu::none;
        }
        at::Tensor output = convolution_forward(input, weight, bias, args, precision, post_ops);
        // What a repair of a failed prediction recomputes: the same call, other post-ops.
        fusion::Recompute recompute = [input, weight, bias, stride = stride.vec(),
                                       padding = padding.vec(), dilation = dilation.vec(),
                                       groups, precision](const ConvolutionPostOps& ops) {
          return convolution_forward(input, weight, bias,
                                     ConvolutionArgs{stride, padding, dilation, groups},
                                     precision, ops);
        };
        fusion::after_convolution(input, output, plan, std::move(recompute));
        return output;
      },
      [&] { return Wrapped::stock(input, weight, bias, stride, padding, dilation, groups); });
}

template <class Op>
at::Tensor transposed_convolution_override(const at::Tensor& input, const at::Tensor& weight,
                                           const c10::optional<at::Tensor>& bias,
                                           c10::IntArrayRef stride, c10::IntArrayRef padding,
                                           c10::IntArrayRef output_padding, int64_t groups,
                                           c10::IntArrayRef dilation) {
  using Wrapped = Intercept<Op>;
  if (Fallback gate = float_kernel_gate(); gate != Fallback::none)
    return Wrapped::stock_because(gate, input, weight, bias, stride, padding, output_padding,
                                  groups, dilation);
  // With a gradient: stock fp32. Stock torch 1.13's BF16 transposed convolution on CPU
  // rejects valid shapes ("expected input ... to have 4 channels"), and autocast leaves it
  // in fp32 too.
  if (needs_grad(input, weight, bias))
    return Wrapped::stock_because(Fallback::needs_grad, input, weight, bias, stride, padding,
                                  output_padding, groups, dilation);
  const Precision precision = lower_precision(Wrapped::stats());
  ConvolutionArgs args{stride, padding, dilation, groups, true, output_padding};
  return run_or_stock<Op>(
      convolution_support(input, weight, bias, args), precision,
      [&] { return convolution_forward(input, weight, bias, args, precision); },
      [&] {
        return Wrapped::stock(input, weight, bias, stride, padding, output_padding, groups,
                              dilation);
      });
}

#define SHIM_TRANSPOSED_INSTANCE(op)                                                        \
  template at::Tensor transposed_convolution_override<at::_ops::op>(                       \
      const at::Tensor&, const at::Tensor&, const c10::optional<at::Tensor>&,              \
      c10::IntArrayRef, c10::IntArrayRef, c10::IntArrayRef, int64_t, c10::IntArrayRef);
SHIM_TRANSPOSED_INSTANCE(conv_transpose1d)
SHIM_TRANSPOSED_INSTANCE(conv_transpose2d_input)
SHIM_TRANSPOSED_INSTANCE(conv_transpose3d_input)
#undef SHIM_TRANSPOSED_INSTANCE

template at::Tensor convolution_override<at::_ops::conv1d>(const at::Tensor&, const at::Tensor&,
    const c10::optional<at::Tensor>&, c10::IntArrayRef, c10::IntArrayRef, c10::IntArrayRef, int64_t);
template at::Tensor convolution_override<at::_ops::conv2d>(const at::Tensor&, const at::Tensor&,
    const c10::optional<at::Tensor>&, c10::IntArrayRef, c10::IntArrayRef, c10::IntArrayRef, int64_t);
template at::Tensor convolution_override<at::_ops::conv3d>(const at::Tensor&, const at::Tensor&,
    const c10::optional<at::Tensor>&, c10::IntArrayRef, c10::IntArrayRef, c10::IntArrayRef, int64_t);

}  // namespace ipex_shim
