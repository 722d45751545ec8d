// Wrappers for conv1d/conv2d/conv3d (one schema) and conv_transpose1d/2d/3d (another).
//   no gradient needed  -> the shim's oneDNN convolution, fp32 or BF16 by mode;
//   gradient needed     -> bf16 mode: stock kernels on BF16 copies (autograd records the
//                          casts, so parameters get fp32 gradients) and an fp32 result;
//                          fp32 mode: stock.
#include "shim/ops_convolution.h"

#include <ATen/ops/_convolution_ops.h>
#include <ATen/ops/conv1d_ops.h>
#include <ATen/ops/conv2d_ops.h>
#include <ATen/ops/conv3d_ops.h>
#include <ATen/ops/conv_transpose1d_ops.h>
#include <ATen/ops/conv_transpose2d_ops.h>
#include <ATen/ops/conv_transpose3d_ops.h>

#include "kernels/convolution.h"
#include "kernels/convolution_training.h"
#include "shim/autograd_kernels.h"
#include "shim/fusion.h"
#include "shim/int8_modes.h"
#include "shim/intercept.h"
#include "shim/mode_policy.h"

namespace ipex_shim {

template <class Op>
at::Tensor convolution_override(const at::Tensor& input, const at::Tensor& weight,
                                const c10::optional<at::Tensor>& bias, c10::IntArrayRef stride,
                                c10::IntArrayRef padding, c10::IntArrayRef dilation,
                                int64_t groups) {
  using Wrapped = Intercept<Op>;
  // An input handed over in oneDNN's layout (fusion) is only for the shim's own kernel:
  // every other path gets it in the program's layout first.
  const dnnl::memory::desc* input_layout = fusion::layout_of(input);
  auto stock = [&](Fallback why) {
    if (input_layout) fusion::settle(input);
    return Wrapped::stock_because(why, input, weight, bias, stride, padding, dilation, groups);
  };
  if (int8::calibrating()) {
    const int64_t op = int8::identify_convolution(weight, stride, padding, dilation, groups,
                                                  bias && bias->defined());
    calibration::observe_inputs(op, {&input});
    at::Tensor output = Wrapped::stock(input, weight, bias, stride, padding, dilation, groups);
    Wrapped::stats().count(Path::observed);
    calibration::observe_output(op, output);
    calibration::keep_convolution_sample(op, input, weight, bias, stride, padding, dilation,
                                         groups);
    int8::produced(op, output);
    return output;
  }
  if (Fallback gate = float_kernel_gate(); gate != Fallback::none) return stock(gate);
  Precision precision = lower_precision(Wrapped::stats());
  if (needs_grad(input, weight, bias)) {
    if (input_layout) fusion::settle(input);
    if (precision == Precision::fp32)
      return with_grad<Op>(input, weight, bias, stride, padding, dilation, groups);
    const ConvolutionArgs args{stride, padding, dilation, groups};
    if (convolution_training_support(input, weight, bias, args) == Fallback::none) {
      try {
        at::Tensor output = convolution_recorded(input, weight, bias.value_or(at::Tensor()),
                                                 stride, padding, dilation, groups);
        Wrapped::stats().count(Path::autograd_shim);
        return output;
      } catch (const std::exception& error) {
        report_kernel_error(op_display_name<Op>(), error);
      }
    }
    return with_grad<Op>(to_bf16(input), to_bf16(weight), to_bf16(bias), stride, padding,
                         dilation, groups);
  }
  ConvolutionArgs args{stride, padding, dilation, groups};
  // INT8: the op's entry decides; an op without a usable one runs in fp32 (one its entry
  // leaves out of INT8: inference_precision's).
  int64_t op = int8::kNoOp;
  Int8Spec spec;
  const Int8Spec* int8 = nullptr;
  Fallback int8_why = Fallback::none;
  if (int8::tracking()) {
    op = int8::identify_convolution(weight, stride, padding, dilation, groups,
                                    bias && bias->defined());
    if (int8::spec_for(op, &spec, &int8_why)) {
      int8_why = int8_convolution_support(input, args);
      if (int8_why == Fallback::none) int8 = &spec;
    }
    if (!int8) precision = inference_precision(Wrapped::stats(), int8_why);
  }
  const Fallback why = convolution_support(input, weight, bias, args);
  if (why != Fallback::none) {
    at::Tensor output = stock(why);
    int8::produced(op, output);
    return output;
  }
  fusion::ConvolutionPlan plan;
  try {
    c10::impl::ExcludeDispatchKeyGuard guard(shim_keys());
    at::Tensor output;
    if (!fusion::enabled()) {
      if (input_layout) fusion::settle(input);
      output = convolution_forward(input, weight, bias, args, precision, {}, {}, int8);
    } else {
      plan = fusion::plan_convolution(weight);
      ConvolutionPostOps post_ops;
      if (plan.fuse) {
        post_ops.batch_norm = plan.fold_batch_norm ? &plan.batch_norm : nullptr;
        fusion::set_activation(&post_ops, plan.relu, plan.relu_upper);
      }
      // `out += identity` inside the convolution (residual blocks, learned).
      if (plan.sum.defined() && plan.fuse && plan.fold_batch_norm) {
        post_ops.sum = &plan.sum;
        post_ops.sum_layout = fusion::addend_layout(plan.sum, &post_ops.sum_scale);
        post_ops.sum_in_place = plan.sum_in_place;
      }
      // INT8 handed to a quantised convolution: written in that convolution's input scale.
      if (int8 && plan.keep_layout) {
        Int8Spec next;
        Fallback next_why;
        const int64_t next_op = plan.next_weight.defined()
                                    ? int8::known_weighted(plan.next_weight)
                                    : plan.next_pool;
        if (plan.keep_for_op >= 0) {
          // A downsample's addend: s8 with its batch norm's calibrated scale.
          float kept_scale = 0.f;
          bool kept_uint8 = false;
          if (int8::output_quantisation(plan.keep_for_op, &kept_scale, &kept_uint8)) {
            spec.output_scale = kept_uint8 ? kept_scale * 127.f / 255.f : kept_scale;
            spec.output_uint8 = false;
          }
        } else if (int8::spec_for(next_op, &next, &next_why)) {
          spec.output_scale = next.input_scale;
          spec.output_uint8 = next.input_uint8;
        }
        // oneDNN adds an addend in the destination's own type: an fp32 (possibly negative)
        // addend or one of the other 8-bit type would saturate there, so such a result is
        // kept in fp32 instead.
        const auto addend_type = post_ops.sum_layout ? onednn::data_type_of(*post_ops.sum_layout)
                                                     : dnnl::memory::data_type::f32;
        if (post_ops.sum && spec.output_scale > 0.f &&
            addend_type != activation_type(spec.output_uint8)) {
          // ... unless the addend's own calibrated range is known (the batch norm that made
          // it): then it is stored as s8 with that scale and the sum rescales it.
          float addend_scale = 0.f;
          bool addend_uint8 = false;
          if (int8::output_quantisation(int8::producer_of(plan.sum), &addend_scale,
                                        &addend_uint8)) {
            post_ops.sum_s8_scale = addend_uint8 ? addend_scale * 127.f / 255.f : addend_scale;
          } else {
            spec.output_scale = 0.f;
          }
        }
      }
      dnnl::memory::desc kept;
      ConvolutionHandoff handoff{input_layout, fusion::layout_scale(input), plan.keep_layout,
                                 &kept};
      output = convolution_forward(input, weight, bias, args, precision, post_ops, handoff, int8);
      if (input_layout) fusion::consumed(input);
      const bool was_kept = plan.keep_layout && kept.get_size() > 0;
      // What a repair of a failed prediction recomputes: the same call, other post-ops,
      // from the input as the program sees it.
      const bool handed_over = input_layout != nullptr;
      // The call's arguments are held once, behind a shared pointer: the fusion copies this
      // function into several records per call, and each copy is then a reference count.
      struct Call {
        at::Tensor input, weight;
        c10::optional<at::Tensor> bias;
        std::vector<int64_t> stride, padding, dilation;
        int64_t groups;
        Precision precision;
        bool handed_over;
      };
      auto call = std::make_shared<const Call>(Call{input, weight, bias, stride.vec(),
                                                    padding.vec(), dilation.vec(), groups,
                                                    precision, handed_over});
      fusion::Recompute recompute = [call](const ConvolutionPostOps& ops) {
        if (call->handed_over) fusion::settle(call->input);  // bytes back in the program's layout
        return convolution_forward(
            call->input, call->weight, call->bias,
            ConvolutionArgs{call->stride, call->padding, call->dilation, call->groups},
            call->precision, ops);
      };
      fusion::after_convolution(input, output, plan, std::move(recompute),
                                was_kept ? &kept : nullptr,
                                was_kept && int8 && spec.output_scale > 0.f ? spec.output_scale
                                                                            : 1.f);
    }
    if (int8) {
      Wrapped::stats().count(Path::onednn_int8);
    } else {
      Wrapped::stats().count(path_for(precision), precision_note(Wrapped::stats(), int8_why));
    }
    int8::produced(op, output);
    return output;
  } catch (const std::exception& error) {
    report_kernel_error(op_display_name<Op>(), error);
    fusion::sum_in_place_failed(plan);
    return stock(Fallback::kernel_error);
  }
}

template <class Op>
at::Tensor transposed_convolution_override(const at::Tensor& input, const at::Tensor& weight,
                                           const c10::optional<at::Tensor>& bias,
                                           c10::IntArrayRef stride, c10::IntArrayRef padding,
                                           c10::IntArrayRef output_padding, int64_t groups,
                                           c10::IntArrayRef dilation) {
  using Wrapped = Intercept<Op>;
  const bool has_bias = bias && bias->defined();
  if (int8::calibrating()) {
    const int64_t op = int8::identify_transposed_convolution(weight, stride, padding,
                                                             output_padding, dilation, groups,
                                                             has_bias);
    calibration::observe_inputs(op, {&input});
    at::Tensor output =
        Wrapped::stock(input, weight, bias, stride, padding, output_padding, groups, dilation);
    Wrapped::stats().count(Path::observed);
    calibration::observe_output(op, output);
    calibration::keep_convolution_sample(op, input, weight, bias, stride, padding, dilation,
                                         groups, /*transposed=*/true, output_padding);
    int8::produced(op, output);
    return output;
  }
  if (Fallback gate = float_kernel_gate(); gate != Fallback::none)
    return Wrapped::stock_because(gate, input, weight, bias, stride, padding, output_padding,
                                  groups, dilation);
  // With a gradient: stock fp32. Stock torch 1.13's BF16 transposed convolution on CPU
  // rejects valid shapes ("expected input ... to have 4 channels"), and autocast leaves it in
  // fp32 too.
  if (needs_grad(input, weight, bias))
    return Wrapped::stock_because(Fallback::needs_grad, input, weight, bias, stride, padding,
                                  output_padding, groups, dilation);
  Precision precision = lower_precision(Wrapped::stats());
  ConvolutionArgs args{stride, padding, dilation, groups, true, output_padding};
  // INT8: the op's entry decides; an op without a usable one runs in fp32 (one its entry
  // leaves out of INT8: inference_precision's).
  int64_t op = int8::kNoOp;
  Int8Spec spec;
  const Int8Spec* int8 = nullptr;
  Fallback int8_why = Fallback::none;
  if (int8::tracking()) {
    op = int8::identify_transposed_convolution(weight, stride, padding, output_padding,
                                               dilation, groups, has_bias);
    if (int8::spec_for(op, &spec, &int8_why)) {
      int8_why = int8_convolution_support(input, args);
      if (int8_why == Fallback::none) int8 = &spec;
    }
    if (!int8) precision = inference_precision(Wrapped::stats(), int8_why);
  }
  at::Tensor output = run_or_stock<Op>(
      convolution_support(input, weight, bias, args),
      int8 ? Path::onednn_int8 : path_for(precision),
      [&] { return convolution_forward(input, weight, bias, args, precision, {}, {}, int8); },
      [&] {
        return Wrapped::stock(input, weight, bias, stride, padding, output_padding, groups,
                              dilation);
      },
      int8 ? Fallback::none : int8_why);
  int8::produced(op, output);
  return output;
}

namespace {

// _convolution handed to the wrapper of the public op of its rank: Direct or Transposed.
template <class Direct, class Transposed>
at::Tensor public_convolution(const at::Tensor& input, const at::Tensor& weight,
                              const c10::optional<at::Tensor>& bias, c10::IntArrayRef stride,
                              c10::IntArrayRef padding, c10::IntArrayRef dilation,
                              bool transposed, c10::IntArrayRef output_padding, int64_t groups) {
  if (transposed)
    return transposed_convolution_override<Transposed>(input, weight, bias, stride, padding,
                                                       output_padding, groups, dilation);
  return convolution_override<Direct>(input, weight, bias, stride, padding, dilation, groups);
}

}  // namespace

at::Tensor underscore_convolution_override(
    const at::Tensor& input, const at::Tensor& weight, const c10::optional<at::Tensor>& bias,
    c10::IntArrayRef stride, c10::IntArrayRef padding, c10::IntArrayRef dilation,
    bool transposed, c10::IntArrayRef output_padding, int64_t groups, bool benchmark,
    bool deterministic, bool cudnn_enabled, bool allow_tf32) {
  // The public op of the same rank and kind takes every case _convolution is called with
  // (always batched); its wrapper decides and counts the call.
  if (input.dim() == weight.dim()) {
    switch (input.dim()) {
      case 3:
        return public_convolution<at::_ops::conv1d, at::_ops::conv_transpose1d>(
            input, weight, bias, stride, padding, dilation, transposed, output_padding, groups);
      case 4:
        return public_convolution<at::_ops::conv2d, at::_ops::conv_transpose2d_input>(
            input, weight, bias, stride, padding, dilation, transposed, output_padding, groups);
      case 5:
        return public_convolution<at::_ops::conv3d, at::_ops::conv_transpose3d_input>(
            input, weight, bias, stride, padding, dilation, transposed, output_padding, groups);
      default:
        break;
    }
  }
  return Intercept<at::_ops::_convolution>::stock_because(
      Fallback::unsupported_shape, input, weight, bias, stride, padding, dilation, transposed,
      output_padding, groups, benchmark, deterministic, cudnn_enabled, allow_tf32);
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
