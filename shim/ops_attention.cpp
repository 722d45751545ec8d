// The transformer fast path as its parts. nn.MultiheadAttention (self-attention) and
// nn.TransformerEncoderLayer call one op each in eval without a gradient,
// _native_multi_head_attention and _transformer_encoder_layer_fwd, whose stock kernels make
// their products with calls the shim would not know as a layer (mm on a transposed weight,
// addmm, _addmm_activation, a linear that skips the dispatcher): in bf16 mode each weight was
// converted to BF16 on every call and the feed-forward's first product ran stock in fp32.
// Here both run as linear, matmul, softmax, layer_norm and the activation through the
// dispatcher, so the shim's kernels, weight cache, INT8 entries (calibrated on the same
// parts) and the linear's activation fusion take them as they take a program written with
// those ops. The arithmetic is stock's: q scaled by 1/sqrt(head size) (before its product
// with k through the dispatcher, as the product's scale below), the mask applied by stock's
// masked softmax (a mask that is not bool made bool first, as
// stock does), residuals added in place, layer norms where norm_first puts them.
//
// In fp32 and bf16 mode (fusion on) the parts call the product kernels here rather than
// through the dispatcher: no tensor between them reaches the program, so a product read only
// by the next product hands its result on in BF16 (the q, k and v projection, the
// probabilities times v, the feed-forward's first linear), the activation runs inside the
// feed-forward's first linear from the first call, and q's 1/sqrt(head size) is the score
// product's scale. Scores, residuals and layer norms stay fp32; an unmasked softmax runs on
// oneDNN's kernel (Parts::softmax). Calibration and int8 mode keep the dispatcher's parts:
// the INT8 entries are the parts' own. In int8 mode (fusion on) the two attention products
// are made on those same entries with their first step folded in (matmul_after_first_step):
// q's 1/sqrt(head size) in q's quantisation, the softmax writing the probabilities' u8 bytes.
#include "shim/ops_attention.h"

#include <ATen/ops/_masked_softmax.h>
#include <ATen/ops/_native_multi_head_attention_ops.h>
#include <ATen/ops/_softmax.h>
#include <ATen/ops/_transformer_encoder_layer_fwd_ops.h>
#include <ATen/ops/gelu.h>
#include <ATen/ops/gelu_ops.h>
#include <ATen/ops/layer_norm.h>
#include <ATen/ops/linear.h>
#include <ATen/ops/linear_ops.h>
#include <ATen/ops/matmul.h>
#include <ATen/ops/matmul_ops.h>
#include <ATen/ops/relu.h>
#include <ATen/ops/relu_ops.h>
#include <ATen/ops/softmax_ops.h>

#include <cmath>
#include <optional>

#include "kernels/matmul.h"
#include "kernels/softmax.h"
#include "shim/fusion.h"
#include "shim/int8_modes.h"
#include "shim/intercept.h"
#include "shim/mode_policy.h"
#include "shim/ops_matmul.h"

