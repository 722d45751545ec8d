// batch_norm, relu, hardtanh, silu, hardswish (and their in-place forms) and gelu: stock
// PyTorch computes them (fp32 policy), unless the call is the one a fused convolution or
// linear predicted, which already applied it (shim/fusion.h).
#include "shim/ops_fusion_consumers.h"

#include <ATen/ops/adaptive_avg_pool2d_ops.h>
#include <ATen/ops/add_ops.h>
#include <ATen/ops/avg_pool2d_ops.h>
#include <ATen/ops/batch_norm_ops.h>
#include <ATen/ops/cat_ops.h>
#include <ATen/ops/max_pool2d_ops.h>
#include <ATen/ops/mul_ops.h>
#include <ATen/ops/gelu_ops.h>
#include <ATen/ops/hardswish_ops.h>
#include <ATen/ops/hardtanh_ops.h>
#include <ATen/ops/relu_ops.h>
#include <ATen/ops/silu_ops.h>

#include <algorithm>

#include "kernels/tensor_version.h"
#include "kernels/batch_norm.h"
#include "kernels/channel_scale.h"
#include "kernels/concat.h"
#include "kernels/pooling.h"
#include "shim/autograd_kernels.h"
#include "shim/fusion.h"
#include "shim/int8_modes.h"
#include "shim/ops_observed.h"
#include "shim/intercept.h"
#include "shim/mode_policy.h"
#include "shim/write_watch.h"

