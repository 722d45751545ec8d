// Wrappers for linear and the matmul family. Same decisions as ops_convolution.cpp:
// no gradient -> own oneDNN kernel in the mode's precision; gradient in bf16 mode -> stock
// kernels on BF16 copies, fp32 result; anything the kernels do not take -> stock, counted
// with the reason.
#include "shim/ops_matmul.h"

#include <ATen/ops/addmm_ops.h>
#include <ATen/ops/baddbmm_ops.h>
#include <ATen/ops/bmm_ops.h>
#include <ATen/ops/linear_ops.h>
#include <ATen/ops/matmul_ops.h>
#include <ATen/ops/mm_ops.h>

#include "kernels/linear_training.h"
#include "kernels/matmul.h"
#include "kernels/onednn_compat.h"
#include "kernels/softmax.h"
#include "shim/autograd_kernels.h"
#include "shim/fusion.h"
#include "shim/int8_modes.h"
#include "shim/intercept.h"
#include "shim/mode_policy.h"

namespace ipex_shim {
namespace {

// addmm/baddbmm: beta * self + alpha * (a b). The kernel takes beta 0 (self ignored, as in
// stock) or 1 (self added as a broadcast bias); other betas go to stock.
Fallback scaled_product_support(const at::Tensor& self, const at::Tensor& a, const at::Tensor& b,
                                const at::Scalar& beta, const at::Scalar& alpha, float* alpha_out,
                                bool* use_self) {
  if (beta.isComplex() || alpha.isComplex()) return Fallback::unsupported_dtype;
  const double beta_value = beta.toDouble();
  if (beta_value != 0.0 && beta_value != 1.0) return Fallback::unsupported_shape;
  if (self.scalar_type() != at::kFloat) return Fallback::unsupported_dtype;
  *alpha_out = static_cast<float>(alpha.toDouble());
  *use_self = beta_value == 1.0;
  if (*use_self && *alpha_out == 0.f) return Fallback::unsupported_shape;  // bias is folded / alpha
  if (*use_self) {
    // self must broadcast to the output along leading dims only.
    const int64_t rank = a.dim();
    if (self.dim() > rank) return Fallback::unsupported_shape;
    std::vector<int64_t> out_sizes = a.sizes().vec();
    out_sizes.back() = b.size(-1);
    for (int64_t d = 1; d <= self.dim(); ++d) {
      const int64_t size = self.size(self.dim() - d);
      if (size != 1 && size != out_sizes[rank - d]) return Fallback::unsupported_shape;
    }
  }
  return batched_matmul_support(a, b);
}

}  // namespace

at::Tensor linear_override(const at::Tensor& input, const at::Tensor& weight,
                           const c10::optional<at::Tensor>& bias) {
  using Op = at::_ops::linear;
  if (int8::calibrating()) {
    const int64_t op = int8::identify_linear(weight, bias && bias->defined());
    calibration::observe_inputs(op, {&input});
    at::Tensor output = Intercept<Op>::stock(input, weight, bias);
    Intercept<Op>::stats().count(Path::observed);
    calibration::observe_output(op, output);
    calibration::keep_linear_sample(op, input, weight, bias);
    int8::produced(op, output);
    return output;
  }
  // An input handed over by the linear before it is only for the shim's kernel below: every
  // other path gets it as values first (the observer has repaired any other tainted input
  // before a linear runs, so settle changes only such an input).
  if (Fallback gate = float_kernel_gate(); gate != Fallback::none) {
    fusion::settle(input);
    return Intercept<Op>::stock_because(gate, input, weight, bias);
  }
  if (needs_grad(input, weight, bias)) {
    fusion::settle(input);
    if (lower_precision(Intercept<Op>::stats()) == Precision::fp32)
      return with_grad<Op>(input, weight, bias);
    if (linear_training_support(input, weight, bias) == Fallback::none) {
      try {
        at::Tensor output = linear_recorded(input, weight, bias.value_or(at::Tensor()));
        Intercept<Op>::stats().count(Path::autograd_shim);
        return output;
      } catch (const std::exception& error) {
        report_kernel_error(op_display_name<Op>(), error);
      }
    }
    return with_grad<Op>(to_bf16(input), to_bf16(weight), to_bf16(bias));
  }
  // INT8: the op's entry decides; an op without a usable one runs in fp32 (one its entry
  // leaves out of INT8: inference_precision's).
  int64_t op = int8::kNoOp;
  Int8Spec spec;
  const Int8Spec* int8 = nullptr;
  Fallback int8_why = Fallback::none;
  if (int8::tracking()) {
    op = int8::identify_linear(weight, bias && bias->defined());
    if (int8::spec_for(op, &spec, &int8_why)) int8 = &spec;
  }
  const Precision precision = inference_precision(Intercept<Op>::stats(), int8_why);
  auto kernel = [&] {
    if (!fusion::enabled()) return linear_forward(input, weight, bias, precision,
                                                  MatmulActivation::none, int8);
    // An input handed over by the linear before (a feed-forward block): its bytes are read as
    // they are when they are what this linear reads (INT8 in its input scale, or BF16 for a
    // BF16 product), else settled into values first.
    float handed_scale = 1.f;
    const dnnl::memory::desc* handed = fusion::linear_reads(input, weight, &handed_scale);
    LinearHandoff handoff;
    dnnl::memory::desc handed_rows;
    if (handed) {
      const auto type = onednn::data_type_of(*handed);
      const bool readable = int8 ? type == activation_type(int8->input_uint8) &&
                                       handed_scale == int8->input_scale
                                 : type == dnnl::memory::data_type::bf16 &&
                                       precision == Precision::bf16;
      if (readable && input.is_contiguous()) {
        const int64_t features = weight.size(1);
        handed_rows = dnnl::memory::desc({input.numel() / features, features}, type,
                                         dnnl::memory::format_tag::ab);
        handoff.input_layout = &handed_rows;
        handoff.input_scale = handed_scale;
      } else {
        fusion::settle(input);
      }
    }
    fusion::LinearPlan plan = fusion::plan_linear(weight);
    // The result kept for the next linear: INT8 in its input scale when both run INT8, BF16
    // when both run BF16 (bf16 mode); anything else is written as values.
    Int8Spec kept_spec = int8 ? *int8 : Int8Spec();
    dnnl::memory::desc kept;
    if (plan.keep) {
      if (int8) {
        Int8Spec next;
        Fallback next_why = Fallback::none;
        if (int8::spec_for(int8::known_weighted(plan.next_weight), &next, &next_why)) {
          kept_spec.output_scale = next.input_scale;
          kept_spec.output_uint8 = next.input_uint8;
          handoff.keep_result = true;
        }
      } else if (!int8::tracking() && precision == Precision::bf16) {
        handoff.keep_result = true;
      }
      handoff.kept = &kept;
    }
    at::Tensor output = linear_forward(input, weight, bias, precision, plan.activation,
                                       int8 ? &kept_spec : nullptr, false, handoff);
    if (handed && handoff.input_layout) fusion::consumed(input);
    const bool was_handed = handoff.input_layout != nullptr;
    fusion::after_linear(
        input, output, plan,
        [input, weight, bias, precision, was_handed] {
          if (was_handed) fusion::settle(input);  // bytes back into values first
          return linear_forward(input, weight, bias, precision);
        },
        kept.get_size() > 0 ? &kept : nullptr,
        kept.get_size() > 0 && int8 ? kept_spec.output_scale : 1.f);
    return output;
  };
  at::Tensor output = run_or_stock<Op>(
      linear_support(input, weight, bias), int8 ? Path::onednn_int8 : path_for(precision),
      kernel,
      [&] {
        fusion::settle(input);  // handed-over bytes, if any, into values
        return Intercept<Op>::stock(input, weight, bias);
      },
      int8_why);
  int8::produced(op, output);
  return output;
}

template <class Op>
at::Tensor product_compute(const at::Tensor& a, const at::Tensor& b, Fallback shape_check,
                           Fallback int8_why = Fallback::none);

// `first`: a step on A before the product (matmul_after_first_step), folded into an INT8
// product, else run first.
template <class Op>
at::Tensor product_override(const at::Tensor& a, const at::Tensor& b, Fallback shape_check,
                            const ProductFirstStep* first = nullptr) {
  bool first_done = first == nullptr;
  auto run_first = [&] {
    if (first_done) return;
    first_done = true;
    first->run();
  };
  const int64_t op =
      int8::tracking() ? int8::identify_anchored(int8::Kind::matmul, {&a, &b}) : int8::kNoOp;
  if (int8::calibrating()) {
    run_first();
    calibration::observe_inputs(op, {&a, &b});
    at::Tensor output = Intercept<Op>::stock(a, b);
    Intercept<Op>::stats().count(Path::observed);
    calibration::observe_output(op, output);
    int8::produced(op, output);
    return output;
  }
  at::Tensor output;
  Int8MatmulSpec spec;
  Fallback why = Fallback::none;
  if (int8::quantising() && int8::matmul_spec_for(op, &spec, &why) &&
      float_kernel_gate() == Fallback::none && !needs_grad(a, b)) {
    output = run_or_stock<Op>(
        shape_check != Fallback::none ? shape_check : batched_matmul_support(a, b),
        Path::onednn_int8,
        [&] {
          if (first && first->softmax && spec.a_uint8 && softmax_last_dim_supported(a))
            return batched_matmul_int8(softmax_last_dim_u8(a, spec.a_scale), b, spec);
          const bool fold_factor = first && !first->softmax;
          if (!fold_factor) run_first();
          return batched_matmul_int8(a, b, spec, fold_factor ? first->a_factor : 1.f);
        },
        [&] {
          run_first();
          return Intercept<Op>::stock(a, b);
        });
  } else {
    run_first();
    output = product_compute<Op>(a, b, shape_check, why);
  }
  int8::produced(op, output);
  return output;
}

// `int8_why`: why int8 mode did not run it in INT8 (inference_precision).
template <class Op>
at::Tensor product_compute(const at::Tensor& a, const at::Tensor& b, Fallback shape_check,
                           Fallback int8_why) {
  if (Fallback gate = float_kernel_gate(); gate != Fallback::none)
    return Intercept<Op>::stock_because(gate, a, b);
  if (needs_grad(a, b)) {
    if (lower_precision(Intercept<Op>::stats()) == Precision::fp32) return with_grad<Op>(a, b);
    return with_grad<Op>(to_bf16(a), to_bf16(b));
  }
  const Precision precision = inference_precision(Intercept<Op>::stats(), int8_why);
  Fallback why = shape_check != Fallback::none ? shape_check : batched_matmul_support(a, b);
  return run_or_stock<Op>(
      why, path_for(precision), [&] { return batched_matmul(a, b, precision); },
      [&] { return Intercept<Op>::stock(a, b); },
      int8_why == Fallback::not_quantized ? int8_why : Fallback::none);
}

at::Tensor matmul_override(const at::Tensor& a, const at::Tensor& b) {
  return product_override<at::_ops::matmul>(a, b, Fallback::none);
}

at::Tensor matmul_after_first_step(const at::Tensor& a, const at::Tensor& b,
                                   const ProductFirstStep& first) {
  return product_override<at::_ops::matmul>(a, b, Fallback::none, &first);
}

at::Tensor mm_override(const at::Tensor& a, const at::Tensor& b) {
  bool shaped = a.dim() == 2 && b.dim() == 2;
  return product_override<at::_ops::mm>(a, b, shaped ? Fallback::none : Fallback::unsupported_shape);
}

at::Tensor bmm_override(const at::Tensor& a, const at::Tensor& b) {
  bool shaped = a.dim() == 3 && b.dim() == 3 && a.size(0) == b.size(0);
  return product_override<at::_ops::bmm>(a, b, shaped ? Fallback::none : Fallback::unsupported_shape);
}

template <class Op>
at::Tensor scaled_product_override(const at::Tensor& self, const at::Tensor& a,
                                   const at::Tensor& b, const at::Scalar& beta,
                                   const at::Scalar& alpha, int64_t rank) {
  if (Fallback gate = float_kernel_gate(); gate != Fallback::none)
    return Intercept<Op>::stock_because(gate, self, a, b, beta, alpha);
  if (needs_grad(self, a, b)) {
    if (lower_precision(Intercept<Op>::stats()) == Precision::fp32)
      return with_grad<Op>(self, a, b, beta, alpha);
    return with_grad<Op>(to_bf16(self), to_bf16(a), to_bf16(b), beta, alpha);
  }
  const Precision precision = lower_precision(Intercept<Op>::stats());
  float alpha_value = 1.f;
  bool use_self = false;
  Fallback why = (a.dim() != rank || b.dim() != rank)
                     ? Fallback::unsupported_shape
                     : scaled_product_support(self, a, b, beta, alpha, &alpha_value, &use_self);
  if (why == Fallback::none && rank == 3 && a.size(0) != b.size(0)) why = Fallback::unsupported_shape;
  return run_or_stock<Op>(
      why, path_for(precision),
      [&] { return batched_matmul(a, b, precision, alpha_value, use_self ? self : at::Tensor()); },
      [&] { return Intercept<Op>::stock(self, a, b, beta, alpha); });
}

at::Tensor addmm_override(const at::Tensor& self, const at::Tensor& a, const at::Tensor& b,
                          const at::Scalar& beta, const at::Scalar& alpha) {
  return scaled_product_override<at::_ops::addmm>(self, a, b, beta, alpha, 2);
}

at::Tensor baddbmm_override(const at::Tensor& self, const at::Tensor& a, const at::Tensor& b,
                            const at::Scalar& beta, const at::Scalar& alpha) {
  return scaled_product_override<at::_ops::baddbmm>(self, a, b, beta, alpha, 3);
}

}  // namespace ipex_shim