namespace ipex_shim {
namespace {

using Mha = at::_ops::_native_multi_head_attention;
using EncoderLayer = at::_ops::_transformer_encoder_layer_fwd;

// Whether the parts may run here: the float modes' gate (not off, not tracing, not inside the
// program's autocast region), and calibration, which must observe the same parts the INT8
// run will look up.
Fallback composition_gate() {
  if (current_mode() == Mode::calibration && int8::calibrating()) {
    if (c10::impl::tls_is_dispatch_key_included(c10::DispatchKey::Tracer)) return Fallback::tracing;
    if (compat::cpu_autocast_enabled()) return Fallback::autocast;
    return Fallback::none;
  }
  return float_kernel_gate();
}

bool plain_float(const at::Tensor& t) {
  return t.defined() && t.device().is_cpu() && t.layout() == at::kStrided &&
         t.scalar_type() == at::kFloat && !t.is_nested();
}

bool sized(const at::Tensor& t, std::initializer_list<int64_t> sizes) {
  return t.sizes().equals(sizes);
}

// What the parts take: plain fp32 CPU tensors, self-attention (query, key and value one
// tensor, as both fast paths pass them), the projections' documented shapes, and a mask of
// one of the three forms the modules pass: (T, T) for mask_type 0, (B, T) for 1, (B, H, T, T)
// for 2. Everything else runs stock, which also gives stock's own errors for bad arguments.
Fallback attention_support(const at::Tensor& x, const at::Tensor& key, const at::Tensor& value,
                           int64_t embed_dim, int64_t num_heads, const at::Tensor& qkv_weight,
                           const at::Tensor& qkv_bias, const at::Tensor& proj_weight,
                           const at::Tensor& proj_bias, const c10::optional<at::Tensor>& mask,
                           c10::optional<int64_t> mask_type) {
  for (const at::Tensor* t : {&x, &qkv_weight, &qkv_bias, &proj_weight, &proj_bias})
    if (!plain_float(*t)) return Fallback::unsupported_dtype;
  if (!key.is_same(x) || !value.is_same(x)) return Fallback::unsupported_shape;
  if (x.dim() != 3 || x.numel() == 0 || num_heads <= 0 || embed_dim <= 0 ||
      embed_dim % num_heads != 0 || x.size(2) != embed_dim)
    return Fallback::unsupported_shape;
  const int64_t D = embed_dim;
  if (!sized(qkv_weight, {3 * D, D}) || !sized(qkv_bias, {3 * D}) ||
      !sized(proj_weight, {D, D}) || !sized(proj_bias, {D}))
    return Fallback::unsupported_shape;
  if (mask && mask->defined()) {
    const at::Tensor& m = *mask;
    if (!m.device().is_cpu() || m.layout() != at::kStrided || m.is_nested() || !mask_type)
      return Fallback::unsupported_shape;
    const int64_t B = x.size(0), T = x.size(1);
    const bool shaped = (*mask_type == 0 && sized(m, {T, T})) ||
                        (*mask_type == 1 && sized(m, {B, T})) ||
                        (*mask_type == 2 && sized(m, {B, num_heads, T, T}));
    if (!shaped) return Fallback::unsupported_shape;
  }
  return Fallback::none;
}

// How the products and the activation of one composed call run: through the dispatcher
// (calibration, int8 mode, fusion off), or on the product kernels directly in the precision
// the linear and matmul ops have in this mode, counted on those ops as the dispatcher would.
// Called directly, the ops between the products (layer_norm, softmax, the adds) skip the
// shim's keys while the Parts live: they are stock's either way.
class Parts {
 public:
  enum class Activation { none, relu, gelu };
  // Who reads a product's result: the program's ops (fp32), or only the next product, a
  // linear or a matmul, which takes it in BF16 when both products run in BF16.
  enum class Reader { program, linear, matmul };

  Parts()
      : direct_(!int8::tracking() && fusion::enabled()),
        int8_folds_(int8::quantising() && fusion::enabled()),  // never with direct_
        calibrating_(int8::calibrating()),
        linear_(lower_precision(Intercept<at::_ops::linear>::stats())),
        matmul_(lower_precision(Intercept<at::_ops::matmul>::stats())) {
    if (direct_) stock_between_.emplace(shim_keys());
  }

  // x W^T + b, then the activation.
  at::Tensor linear(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias,
                    Activation activation = Activation::none,
                    Reader reader = Reader::program) const {
    if (!direct_) {
      at::Tensor y = at::linear(x, weight, bias);
      if (activation == Activation::relu) return at::relu(y);
      if (activation == Activation::gelu) return at::gelu(y);
      return y;
    }
    const MatmulActivation fused = activation == Activation::relu   ? MatmulActivation::relu
                                   : activation == Activation::gelu ? MatmulActivation::gelu_erf
                                                                    : MatmulActivation::none;
    at::Tensor y = linear_forward(x, weight, bias, linear_, fused, nullptr,
                                  bf16_between(linear_, reader));
    count_kernel<at::_ops::linear>(path_for(linear_));
    if (activation == Activation::relu) Intercept<at::_ops::relu>::stats().count(Path::fused);
    if (activation == Activation::gelu) Intercept<at::_ops::gelu>::stats().count(Path::fused);
    return y;
  }