namespace ipex_shim {

at::Tensor batch_norm_override(const at::Tensor& input, const c10::optional<at::Tensor>& weight,
                               const c10::optional<at::Tensor>& bias,
                               const c10::optional<at::Tensor>& running_mean,
                               const c10::optional<at::Tensor>& running_var, bool training,
                               double momentum, double eps, bool cudnn_enabled) {
  using Wrapped = Intercept<at::_ops::batch_norm>;
  // Training updates the running statistics in place (a folded batch norm depends on them).
  WriteNote mean_written(training ? running_mean : c10::nullopt);
  WriteNote var_written(training ? running_var : c10::nullopt);
  const int64_t op = int8::tracking()
                         ? int8::identify_anchored(int8::Kind::batch_norm, {&input})
                         : int8::kNoOp;
  if (int8::calibrating()) {
    calibration::observe_inputs(op, {&input});
    at::Tensor output = Wrapped::stock(input, weight, bias, running_mean, running_var, training,
                                       momentum, eps, cudnn_enabled);
    Wrapped::stats().count(Path::observed);
    calibration::observe_output(op, output);
    int8::produced(op, output);
    return output;
  }
  // (Not in the INT8 modes, whose op identities count this call through the path below.)
  if (training && needs_grad(input, weight, bias) && !int8::tracking() &&
      float_kernel_gate() == Fallback::none) {
    // Training: the shim's batch statistics and backward (stock 1.13's fp32 training batch
    // norm reads each activation three times from memory).
    const at::Tensor none;
    const at::Tensor& w = weight ? *weight : none;
    const at::Tensor& b = bias ? *bias : none;
    const at::Tensor& mean = running_mean ? *running_mean : none;
    const at::Tensor& var = running_var ? *running_var : none;
    // Without an affine weight and bias (rare) stock runs: the autograd function takes both.
    if (!fusion::layout_of(input) && w.defined() && b.defined() &&
        batch_norm_training_support(input, w, b, mean, var) == Fallback::none) {
      try {
        at::Tensor output = batch_norm_recorded(input, w, b, mean, var, momentum, eps);
        Wrapped::stats().count(Path::autograd_shim);
        return output;
      } catch (const std::exception& error) {
        report_kernel_error(op_display_name<at::_ops::batch_norm>(), error);
      }
    }
  }
  const bool learn = float_kernel_gate() == Fallback::none && fusion::enabled() &&
                     !needs_grad(input, weight, bias);
  if (learn) {
    if (auto answer = fusion::answer_batch_norm(input, weight, bias, running_mean, running_var,
                                                training, eps)) {
      Wrapped::stats().count(Path::fused);
      int8::produced(op, *answer);
      return *answer;
    }
  }
  at::Tensor output = Wrapped::pass_through(input, weight, bias, running_mean, running_var,
                                            training, momentum, eps, cudnn_enabled);
  if (learn) {
    fusion::after_batch_norm(input, output, weight, bias, running_mean, running_var, training,
                             eps);
  }
  int8::produced(op, output);
  return output;
}

// relu, relu_, hardtanh and hardtanh_ (`extra`: hardtanh's bounds), silu, silu_, hardswish
// and hardswish_. `fusable`: the call is one a convolution can compute as its post-op
// (hardtanh: a clamp to [0, upper]).
template <class Op, fusion::Relu kind, class Result, class Input, class... Extra>
Result relu_common(Input input, float upper, bool fusable, const Extra&... extra) {
  using Wrapped = Intercept<Op>;
  // silu and hardswish have no INT8 entry (the seed's format knows none, and configs written
  // before the shim fused them must still match): they run on values between the INT8 ops.
  constexpr bool has_int8_entry = fusion::is_plain_relu(kind) || fusion::is_clamp(kind);
  const int64_t op = has_int8_entry && int8::tracking()
                         ? int8::identify_anchored(int8::Kind::relu, {&input})
                         : int8::kNoOp;
  if (int8::calibrating()) {
    calibration::observe_inputs(op, {&input});
    Wrapped::stats().count(Path::observed);
    if constexpr (fusion::is_in_place(kind)) {
      Wrapped::stock(input, extra...);
      calibration::observe_output(op, input);
      return input;
    } else {
      at::Tensor output = Wrapped::stock(input, extra...);
      calibration::observe_output(op, output);
      int8::produced(op, output);
      return output;
    }
  }
  const bool learn = fusable && float_kernel_gate() == Fallback::none && fusion::enabled() &&
                     !needs_grad(input);
  if (learn) {
    if (auto answer = fusion::answer_relu(input, kind, upper)) {
      Wrapped::stats().count(Path::fused);
      if constexpr (fusion::is_in_place(kind)) {
        return input;
      } else {
        // Stock's result would be new memory that no INT8 op produced; the answer shares the
        // batch norm's (or convolution's), so that op's claim on it is dropped: later ops get
        // the same INT8 identities as in the calibration run, which ran stock.
        if (!has_int8_entry && int8::tracking()) int8::produced_by_no_op(*answer);
        return *answer;
      }
    }
  }
  const uint32_t version_before = learn ? version_of(input) : 0;
  if constexpr (fusion::is_in_place(kind)) {
    Wrapped::pass_through(input, extra...);
    if (learn) fusion::after_relu(input, input, kind, version_before, upper);
    return input;
  } else {
    at::Tensor output = Wrapped::pass_through(input, extra...);
    if (learn) fusion::after_relu(input, output, kind, version_before, upper);
    int8::produced(op, output);
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
  const uint32_t version_before = learn ? version_of(input) : 0;
  at::Tensor output = Wrapped::pass_through(input, approximate);
  if (learn) fusion::after_gelu(input, output, approximate, version_before);
  return output;
}

at::Tensor add_override(const at::Tensor& self, const at::Tensor& other, const at::Scalar& alpha) {
  using Wrapped = Intercept<at::_ops::add_Tensor>;
  if (int8::calibrating())
    return Observed<at::_ops::add_Tensor, int8::Kind::add>::call(self, other, alpha);
  // A residual block's `x + bn(conv(...))` (mobilenet's), fused into the convolution.
  const bool quantising = int8::quantising();
  const int64_t op =
      quantising ? int8::identify_anchored(int8::Kind::add, {&self, &other}) : int8::kNoOp;
  const bool learn = float_kernel_gate() == Fallback::none && fusion::enabled() &&
                     !needs_grad(self, other);
  if (learn) {
    if (auto answer = fusion::answer_add_out_of_place(self, other, alpha)) {
      Wrapped::stats().count(Path::fused);
      int8::produced(op, *answer);
      return *answer;
    }
  }
  const uint32_t self_version = learn ? version_of(self) : 0;
  const uint32_t other_version = learn ? version_of(other) : 0;
  at::Tensor output = Wrapped::pass_through(self, other, alpha);
  if (learn)
    fusion::after_add_out_of_place(self, other, alpha, output, self_version, other_version,
                                   quantising ? int8::producer_of(self) : 0,
                                   quantising ? int8::producer_of(other) : 0);
  int8::produced(op, output);
  return output;
}

at::Tensor& add__override(at::Tensor& self, const at::Tensor& other, const at::Scalar& alpha) {
  using Wrapped = Intercept<at::_ops::add__Tensor>;
  WriteNote written(self);
  if (int8::calibrating())
    return Observed<at::_ops::add__Tensor, int8::Kind::add>::call(self, other, alpha);
  // A residual block's `out += identity`, fused into a convolution (every mode that runs
  // the shim's kernels: the sum is a post-op in fp32, BF16 and INT8 alike).
  const bool quantising = int8::quantising();
  const int64_t op =
      quantising ? int8::identify_anchored(int8::Kind::add, {&self, &other}) : int8::kNoOp;
  const bool learn = float_kernel_gate() == Fallback::none && fusion::enabled() &&
                     !needs_grad(self, other);
  if (learn && fusion::answer_add(self, other, alpha)) {
    Wrapped::stats().count(Path::fused);
    int8::produced(op, self);
    return self;
  }
  const uint32_t version_before = version_of(self);
  Wrapped::pass_through(self, other, alpha);
  // In INT8 the earlier chain keeps self in INT8 with self's calibrated scale, so it needs
  // the op that made self; fp32 and BF16 keep it in its own precision (any op will do).
  if (learn)
    fusion::after_add(self, other, alpha, version_before,
                      quantising ? int8::producer_of(self) : 0);
  int8::produced(op, self);
  return self;
}

namespace {

// max_pool2d's int[2] arguments as PyTorch reads them: one value stands for both, and an
// empty stride means the kernel size.
std::vector<int64_t> pair_of(c10::IntArrayRef values, c10::IntArrayRef when_empty) {
  if (values.empty()) return when_empty.vec();
  if (values.size() == 1) return {values[0], values[0]};
  return values.vec();
}

// What every pooling wrapper shares. `kernel_on_bytes(layout, op)` runs the shim's kernel
// on an input handed over in oneDNN's `layout`, `kernel_on_values(&why)` on a plain fp32
// input (stock's pooling took 2-4 ms a call on squeezenet's and inception's activations,
// oneDNN's a fraction of that); each returns nullopt where it does not apply
// (kernel_on_values saying why), and the stock op runs (always in calibration). A pass that
// can fuse learns which chain the pool consumed (`after_pool`), so that later passes hand it
// over.
template <class Op, int8::Kind kind, class KernelOnBytes, class KernelOnValues, class... Args>
at::Tensor pooling_common(const at::Tensor& self, KernelOnBytes kernel_on_bytes,
                          KernelOnValues kernel_on_values, Args... args) {
  const dnnl::memory::desc* layout = fusion::layout_of(self);
  if (int8::calibrating()) {
    if (layout) fusion::settle(self);
    return Observed<Op, kind>::call(self, args...);
  }
  const bool quantising = int8::quantising();
  const int64_t op = quantising ? int8::identify_anchored(kind, {&self}) : int8::kNoOp;
  const bool kernels = float_kernel_gate() == Fallback::none && !needs_grad(self);
  const bool learn = kernels && fusion::enabled();
  if (learn && layout) {
    if (c10::optional<at::Tensor> output = kernel_on_bytes(*layout, op)) return *output;
  }
  if (layout) fusion::settle(self);  // stock reads values
  c10::optional<at::Tensor> computed;
  Fallback why = fallback_for_mode(current_mode());
  if (kernels) {
    why = plain_pool_inference_input(self);
    if (why == Fallback::none) {
      try {
        c10::impl::ExcludeDispatchKeyGuard guard(shim_keys());
        computed = kernel_on_values(&why);
      } catch (const std::exception& error) {
        report_kernel_error(op_display_name<Op>(), error);
        why = Fallback::kernel_error;
      }
    }
  }
  if (computed)
    Intercept<Op>::stats().count(Path::onednn_fp32);
  else
    computed = Intercept<Op>::stock_because(why, self, args...);
  // The pool op's identity matters to INT8 only (its entry gives the handed-over scale).
  if (learn) fusion::after_pool(self, *computed, quantising ? op : 0);
  int8::produced(op, *computed);
  return *std::move(computed);
}

// The path a kernel on bytes of this type counts as.
Path path_of(dnnl::memory::data_type type) {
  switch (type) {
    case dnnl::memory::data_type::f32: return Path::onednn_fp32;
    case dnnl::memory::data_type::bf16: return Path::onednn_bf16;
    default: return Path::onednn_int8;
  }
}

}  // namespace

at::Tensor max_pool2d_override(const at::Tensor& self, c10::IntArrayRef kernel_size,
                               c10::IntArrayRef stride, c10::IntArrayRef padding,
                               c10::IntArrayRef dilation, bool ceil_mode) {
  using Op = at::_ops::max_pool2d;
  const std::vector<int64_t> kernel = pair_of(kernel_size, {});
  const std::vector<int64_t> strides = pair_of(stride, kernel);
  const std::vector<int64_t> pads = pair_of(padding, {0, 0});
  const std::vector<int64_t> dilations = pair_of(dilation, {1, 1});
  if (needs_grad(self) && !int8::tracking() && float_kernel_gate() == Fallback::none &&
      !fusion::layout_of(self)) {
    // Training: oneDNN's forward and backward (stock's pass over resnet's stem takes
    // 70-85 ms a step, oneDNN's 6 plus 7).
    if (max_pool_plain_support(self, kernel, strides, pads, dilations) == Fallback::none) {
      try {
        bool needs_stock = false;
        {
          c10::impl::ExcludeDispatchKeyGuard guard(shim_keys());
          needs_stock = max_pool_needs_stock(self);
        }
        if (!needs_stock) {
          at::Tensor output =
              max_pool2d_recorded(self, kernel, strides, pads, dilations, ceil_mode);
          Intercept<Op>::stats().count(Path::autograd_shim);
          return output;
        }
      } catch (const std::exception& error) {
        report_kernel_error(op_display_name<Op>(), error);
      }
    }
  }
  auto kernel_on_bytes = [&](const dnnl::memory::desc& layout,
                             int64_t op) -> c10::optional<at::Tensor> {
    if (max_pool_support(self, kernel, strides, pads, dilations) != Fallback::none)
      return c10::nullopt;
    try {
      c10::impl::ExcludeDispatchKeyGuard guard(shim_keys());
      dnnl::memory::desc pooled_layout;
      at::Tensor output = max_pool_handed_over(self, layout, kernel, strides, pads, dilations,
                                               ceil_mode, &pooled_layout);
      fusion::handed_on(self, output, pooled_layout, fusion::layout_scale(self));
      fusion::consumed(self);
      Intercept<Op>::stats().count(path_of(onednn::data_type_of(layout)));
      int8::produced(op, output);
      return output;
    } catch (const std::exception& error) {
      report_kernel_error(op_display_name<Op>(), error);
      return c10::nullopt;
    }
  };
  // Values: oneDNN's max skips a NaN and turns an all -inf window into the lowest float
  // (pooling.h), so an input holding either goes to stock.
  auto kernel_on_values = [&](Fallback* why) -> c10::optional<at::Tensor> {
    *why = max_pool_support(self, kernel, strides, pads, dilations);
    if (*why == Fallback::none && max_pool_needs_stock(self)) *why = Fallback::special_values;
    if (*why != Fallback::none) return c10::nullopt;
    return max_pool_values(self, kernel, strides, pads, dilations, ceil_mode);
  };
  return pooling_common<Op, int8::Kind::max_pool>(self, kernel_on_bytes, kernel_on_values,
                                                  kernel_size, stride, padding, dilation,
                                                  ceil_mode);
}

namespace {

// Average pooling of a chain's result handed over in oneDNN's layout: pooled as it is and
// returned as values (the program's fp32, in stock's memory format), or with `hand_on`, as
// fp32 bytes in the blocked layout oneDNN pooled them in, handed on to the convolution that
// reads them next (inception's pool branches: one reorder, and its quantisation, fewer);
// nullopt when the kernel fails (reported), and the caller answers with stock.
template <class Op>
c10::optional<at::Tensor> average_handed_over(const at::Tensor& self,
                                              const dnnl::memory::desc& layout,
                                              c10::IntArrayRef kernel, c10::IntArrayRef strides,
                                              c10::IntArrayRef pads, bool count_include_pad,
                                              int64_t op, bool hand_on) {
  try {
    c10::impl::ExcludeDispatchKeyGuard guard(shim_keys());
    dnnl::memory::desc kept;
    at::Tensor values = avg_pool_values(self, layout, kernel, strides, pads, count_include_pad,
                                        fusion::layout_scale(self), hand_on ? &kept : nullptr);
    if (kept.get_size() > 0) fusion::handed_on(self, values, kept, 1.f);
    fusion::consumed(self);
    Intercept<Op>::stats().count(path_of(onednn::data_type_of(layout)));
    int8::produced(op, values);
    return values;
  } catch (const std::exception& error) {
    report_kernel_error(op_display_name<Op>(), error);
    return c10::nullopt;
  }
}

}  // namespace

at::Tensor avg_pool2d_override(const at::Tensor& self, c10::IntArrayRef kernel_size,
                               c10::IntArrayRef stride, c10::IntArrayRef padding, bool ceil_mode,
                               bool count_include_pad, c10::optional<int64_t> divisor_override) {
  using Op = at::_ops::avg_pool2d;
  const std::vector<int64_t> kernel = pair_of(kernel_size, {});
  const std::vector<int64_t> strides = pair_of(stride, kernel);
  const std::vector<int64_t> pads = pair_of(padding, {0, 0});
  const bool supported = avg_pool_support(self, kernel, strides, pads, ceil_mode,
                                          divisor_override.has_value()) == Fallback::none;
  auto kernel_on_bytes = [&](const dnnl::memory::desc& layout,
                             int64_t op) -> c10::optional<at::Tensor> {
    if (!supported) return c10::nullopt;
    return average_handed_over<Op>(self, layout, kernel, strides, pads, count_include_pad, op,
                                   /*hand_on=*/true);
  };
  auto kernel_on_values = [&](Fallback* why) -> c10::optional<at::Tensor> {
    if (!supported) {
      *why = Fallback::unsupported_shape;
      return c10::nullopt;
    }
    return avg_pool_plain(self, kernel, strides, pads, count_include_pad);
  };
  return pooling_common<Op, int8::Kind::avg_pool>(self, kernel_on_bytes, kernel_on_values,
                                                  kernel_size, stride, padding, ceil_mode,
                                                  count_include_pad, divisor_override);
}

at::Tensor adaptive_avg_pool2d_override(const at::Tensor& self, c10::SymIntArrayRef output_size) {
  using Op = at::_ops::adaptive_avg_pool2d;
  std::vector<int64_t> kernel;
  const c10::optional<at::IntArrayRef> sizes = c10::asIntArrayRefSlowOpt(output_size);
  const bool supported = sizes && adaptive_as_average(self, *sizes, &kernel);
  const int64_t zeros[] = {0, 0};
  auto kernel_on_bytes = [&](const dnnl::memory::desc& layout,
                             int64_t op) -> c10::optional<at::Tensor> {
    if (!supported) return c10::nullopt;
    return average_handed_over<Op>(self, layout, kernel, kernel, zeros, true, op,
                                   /*hand_on=*/false);
  };
  auto kernel_on_values = [&](Fallback* why) -> c10::optional<at::Tensor> {
    if (!supported) {
      *why = Fallback::unsupported_shape;
      return c10::nullopt;
    }
    // A global average of an NCHW tensor is stock's mean over rows it reads once, where the
    // kernel first reorders the whole input into channel blocks: 2-7x slower here (torch 2.6,
    // AVX512_BF16 EPYC; 1.3 against 0.2 ms for 4x96x112x112), and 1.9-3.1 ms against 1.1 a
    // call on efficientnet_v2_s's squeeze-excitation pools.
    if (sizes->size() == 2 && (*sizes)[0] == 1 && (*sizes)[1] == 1 &&
        self.suggest_memory_format() != at::MemoryFormat::ChannelsLast) {
      *why = Fallback::stock_faster;
      return c10::nullopt;
    }
    return avg_pool_plain(self, kernel, kernel, zeros, true);
  };
  return pooling_common<Op, int8::Kind::adaptive_pool>(self, kernel_on_bytes, kernel_on_values,
                                                       output_size);
}

namespace {

// The joined bytes of `inputs`, every one handed over in oneDNN's layout alike (one data
// type, 4-D, one memory format), along the channels; nullopt otherwise, or when the kernel
// fails (reported). INT8 inputs in different scales are joined in the scale most of them
// share (the chains' results are written in the scale of the op that reads the joined
// tensor; a max pool's result, inception's third branch, keeps its input's), the others
// rescaled into it.
c10::optional<at::Tensor> cat_handed_over(const std::vector<at::Tensor>& inputs, int64_t dim) {
  if (inputs.size() < 2 || inputs[0].dim() != 4 || (dim < 0 ? dim + 4 : dim) != 1)
    return c10::nullopt;
  std::vector<dnnl::memory::desc> layouts;
  std::vector<float> scales;
  const at::MemoryFormat format = inputs[0].suggest_memory_format();
  for (const at::Tensor& input : inputs) {
    const dnnl::memory::desc* layout = fusion::layout_of(input);
    if (layout == nullptr || input.dim() != 4 ||
        input.scalar_type() != inputs[0].scalar_type() ||
        input.suggest_memory_format() != format ||
        onednn::data_type_of(*layout) != onednn::data_type_of(layouts.empty() ? *layout
                                                                             : layouts[0]))
      return c10::nullopt;
    layouts.push_back(*layout);
    scales.push_back(fusion::layout_scale(input));
  }
  float scale = scales[0];
  size_t most = 0;
  for (float candidate : scales) {
    const auto sharing = static_cast<size_t>(std::count(scales.begin(), scales.end(), candidate));
    if (sharing > most) {
      most = sharing;
      scale = candidate;
    }
  }
  const auto type = onednn::data_type_of(layouts[0]);
  const bool int8_bytes =
      type == dnnl::memory::data_type::s8 || type == dnnl::memory::data_type::u8;
  if (most != scales.size() && !int8_bytes) return c10::nullopt;  // floating point: scale 1
  try {
    c10::impl::ExcludeDispatchKeyGuard guard(shim_keys());
    dnnl::memory::desc joined_layout;
    at::Tensor output = concat_handed_over(inputs, layouts, format, &joined_layout,
                                           most == scales.size() ? std::vector<float>{} : scales,
                                           scale);
    fusion::handed_on(inputs[0], output, joined_layout, scale);
    for (const at::Tensor& input : inputs) fusion::consumed(input);
    return output;
  } catch (const std::exception& error) {
    report_kernel_error(op_display_name<at::_ops::cat>(), error);
    return c10::nullopt;
  }
}

}  // namespace

at::Tensor cat_override(const at::ITensorListRef& tensors, int64_t dim) {
  using Op = at::_ops::cat;
  std::vector<at::Tensor> inputs;
  for (const at::Tensor& input : tensors) inputs.push_back(input);
  bool handed_over = false;
  std::vector<bool> input_handed_over;
  for (const at::Tensor& input : inputs) {
    input_handed_over.push_back(fusion::layout_of(input) != nullptr);
    handed_over |= input_handed_over.back();
  }
  const bool learn = !int8::calibrating() && float_kernel_gate() == Fallback::none &&
                     fusion::enabled() && !needs_grad_any(inputs);
  if (learn && handed_over) {
    if (c10::optional<at::Tensor> output = cat_handed_over(inputs, dim)) {
      Intercept<Op>::stats().count(path_of(onednn::data_type_of(*fusion::layout_of(*output))));
      return *output;
    }
  }
  // Stock reads values; the chains whose bytes could not be joined hand them over no more
  // (their values were right, so they keep fusing), unless the other inputs' chains are
  // still learning to hand theirs over.
  if (handed_over) {
    const bool learning = learn && fusion::cat_learning(inputs);
    for (const at::Tensor& input : inputs) {
      if (learning) {
        fusion::settle(input);
      } else {
        fusion::not_read_as_is(input);
      }
    }
  }
  at::Tensor output = Intercept<Op>::pass_through(tensors, dim);
  if (learn) fusion::after_cat(inputs, dim, output, input_handed_over);
  return output;
}

at::Tensor silu_override(const at::Tensor& input) {
  return relu_common<at::_ops::silu, fusion::Relu::silu_out_of_place, at::Tensor,
                     const at::Tensor&>(input, 0.f, true);
}

at::Tensor& silu__override(at::Tensor& input) {
  WriteNote written(input);
  return relu_common<at::_ops::silu_, fusion::Relu::silu_in_place, at::Tensor&, at::Tensor&>(
      input, 0.f, true);
}

at::Tensor hardswish_override(const at::Tensor& input) {
  return relu_common<at::_ops::hardswish, fusion::Relu::hardswish_out_of_place, at::Tensor,
                     const at::Tensor&>(input, 0.f, true);
}

at::Tensor& hardswish__override(at::Tensor& input) {
  WriteNote written(input);
  return relu_common<at::_ops::hardswish_, fusion::Relu::hardswish_in_place, at::Tensor&,
                     at::Tensor&>(input, 0.f, true);
}

at::Tensor relu_override(const at::Tensor& input) {
  return relu_common<at::_ops::relu, fusion::Relu::out_of_place, at::Tensor, const at::Tensor&>(
      input, 0.f, true);
}

at::Tensor& relu__override(at::Tensor& input) {
  WriteNote written(input);
  return relu_common<at::_ops::relu_, fusion::Relu::in_place, at::Tensor&, at::Tensor&>(
      input, 0.f, true);
}

namespace {

// hardtanh(x, 0, upper) with 0 < upper (relu6 is hardtanh(x, 0, 6)) is a clamp a
// convolution can fuse; other bounds run as they are.
bool clamp_from_zero(const at::Scalar& min_val, const at::Scalar& max_val, float* upper) {
  if (min_val.isComplex() || max_val.isComplex()) return false;
  const double lo = min_val.toDouble(), hi = max_val.toDouble();
  *upper = static_cast<float>(hi);
  return lo == 0.0 && hi > 0.0 && static_cast<double>(*upper) == hi;
}

}  // namespace

at::Tensor hardtanh_override(const at::Tensor& input, const at::Scalar& min_val,
                             const at::Scalar& max_val) {
  float upper = 0.f;
  const bool fusable = clamp_from_zero(min_val, max_val, &upper);
  return relu_common<at::_ops::hardtanh, fusion::Relu::clamp_out_of_place, at::Tensor,
                     const at::Tensor&>(input, upper, fusable, min_val, max_val);
}

at::Tensor& hardtanh__override(at::Tensor& input, const at::Scalar& min_val,
                               const at::Scalar& max_val) {
  WriteNote written(input);
  float upper = 0.f;
  const bool fusable = clamp_from_zero(min_val, max_val, &upper);
  return relu_common<at::_ops::hardtanh_, fusion::Relu::clamp_in_place, at::Tensor&,
                     at::Tensor&>(input, upper, fusable, min_val, max_val);
}

namespace {

// Whether `gate` is a per-channel factor of `x` for scale_channels_handed_over: fp32
// (N|1, C, 1, 1) against fp32 (N, C, H, W), so that the product has x's sizes and dtype.
bool is_channel_gate(const at::Tensor& x, const at::Tensor& gate) {
  return x.dim() == 4 && gate.dim() == 4 && x.scalar_type() == at::kFloat &&
         gate.scalar_type() == at::kFloat && gate.size(1) == x.size(1) && gate.size(2) == 1 &&
         gate.size(3) == 1 && (gate.size(0) == x.size(0) || gate.size(0) == 1) &&
         gate.device().is_cpu();
}

// The type and INT8 scale the product is written in: INT8 mode with the convolution that
// reads it known, in that convolution's input scale; else the bytes' own type (fp32 when
// they are INT8: the reader's scale is not known yet).
dnnl::memory::data_type product_type(const at::Tensor& x, const dnnl::memory::desc& layout,
                                     float* scale) {
  using dt = dnnl::memory::data_type;
  *scale = 1.f;
  if (int8::quantising()) {
    const at::Tensor next = fusion::weight_after_mul(x);
    Int8Spec spec;
    Fallback why;
    if (next.defined() && int8::spec_for(int8::known_weighted(next), &spec, &why) &&
        spec.input_scale > 0.f) {
      *scale = spec.input_scale;
      return spec.input_uint8 ? dt::u8 : dt::s8;
    }
  }
  const dt type = onednn::data_type_of(layout);
  return type == dt::s8 || type == dt::u8 ? dt::f32 : type;
}

}  // namespace

at::Tensor mul_observed(c10::DispatchKeySet keys, const at::Tensor& self,
                        const at::Tensor& other) {
  using Op = at::_ops::mul_Tensor;
  // What the observer's fallback does for every other op (this kernel replaces it for mul):
  // a tainted operand that is not handed-over bytes is repaired before anything reads it.
  fusion::observe_read(self, "aten::mul.Tensor");
  fusion::observe_read(other, "aten::mul.Tensor");
  const c10::DispatchKeySet below =
      keys & c10::DispatchKeySet(c10::DispatchKeySet::FULL_AFTER, observer_key());
  const dnnl::memory::desc* self_layout = fusion::layout_of(self);
  const dnnl::memory::desc* other_layout = fusion::layout_of(other);
  if (self_layout == nullptr && other_layout == nullptr)
    return Op::redispatch(below, self, other);
  // One operand handed over (a squeeze-excitation's input), the other its gate.
  const bool self_handed = self_layout != nullptr;
  const at::Tensor& x = self_handed ? self : other;
  const at::Tensor& gate = self_handed ? other : self;
  const dnnl::memory::desc& layout = self_handed ? *self_layout : *other_layout;
  Fallback why = float_kernel_gate();
  if (why == Fallback::none && (self_layout && other_layout)) why = Fallback::unsupported_shape;
  if (why == Fallback::none && needs_grad(x, gate)) why = Fallback::needs_grad;
  if (why == Fallback::none && !is_channel_gate(x, gate)) why = Fallback::unsupported_shape;
  if (why == Fallback::none && fusion::enabled()) {
    try {
      c10::impl::ExcludeDispatchKeyGuard guard(shim_keys());
      float scale = 1.f;
      const dnnl::memory::data_type type = product_type(x, layout, &scale);
      dnnl::memory::desc product_layout;
      at::Tensor product =
          scale_channels_handed_over(x, layout, fusion::layout_scale(x), gate.contiguous(),
                                     type, scale, &product_layout);
      fusion::mul_handed_on(x, product, product_layout, scale);
      Intercept<Op>::stats().count(path_of(type));
      return product;
    } catch (const std::exception& error) {
      report_kernel_error(op_display_name<Op>(), error);
      why = Fallback::kernel_error;
    }
  }
  // The bytes go back to values for stock, and the chain stops handing its result over.
  if (self_layout) fusion::not_read_as_is(self);
  if (other_layout) fusion::not_read_as_is(other);
  Intercept<Op>::stats().count(Path::stock, why);
  return Op::redispatch(below, self, other);
}

}  // namespace ipex_shim
