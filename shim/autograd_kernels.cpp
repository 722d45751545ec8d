#include "shim/autograd_kernels.h"

#include <ATen/ops/convolution_backward.h>
#include <ATen/ops/matmul.h>
#include <ATen/ops/max_pool2d_with_indices.h>
#include <ATen/ops/max_pool2d_with_indices_backward.h>
#include <ATen/ops/mm.h>
#include <ATen/ops/native_batch_norm_backward.h>
#include <c10/core/GradMode.h>
#include <c10/core/impl/LocalDispatchKeySet.h>
#include <torch/csrc/autograd/custom_function.h>

#include "kernels/batch_norm.h"
#include "kernels/convolution_training.h"
#include "kernels/linear_training.h"
#include "kernels/pooling.h"
#include "shim/dispatch_key.h"

namespace ipex_shim {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

std::vector<int64_t> ints(const at::IValue& value) { return value.toIntVector(); }

struct MaxPool2d : public torch::autograd::Function<MaxPool2d> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& input,
                            std::vector<int64_t> kernel, std::vector<int64_t> stride,
                            std::vector<int64_t> padding, std::vector<int64_t> dilation,
                            bool ceil_mode) {
    at::Tensor workspace;
    at::Tensor output;
    {
      c10::impl::ExcludeDispatchKeyGuard guard(shim_keys());
      output = max_pool_plain(input, kernel, stride, padding, dilation, ceil_mode, &workspace);
    }
    ctx->save_for_backward({input});
    ctx->saved_data["workspace"] = workspace;
    ctx->saved_data["kernel"] = kernel;
    ctx->saved_data["stride"] = stride;
    ctx->saved_data["padding"] = padding;
    ctx->saved_data["dilation"] = dilation;
    ctx->saved_data["ceil_mode"] = ceil_mode;
    return output;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
    const at::Tensor input = ctx->get_saved_variables()[0];
    const std::vector<int64_t> kernel = ints(ctx->saved_data["kernel"]);
    const std::vector<int64_t> stride = ints(ctx->saved_data["stride"]);
    const std::vector<int64_t> padding = ints(ctx->saved_data["padding"]);
    const std::vector<int64_t> dilation = ints(ctx->saved_data["dilation"]);
    const bool ceil_mode = ctx->saved_data["ceil_mode"].toBool();
    const at::Tensor& grad = grad_outputs[0];
    at::Tensor grad_input;
    if (c10::GradMode::is_enabled()) {
      // create_graph=True: the gradient must itself be differentiable, so stock's ops
      // compute it (the winners again, then their backward, which autograd records).
      c10::impl::ExcludeDispatchKeyGuard guard(shim_keys());
      const at::Tensor indices = std::get<1>(at::max_pool2d_with_indices(
          input.detach(), kernel, stride, padding, dilation, ceil_mode));
      grad_input = at::max_pool2d_with_indices_backward(grad, input, kernel, stride, padding,
                                                        dilation, ceil_mode, indices);
    } else {
      c10::impl::ExcludeDispatchKeyGuard guard(shim_keys());
      grad_input = max_pool_plain_backward(grad, input, ctx->saved_data["workspace"].toTensor(),
                                           kernel, stride, padding, dilation, ceil_mode);
    }
    return {grad_input, at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

struct BatchNorm : public torch::autograd::Function<BatchNorm> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& input,
                            const at::Tensor& weight, const at::Tensor& bias,
                            const c10::optional<at::Tensor>& running_mean,
                            const c10::optional<at::Tensor>& running_var, double momentum,
                            double eps) {
    BatchNormForward result;
    {
      c10::impl::ExcludeDispatchKeyGuard guard(shim_keys());
      result = batch_norm_training(input, weight, bias, running_mean.value_or(at::Tensor()),
                                   running_var.value_or(at::Tensor()), momentum, eps);
    }
    ctx->save_for_backward({input, weight});
    ctx->saved_data["mean"] = result.mean;
    ctx->saved_data["invstd"] = result.invstd;
    ctx->saved_data["eps"] = eps;
    return result.output;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
    const variable_list saved = ctx->get_saved_variables();
    const at::Tensor& input = saved[0];
    const at::Tensor& weight = saved[1];
    const at::Tensor mean = ctx->saved_data["mean"].toTensor();
    const at::Tensor invstd = ctx->saved_data["invstd"].toTensor();
    const std::array<bool, 3> wanted = {ctx->needs_input_grad(0),
                                        ctx->needs_input_grad(1),
                                        ctx->needs_input_grad(2)};
    // Stock's backward from the batch statistics the forward kept: it reads each activation
    // and gradient as few times as a kernel can (a version of ours took twice its time), and
    // under create_graph=True autograd can differentiate it again.
    c10::impl::ExcludeDispatchKeyGuard guard(shim_keys());
    auto grads = at::native_batch_norm_backward(grad_outputs[0], input, weight, {}, {}, mean,
                                                invstd, true, ctx->saved_data["eps"].toDouble(),
                                                wanted);
    return {std::get<0>(grads), std::get<1>(grads), std::get<2>(grads), at::Tensor(),
            at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

// What the convolution and linear functions keep of their operands: the input (a live
// tensor in most programs anyway; a double backward recomputes from it), the weight, and
// whether a bias came (the function's inputs are input, weight[, bias]).
void keep_operands(AutogradContext* ctx, const at::Tensor& input, const at::Tensor& weight,
                   const at::Tensor& bias) {
  ctx->save_for_backward({input, weight});
  ctx->saved_data["has_bias"] = bias.defined();
}

struct Operands {
  at::Tensor input, weight;
  bool has_bias;
  std::array<bool, 3> wanted;  // gradients of input, weight, bias to compute
};

Operands operands_of(AutogradContext* ctx) {
  const variable_list saved = ctx->get_saved_variables();
  const bool has_bias = ctx->saved_data["has_bias"].toBool();
  return {saved[0], saved[1], has_bias,
          {ctx->needs_input_grad(0), ctx->needs_input_grad(1),
           has_bias && ctx->needs_input_grad(2)}};
}

// The backward's answer: a gradient per input (the bias's only if one came), then an
// undefined one for each of `trailing` non-tensor arguments.
variable_list gradients(const std::array<at::Tensor, 3>& grads, bool has_bias, int trailing) {
  variable_list result = {grads[0], grads[1]};
  if (has_bias) result.push_back(grads[2]);
  for (int i = 0; i < trailing; ++i) result.emplace_back();
  return result;
}

// The convolution's forward and backward (ConvolutionImpl below), with or without bias.
at::Tensor convolution_forward_common(AutogradContext* ctx, const at::Tensor& input,
                                      const at::Tensor& weight, const at::Tensor& bias,
                                      const std::vector<int64_t>& stride,
                                      const std::vector<int64_t>& padding,
                                      const std::vector<int64_t>& dilation, int64_t groups) {
  ConvolutionSaved saved;
  at::Tensor output;
  {
    c10::impl::ExcludeDispatchKeyGuard guard(shim_keys());
    output = convolution_training_forward(input, weight, bias,
                                          ConvolutionArgs{stride, padding, dilation, groups},
                                          &saved);
  }
  keep_operands(ctx, input, weight, bias);
  ctx->saved_data["source"] = saved.source;
  ctx->saved_data["stride"] = stride;
  ctx->saved_data["padding"] = padding;
  ctx->saved_data["dilation"] = dilation;
  ctx->saved_data["groups"] = groups;
  return output;
}

variable_list convolution_backward_common(AutogradContext* ctx, const variable_list& grads) {
  const auto [input, weight, has_bias, wanted] = operands_of(ctx);
  const std::vector<int64_t> stride = ints(ctx->saved_data["stride"]);
  const std::vector<int64_t> padding = ints(ctx->saved_data["padding"]);
  const std::vector<int64_t> dilation = ints(ctx->saved_data["dilation"]);
  const int64_t groups = ctx->saved_data["groups"].toInt();
  c10::impl::ExcludeDispatchKeyGuard guard(shim_keys());
  std::array<at::Tensor, 3> out;
  if (c10::GradMode::is_enabled()) {
    std::vector<int64_t> bias_sizes;
    if (has_bias) bias_sizes.push_back(weight.size(0));
    auto stock = at::convolution_backward(grads[0], input, weight, bias_sizes, stride, padding,
                                          dilation, false, std::vector<int64_t>(stride.size(), 0),
                                          groups, wanted);
    out = {std::get<0>(stock), std::get<1>(stock), std::get<2>(stock)};
  } else {
    ConvolutionSaved kept{ctx->saved_data["source"].toTensor()};
    out = convolution_training_backward(grads[0], input, weight, has_bias,
                                        ConvolutionArgs{stride, padding, dilation, groups},
                                        kept, wanted);
  }
  return gradients(out, has_bias, 4);  // then stride, padding, dilation, groups
}

// The linear's forward and backward (LinearImpl below), with or without bias.
at::Tensor linear_forward_common(AutogradContext* ctx, const at::Tensor& input,
                                 const at::Tensor& weight, const at::Tensor& bias) {
  LinearSaved saved;
  at::Tensor output;
  {
    c10::impl::ExcludeDispatchKeyGuard guard(shim_keys());
    output = linear_training_forward(input, weight, bias, &saved);
  }
  keep_operands(ctx, input, weight, bias);
  ctx->saved_data["source"] = saved.source;
  ctx->saved_data["weights"] = saved.weights;
  return output;
}

variable_list linear_backward_common(AutogradContext* ctx, const variable_list& grads) {
  const auto [input, weight, has_bias, wanted] = operands_of(ctx);
  c10::impl::ExcludeDispatchKeyGuard guard(shim_keys());
  std::array<at::Tensor, 3> out;
  if (c10::GradMode::is_enabled()) {
    // create_graph=True: differentiable stock ops in fp32.
    const at::Tensor& grad = grads[0];
    if (wanted[0]) out[0] = at::matmul(grad, weight);
    const at::Tensor grad_rows = grad.reshape({-1, weight.size(0)});
    if (wanted[1]) out[1] = at::mm(grad_rows.t(), input.reshape({-1, weight.size(1)}));
    if (wanted[2]) out[2] = grad_rows.sum(0);
  } else {
    out = linear_training_backward(grads[0], input, weight, has_bias,
                                   LinearSaved{ctx->saved_data["source"].toTensor(),
                                               ctx->saved_data["weights"].toTensor()},
                                   wanted);
  }
  return gradients(out, has_bias, 0);
}

// The convolution and linear functions, over `forward` and `backward` of an Impl: autograd's
// Function takes no undefined tensor as an input, so an op without bias and one with bias
// are two functions.
template <class Impl>
struct WithoutBias : public torch::autograd::Function<WithoutBias<Impl>> {
  template <class... Extra>
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& input,
                            const at::Tensor& weight, Extra... extra) {
    return Impl::forward(ctx, input, weight, at::Tensor(), extra...);
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    return Impl::backward(ctx, grads);
  }
};

template <class Impl>
struct WithBias : public torch::autograd::Function<WithBias<Impl>> {
  template <class... Extra>
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& input,
                            const at::Tensor& weight, const at::Tensor& bias, Extra... extra) {
    return Impl::forward(ctx, input, weight, bias, extra...);
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    return Impl::backward(ctx, grads);
  }
};

struct ConvolutionImpl {
  static constexpr auto forward = &convolution_forward_common;
  static constexpr auto backward = &convolution_backward_common;
};

struct LinearImpl {
  static constexpr auto forward = &linear_forward_common;
  static constexpr auto backward = &linear_backward_common;
};

}  // namespace