  // scale * (a b), a and b strided views.
  at::Tensor matmul(const at::Tensor& a, const at::Tensor& b, double scale = 1.0,
                    Reader reader = Reader::program) const {
    if (int8_folds_ && scale != 1.0)
      return matmul_after_first_step(
          a, b, {static_cast<float>(scale), false, [&] { a.mul_(scale); }});
    if (!direct_) return at::matmul(scale == 1.0 ? a : a.mul_(scale), b);
    at::Tensor c = batched_matmul(a, b, matmul_, static_cast<float>(scale), at::Tensor(),
                                  bf16_between(matmul_, reader));
    count_kernel<at::_ops::matmul>(path_for(matmul_));
    return c;
  }

  // softmax over the last dimension of the scores, which the caller owns, on oneDNN's
  // kernel: into a new BF16 tensor when a BF16 product reads it next, else in place. In
  // place, the probabilities are the tensor the score product made, which is how int8 mode
  // knows the next matmul's INT8 entry (by who made its operands), as calibration saw it.
  // Calibration runs stock's, whose arithmetic it observes.
  at::Tensor softmax(at::Tensor scores, Reader reader) const {
    if (calibrating_ || !softmax_last_dim_supported(scores)) {
      at::_softmax_out(scores, scores, scores.dim() - 1, false);
      return scores;
    }
    const bool bf16 = direct_ && bf16_between(matmul_, reader);
    return softmax_last_dim(scores, bf16, !bf16);
  }

  // softmax(scores) v, for probabilities only that product reads. In int8 mode (fusion on)
  // the softmax writes the product's u8 input itself where its entry is INT8.
  at::Tensor probabilities_times(at::Tensor scores, const at::Tensor& v) const {
    if (int8_folds_)
      return matmul_after_first_step(scores, v,
                                     {1.f, true, [&] { softmax(scores, Reader::matmul); }});
    return matmul(softmax(std::move(scores), Reader::matmul), v, 1.0, Reader::linear);
  }

 private:
  bool bf16_between(Precision producer, Reader reader) const {
    const Precision consumer = reader == Reader::linear   ? linear_
                               : reader == Reader::matmul ? matmul_
                                                          : Precision::fp32;
    return producer == Precision::bf16 && consumer == Precision::bf16;
  }

