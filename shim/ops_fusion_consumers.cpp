// batch_norm, relu, relu_ and gelu: stock PyTorch computes them (fp32 policy), unless the
// call is the one a fused convolution or linear predicted, which already applied it
// (shim/fusion.h).
#include "shim/ops_fusion_consumers.h"

#include <ATen/ops/batch_norm_ops.h>
#include <ATen/ops/gelu_ops.h>
#include <ATen/ops/relu_ops.h>

#include "shim/fusion.h"
#include "shim/intercept.h"
#include "shim/mode_policy.h"

namespace ipex_shim {

at::Tensor batch_norm_override(const at::Tensor& input, const c10::optional<at::Tensor>& weight,
                               const c10::optional<at::Tensor>& bias,
                               const c10::optional<at::Tensor>& running_mean,
                               const c10::optional<at::Tensor>& running_var, bool training,
                               double momentum, double eps, bool cudnn_enabled) {
  using Wrapped = Intercept<at::_ops::batch_norm>;
  const bool learn = float_kernel_gate() == Fallback::none && fusion::enabled() &&
                     !needs_grad(input, weight, bias);
  if (learn) {
    if (auto answer = fusion::answer_batch_norm(input, weight, bias, running_mean, running_var,
                                                training, eps)) {
      Wrapped::stats().count(Path::fused);
      return *answer;
    }
  }
  at::Tensor output = Wrapped::pass_through(input, weight, bias, running_mean, running_var,
                                            training, momentum, eps, cudnn_enabled);
  if (learn) {
    fusion::after_batch_norm(input, output, weight, bias, running_mean, running_var, training,
                             eps);
  }
  return output;
}

template <class Op, fusion::Relu kind, class Result, class Input>
Result relu_common(Input input) {
  using Wrapped = Intercept<Op>;
  const bool learn =
      float_kernel_gate() == Fallback::none && fusion::enabled() && !needs_grad(input);
  if (learn) {
    if (auto answer = fusion::answer_relu(input, kind)) {
      Wrapped::stats().count(Path::fused);
      if constexpr (kind == fusion::Relu::in_place) return input;
      else return *answer;
    }
  }
  const uint32_t version_before = learn ? input._version() : 0;
  if constexpr (kind == fusion::Relu::in_place) {
    Wrapped::pass_through(input);
    if (learn) fusion::after_relu(input, input, kind, version_before);
    return input;
  } else {
    at::Tensor output = Wrapped::pass_through(input);
    if (learn) fusion::after_relu(input, output, kind, version_before);
    return output;
  }
}

at::Tensor gelu_override(const at::Tensor& input, c10::string_view approximate) {
  using Wrapped = Intercept<at::_ops::gelu>;
  const bool learn =
      float_kernel_gate() == Fallback::none && fusion::enabled() && !needs_grad(input);
  if (learn) {
    if (auto answer = fusion::answer_gelu(input, approximate)) {
      Wrapped::stats().count(Path::fused);
      return *answer;
    }
  }
  const uint32_t version_before = learn ? input._version() : 0;
  at::Tensor output = Wrapped::pass_through(input, approximate);
  if (learn) fusion::after_gelu(input, approximate, version_before);
  return output;
}

at::Tensor relu_override(const at::Tensor& input) {
  return relu_common<at::_ops::relu, fusion::Relu::out_of_place, at::Tensor, const at::Tensor&>(
      input);
}

at::Tensor& relu__override(at::Tensor& input) {
  return relu_common<at::_ops::relu_, fusion::Relu::in_place, at::Tensor&, at::Tensor&>(input);
}

}  // namespace ipex_shim