at::Tensor linear_recorded(const at::Tensor& input, const at::Tensor& weight,
                           const at::Tensor& bias) {
  if (bias.defined()) return WithBias<LinearImpl>::apply(input, weight, bias);
  return WithoutBias<LinearImpl>::apply(input, weight);
}

at::Tensor convolution_recorded(const at::Tensor& input, const at::Tensor& weight,
                                const at::Tensor& bias, c10::IntArrayRef stride,
                                c10::IntArrayRef padding, c10::IntArrayRef dilation,
                                int64_t groups) {
  if (bias.defined())
    return WithBias<ConvolutionImpl>::apply(input, weight, bias, stride.vec(), padding.vec(),
                                            dilation.vec(), groups);
  return WithoutBias<ConvolutionImpl>::apply(input, weight, stride.vec(), padding.vec(),
                                             dilation.vec(), groups);
}

at::Tensor batch_norm_recorded(const at::Tensor& input, const at::Tensor& weight,
                               const at::Tensor& bias, const at::Tensor& running_mean,
                               const at::Tensor& running_var, double momentum, double eps) {
  // Running statistics are passed as optionals: autograd's Function takes every at::Tensor
  // argument as an input that could need a gradient, and an undefined one it rejects.
  const c10::optional<at::Tensor> mean =
      running_mean.defined() ? c10::optional<at::Tensor>(running_mean) : c10::nullopt;
  const c10::optional<at::Tensor> var =
      running_var.defined() ? c10::optional<at::Tensor>(running_var) : c10::nullopt;
  return BatchNorm::apply(input, weight, bias, mean, var, momentum, eps);
}

at::Tensor max_pool2d_recorded(const at::Tensor& input, c10::IntArrayRef kernel,
                               c10::IntArrayRef stride, c10::IntArrayRef padding,
                               c10::IntArrayRef dilation, bool ceil_mode) {
  return MaxPool2d::apply(input, kernel.vec(), stride.vec(), padding.vec(), dilation.vec(),
                          ceil_mode);
}

}  // namespace ipex_shim