  bool direct_, int8_folds_, calibrating_;
  Precision linear_, matmul_;
  std::optional<c10::impl::ExcludeDispatchKeyGuard> stock_between_;
};

// Self-attention of x (B, T, D). Returns the projected output and, in
// `weights`, the attention probabilities when asked (averaged over heads, or per head).
at::Tensor self_attention(const Parts& parts, const at::Tensor& x, int64_t embed_dim,
                          int64_t num_heads,
                          const at::Tensor& qkv_weight, const at::Tensor& qkv_bias,
                          const at::Tensor& proj_weight, const at::Tensor& proj_bias,
                          const c10::optional<at::Tensor>& mask, c10::optional<int64_t> mask_type,
                          bool need_weights, bool average_weights, at::Tensor* weights) {
  const int64_t B = x.size(0), T = x.size(1), D = embed_dim, H = num_heads, head = D / H;
  // (B, T, 3, H, head): q, k and v are strided views of the one projection; the matmul
  // kernels read them in place.
  at::Tensor qkv = parts.linear(x, qkv_weight, qkv_bias, Parts::Activation::none,
                                Parts::Reader::matmul)
                       .reshape({B, T, 3, H, head});
  at::Tensor q = qkv.select(2, 0).permute({0, 2, 1, 3});   // (B, H, T, head)
  at::Tensor k_t = qkv.select(2, 1).permute({0, 2, 3, 1});  // (B, H, head, T)
  at::Tensor v = qkv.select(2, 2).permute({0, 2, 1, 3});   // (B, H, T, head)
  // q / sqrt(head) (in place on our own buffer where the dispatcher's matmul takes it, in
  // q's quantisation where int8 mode folds it).
  at::Tensor scores = parts.matmul(q, k_t, 1.0 / std::sqrt(static_cast<double>(head)));
  if (mask && mask->defined()) {
    // The mask as one bool per score (true: left out), which stock's masked softmax takes
    // on every release (torch 1.13's takes no other form).
    at::Tensor full = mask->scalar_type() == at::kBool ? *mask : mask->to(at::kBool);
    if (*mask_type == 0) full = full.view({1, 1, T, T});
    if (*mask_type == 1) full = full.view({B, 1, 1, T});
    scores = at::_masked_softmax(scores, full.expand({B, H, T, T}), 3, 2);
  } else if (need_weights) {
    // Probabilities read by the program stay fp32.
    scores = parts.softmax(scores, Parts::Reader::program);
  }
  const bool probabilities_made = (mask && mask->defined()) || need_weights;
  at::Tensor context = probabilities_made  // (B, H, T, head)
                           ? parts.matmul(scores, v, 1.0, Parts::Reader::linear)
                           : parts.probabilities_times(scores, v);
  at::Tensor merged = context.transpose(1, 2).reshape({B, T, D});
  at::Tensor output = parts.linear(merged, proj_weight, proj_bias);
  if (need_weights) *weights = average_weights ? scores.sum(1).div_(H) : scores;
  return output;
}

at::Tensor norm(const at::Tensor& x, int64_t embed_dim, double eps, const at::Tensor& weight,
                const at::Tensor& bias) {
  return at::layer_norm(x, {embed_dim}, weight, bias, eps);
}

// A kernel error in a part is said once and answered by stock; the parts write only tensors
// made here, so stock starts from the program's own inputs.
template <class Op, class Parts, class Stock>
auto compose_or_stock(Fallback why, Parts parts, Stock stock) -> decltype(stock()) {
  if (why == Fallback::none) {
    try {
      auto result = parts();
      Intercept<Op>::stats().count(Path::composed);
      return result;
    } catch (const std::exception& error) {
      report_kernel_error(op_display_name<Op>(), error);
      why = Fallback::kernel_error;
    }
  }
  Intercept<Op>::stats().count(Path::stock, why);
  return stock();
}

}  // namespace

std::tuple<at::Tensor, at::Tensor> native_multi_head_attention_override(
    const at::Tensor& query, const at::Tensor& key, const at::Tensor& value, int64_t embed_dim,
    int64_t num_heads, const at::Tensor& qkv_weight, const at::Tensor& qkv_bias,
    const at::Tensor& proj_weight, const at::Tensor& proj_bias,
    const c10::optional<at::Tensor>& mask, bool need_weights, bool average_attn_weights,
    c10::optional<int64_t> mask_type) {
  Fallback why = composition_gate();
  if (why == Fallback::none && needs_grad(query, qkv_weight, qkv_bias, proj_weight, proj_bias))
    why = Fallback::needs_grad;
  if (why == Fallback::none)
    why = attention_support(query, key, value, embed_dim, num_heads, qkv_weight, qkv_bias,
                            proj_weight, proj_bias, mask, mask_type);
  return compose_or_stock<Mha>(
      why,
      [&] {
        const Parts parts;
        at::Tensor weights;
        at::Tensor output =
            self_attention(parts, query, embed_dim, num_heads, qkv_weight, qkv_bias, proj_weight,
                           proj_bias, mask, mask_type, need_weights, average_attn_weights, &weights);
        return std::make_tuple(output, weights);
      },
      [&] {
        return Intercept<Mha>::stock(query, key, value, embed_dim, num_heads, qkv_weight, qkv_bias,
                                     proj_weight, proj_bias, mask, need_weights,
                                     average_attn_weights, mask_type);
      });
}

at::Tensor transformer_encoder_layer_override(
    const at::Tensor& src, int64_t embed_dim, int64_t num_heads, const at::Tensor& qkv_weight,
    const at::Tensor& qkv_bias, const at::Tensor& proj_weight, const at::Tensor& proj_bias,
    bool use_gelu, bool norm_first, double eps, const at::Tensor& norm_weight_1,
    const at::Tensor& norm_bias_1, const at::Tensor& norm_weight_2, const at::Tensor& norm_bias_2,
    const at::Tensor& ffn_weight_1, const at::Tensor& ffn_bias_1, const at::Tensor& ffn_weight_2,
    const at::Tensor& ffn_bias_2, const c10::optional<at::Tensor>& mask,
    c10::optional<int64_t> mask_type) {
  Fallback why = composition_gate();
  if (why == Fallback::none &&
      needs_grad(src, qkv_weight, qkv_bias, proj_weight, proj_bias, norm_weight_1, norm_bias_1,
                 norm_weight_2, norm_bias_2, ffn_weight_1, ffn_bias_1, ffn_weight_2, ffn_bias_2))
    why = Fallback::needs_grad;
  if (why == Fallback::none)
    why = attention_support(src, src, src, embed_dim, num_heads, qkv_weight, qkv_bias,
                            proj_weight, proj_bias, mask, mask_type);
  if (why == Fallback::none) {
    const int64_t D = embed_dim;
    for (const at::Tensor* t : {&norm_weight_1, &norm_bias_1, &norm_weight_2, &norm_bias_2,
                                &ffn_weight_1, &ffn_bias_1, &ffn_weight_2, &ffn_bias_2})
      if (!plain_float(*t)) why = Fallback::unsupported_dtype;
    if (why == Fallback::none) {
      const int64_t hidden = ffn_weight_1.dim() == 2 ? ffn_weight_1.size(0) : -1;
      const bool shaped = sized(norm_weight_1, {D}) && sized(norm_bias_1, {D}) &&
                          sized(norm_weight_2, {D}) && sized(norm_bias_2, {D}) && hidden > 0 &&
                          sized(ffn_weight_1, {hidden, D}) && sized(ffn_bias_1, {hidden}) &&
                          sized(ffn_weight_2, {D, hidden}) && sized(ffn_bias_2, {D});
      if (!shaped) why = Fallback::unsupported_shape;
    }
  }
  return compose_or_stock<EncoderLayer>(
      why,
      [&] {
        const Parts parts;
        at::Tensor x = norm_first ? norm(src, embed_dim, eps, norm_weight_1, norm_bias_1) : src;
        x = self_attention(parts, x, embed_dim, num_heads, qkv_weight, qkv_bias, proj_weight,
                           proj_bias, mask, mask_type, false, true, nullptr);
        x.add_(src);
        if (!norm_first) x = norm(x, embed_dim, eps, norm_weight_1, norm_bias_1);
        const at::Tensor residual = x;
        if (norm_first) x = norm(x, embed_dim, eps, norm_weight_2, norm_bias_2);
        x = parts.linear(x, ffn_weight_1, ffn_bias_1,
                         use_gelu ? Parts::Activation::gelu : Parts::Activation::relu,
                         Parts::Reader::linear);
        x = parts.linear(x, ffn_weight_2, ffn_bias_2);
        x.add_(residual);
        if (!norm_first) x = norm(x, embed_dim, eps, norm_weight_2, norm_bias_2);
        return x;
      },
      [&] {
        return Intercept<EncoderLayer>::stock(
            src, embed_dim, num_heads, qkv_weight, qkv_bias, proj_weight, proj_bias, use_gelu,
            norm_first, eps, norm_weight_1, norm_bias_1, norm_weight_2, norm_bias_2, ffn_weight_1,
            ffn_bias_1, ffn_weight_2, ffn_bias_2, mask, mask_type);
      });
}

at::Tensor softmax_override(const at::Tensor& self, int64_t dim,
                            c10::optional<at::ScalarType> dtype) {
  using Op = at::_ops::softmax_int;
  Fallback why = float_kernel_gate();
  if (why == Fallback::none && needs_grad(self)) why = Fallback::needs_grad;
  if (why == Fallback::none && ((dtype && *dtype != at::kFloat) || !plain_float(self) ||
                                self.dim() == 0))
    why = Fallback::unsupported_dtype;
  // The last dimension, as -1 or ndim - 1 (an index out of range gets stock's error).
  if (why == Fallback::none &&
      (!softmax_last_dim_supported(self) || (dim != -1 && dim != self.dim() - 1)))
    why = Fallback::unsupported_shape;
  if (why == Fallback::none) {
    try {
      c10::impl::ExcludeDispatchKeyGuard guard(shim_keys());
      at::Tensor output = softmax_last_dim(self, false);
      Intercept<Op>::stats().count(Path::onednn_fp32);
      return output;
    } catch (const std::exception& error) {
      report_kernel_error(op_display_name<Op>(), error);
      why = Fallback::kernel_error;
    }
  }
  return Intercept<Op>::stock_because(why, self, dim, dtype);
}

}  // namespace ipex_shim
