// oneDNN matmul, read top to bottom: descriptors (weights `any` when they are packed once,
// strided views otherwise), primitive from the cache, reorders only where precision or
// layout differ, an argument map, execute.
#include "kernels/buffer_pool.h"
#include "kernels/matmul.h"

#include <ATen/TensorOperators.h>
#include <ATen/ops/empty.h>

#include <stdexcept>

#include "kernels/onednn_compat.h"
#include "kernels/primitive_cache.h"
#include "kernels/weight_cache.h"

namespace ipex_shim {
namespace {

using tag = dnnl::memory::format_tag;
using dt = dnnl::memory::data_type;

struct MatmulPrimitive {
  explicit MatmulPrimitive(const dnnl::matmul::primitive_desc& made)
      : pd(made),
        primitive(made),
        src(made.src_desc()),
        weights(made.weights_desc()),
        bias(made.bias_desc()),
        dst(made.dst_desc()),
        scratchpad(made.scratchpad_desc()) {}
  dnnl::matmul::primitive_desc pd;
  dnnl::matmul primitive;
  // Its descriptors, queried once (each query copies one).
  dnnl::memory::desc src, weights, bias, dst, scratchpad;
};

// `result_scale`: the INT8 scale the result is written in (0: values). relu reads the same in
// quantised units; gelu does not, and goes through the scale-sensitive post-ops.
dnnl::primitive_attr attr_for(MatmulActivation activation, float alpha, float result_scale = 0.f) {
  dnnl::primitive_attr attr = base_attr();
  onednn::set_result_scale(attr, alpha);
  if (activation != MatmulActivation::none) {
    dnnl::post_ops ops;
    if (activation == MatmulActivation::relu) {
      onednn::append_eltwise(ops, dnnl::algorithm::eltwise_relu, 0.f, 0.f);
    } else {
      onednn::append_scale_sensitive(ops,
                                     activation == MatmulActivation::gelu_erf
                                         ? onednn::ScaleSensitiveActivation::gelu_erf
                                         : onednn::ScaleSensitiveActivation::gelu_tanh,
                                     result_scale);
    }
    attr.set_post_ops(ops);
  }
  return attr;
}

// The same tensor in `precision`; a no-op where it is in it already (fp32, or a BF16 result
// handed on). Strides are preserved, so a transposed view stays a transposed view and oneDNN
// reads it as such.
at::Tensor in_precision(const at::Tensor& tensor, Precision precision) {
  return tensor.to(precision == Precision::fp32 ? at::kFloat : at::kBFloat16);
}

// What a product writes: fp32, or BF16 for a result handed to the next BF16 product.
dt result_type(Precision precision, bool bf16_result) {
  if (bf16_result && precision != Precision::bf16)
    throw std::invalid_argument("a BF16 result needs a BF16 product");
  return bf16_result ? dt::bf16 : dt::f32;
}

}  // namespace

Fallback linear_support(const at::Tensor& input, const at::Tensor& weight,
                        const c10::optional<at::Tensor>& bias) {
  if (!plain_float_cpu(input) || !plain_float_cpu(weight)) return Fallback::unsupported_dtype;
  if (bias && bias->defined() && !plain_float_cpu(*bias)) return Fallback::unsupported_dtype;
  if (weight.dim() != 2 || input.dim() < 1 || input.size(-1) != weight.size(1))
    return Fallback::unsupported_shape;  // stock raises the proper error
  if (bias && bias->defined() && (bias->dim() != 1 || bias->size(0) != weight.size(0)))
    return Fallback::unsupported_shape;
  if (input.numel() == 0 || weight.numel() == 0) return Fallback::unsupported_shape;
  return Fallback::none;
}

at::Tensor linear_forward(const at::Tensor& input, const at::Tensor& weight,
                          const c10::optional<at::Tensor>& bias, Precision precision,
                          MatmulActivation activation, const Int8Spec* int8,
                          bool bf16_result, const LinearHandoff& handoff) {
  static PrimitiveCache<MatmulPrimitive>* primitives = new PrimitiveCache<MatmulPrimitive>();
  const int64_t in_features = weight.size(1);
  const int64_t out_features = weight.size(0);
  const bool has_bias = bias && bias->defined();
  const bool handed_in = handoff.input_layout != nullptr;
  // The result kept for the next linear: INT8 in its scale, or BF16 bytes in the fp32 tensor.
  const float kept_scale = int8 && handoff.keep_result ? int8->output_scale : 0.f;
  const bool keep_bf16 = !int8 && handoff.keep_result && precision == Precision::bf16;
  if (handoff.keep_result && bf16_result)
    throw std::invalid_argument("a linear's result is kept in the program's tensor or returned "
                                "as BF16, not both");

  // src: x viewed as (M, K), in the compute precision (INT8: quantised below). Handed-over
  // bytes are read where they lie: the view only, no op that would read them as values.
  at::Tensor src_tensor = input.reshape({-1, in_features});
  if (!handed_in) {
    src_tensor = src_tensor.contiguous();
    if (!int8) src_tensor = in_precision(src_tensor, precision);
  } else {
    const dt expected = int8 ? activation_type(int8->input_uint8) : dt::bf16;
    const dnnl::memory::desc plain({src_tensor.size(0), in_features}, expected, tag::ab);
    if (!src_tensor.is_contiguous() || *handoff.input_layout != plain ||
        (!int8 && precision != Precision::bf16) ||
        (int8 && handoff.input_scale != int8->input_scale))
      throw std::invalid_argument("a handed-over linear input is not in the layout, type or "
                                  "scale this linear reads");
  }
  const int64_t rows = src_tensor.size(0);

  KeyBuilder shape_key;
  shape_key.add(rows).add(in_features).add(out_features).add(has_bias).add(precision);
  const dt output_type = kept_scale > 0.f ? activation_type(int8->output_uint8)
                         : keep_bf16      ? dt::bf16
                                          : result_type(int8 ? Precision::fp32 : precision,
                                                        bf16_result);
  shape_key.add(activation).add(int8 != nullptr).add(bf16_result).add(output_type);
  if (int8) shape_key.add(int8->input_uint8);
  std::string key = shape_key.take();
  // INT8 scales: the weights' are known once they are packed (empty before: the layout query).
  auto int8_scales = [&](const at::Tensor& weight_scales) {
    onednn::ProductScales scales;
    scales.src = int8->input_scale;
    if (weight_scales.defined()) {
      const float* values = weight_scales.data_ptr<float>();
      scales.weights.assign(values, values + weight_scales.numel());
    }
    scales.weights_mask = 1 << 1;  // W^T is (K, N): output channels along dimension 1
    scales.dst = kept_scale;
    return scales;
  };
  auto make = [&](const onednn::ProductScales* scales) {
    const dt src_type = int8 ? activation_type(int8->input_uint8) : to_dnnl(precision);
    const dt weights_type = int8 ? dt::s8 : to_dnnl(precision);
    auto src_md = dnnl::memory::desc({rows, in_features}, src_type, tag::ab);
    auto weights_md = dnnl::memory::desc({in_features, out_features}, weights_type, tag::any);
    auto bias_md = dnnl::memory::desc({1, out_features}, dt::f32, tag::ab);
    auto dst_md = dnnl::memory::desc({rows, out_features}, output_type, tag::ab);
    dnnl::primitive_attr attr = attr_for(activation, 1.f, kept_scale);
    if (scales) onednn::set_product_scales(attr, *scales);
    auto pd = onednn::matmul_primitive_desc(src_md, weights_md, has_bias ? &bias_md : nullptr,
                                            dst_md, attr);
    return MatmulPrimitive(pd);
  };

  // weights: W^T (K, N) is W read with swapped strides; packed once per layout. INT8: the
  // layout comes from a primitive without scales, the scales from the packed weights (where
  // the primitive takes them at execution, that primitive is the one that runs).
  static PrimitiveCache<MatmulPrimitive>* layouts = new PrimitiveCache<MatmulPrimitive>();
  std::shared_ptr<const MatmulPrimitive> matmul;
  if (int8) {
    matmul = layouts->get(key, [&] {
      const onednn::ProductScales unknown = int8_scales(at::Tensor());
      return make(&unknown);
    });
  } else {
    matmul = primitives->get(key, [&] { return make(nullptr); });
  }
  const dnnl::memory::desc weights_desc = matmul->weights;
  KeyBuilder variant;
  variant.add(weights_desc);
  std::vector<at::Tensor> depends_on;
  if (int8) {
    variant.add(int8->input_scale).add(int8->weight_per_channel);
    if (has_bias) depends_on.push_back(*bias);
  }
  PackedWeight packed = weight_cache().get(weight, variant.take(), depends_on, [&] {
    dnnl::memory::desc user({in_features, out_features}, dt::f32,
                            {weight.stride(1), weight.stride(0)});
    if (!int8) {
      Reordered out = reorder_to(wrap(weight, user), weights_desc);
      return PackedWeight{out.storage, out.memory, at::Tensor(), at::Tensor(), dnnl::memory()};
    }
    at::Tensor scales = weight_scales(weight, int8->weight_per_channel);
    const onednn::ProductScales quantised = int8_scales(scales);
    // q_w = round(w * scale[n]), into a plain s8 matrix first, then packed: oneDNN has no
    // single reorder from a transposed f32 view to the packed s8 layout with compensation
    // (s8 sources need it).
    Reordered plain = allocate(dnnl::memory::desc({in_features, out_features}, dt::s8, tag::ab));
    onednn::ScaledReorder(user, plain.memory.get_desc(), quantised.weights,
                          quantised.weights_mask)
        .execute(thread_stream(), wrap(weight, user), plain.memory);
    Reordered out = allocate(weights_desc);
    dnnl::reorder(plain.memory, out.memory).execute(thread_stream(), plain.memory, out.memory);
    thread_stream().wait();
    at::Tensor int8_bias;
    if (has_bias) int8_bias = onednn::int8_bias(*bias, int8->input_scale, scales);
    return PackedWeight{out.storage, out.memory, int8_bias, scales,
                        onednn::weight_scales_argument(quantised.weights)};
  });

  Reordered quantised;
  if (int8) {
    if (onednn::primitive_keeps_product_scales()) {
      const onednn::ProductScales scales = int8_scales(packed.scales);
      KeyBuilder kept;
      kept.add_range(onednn::product_scales_kept(scales));
      matmul = primitives->get(key + kept.take(), [&] { return make(&scales); });
      if (matmul->weights != weights_desc)
        throw std::runtime_error("INT8 linear: weights layout differs with scales");
    }
    if (handed_in) {
      quantised.memory = wrap(src_tensor, matmul->src);
    } else {
      quantised = allocate(matmul->src);
      const dnnl::memory::desc from_desc = strided_desc(src_tensor);
      dnnl::memory from = wrap(src_tensor, from_desc);
      cached_scaled_reorder(from_desc, matmul->src, int8->input_scale)
          ->execute(thread_stream(), from, quantised.memory);
    }
  }

  std::vector<int64_t> output_sizes = input.sizes().vec();
  output_sizes.back() = out_features;
  // A kept result's bytes (8 or 16 bits a value) fit in the fp32 tensor the program gets.
  at::Tensor output = pooled_empty(output_sizes, bf16_result ? at::kBFloat16 : at::kFloat);
  if (handoff.keep_result && handoff.kept != nullptr)
    *handoff.kept = kept_scale > 0.f || keep_bf16 ? matmul->dst : dnnl::memory::desc();

  onednn::Arguments arguments = {
      {DNNL_ARG_SRC, int8 ? quantised.memory : wrap(src_tensor, matmul->src)},
      {DNNL_ARG_WEIGHTS, packed.memory},
      {DNNL_ARG_DST, wrap(output, matmul->dst)}};
  if (int8) {
    arguments.merge(onednn::product_scale_arguments(int8->input_scale, packed.scales_argument,
                                                    kept_scale));
  }
  at::Tensor bias_contiguous;
  if (has_bias) {
    bias_contiguous = int8 ? packed.bias : bias->contiguous();
    arguments.emplace(DNNL_ARG_BIAS, wrap(bias_contiguous, matmul->bias));
  }
  execute(matmul->primitive, matmul->scratchpad, std::move(arguments));
  return output;
}

Fallback batched_matmul_support(const at::Tensor& a, const at::Tensor& b) {
  if (!plain_float_cpu(a) || !plain_float_cpu(b)) return Fallback::unsupported_dtype;
  if (a.dim() < 2 || a.dim() != b.dim() || a.dim() > 6) return Fallback::unsupported_shape;
  if (a.size(-1) != b.size(-2)) return Fallback::unsupported_shape;  // stock raises
  for (int64_t d = 0; d < a.dim() - 2; ++d) {
    if (a.size(d) != b.size(d) && a.size(d) != 1 && b.size(d) != 1)
      return Fallback::unsupported_shape;
  }
  if (a.numel() == 0 || b.numel() == 0) return Fallback::unsupported_shape;
  // oneDNN needs each matrix to have a unit stride in one of its two dimensions.
  for (const at::Tensor* t : {&a, &b}) {
    if (t->stride(-1) != 1 && t->stride(-2) != 1) return Fallback::unsupported_shape;
  }
  return Fallback::none;
}

at::Tensor batched_matmul(const at::Tensor& a, const at::Tensor& b, Precision precision,
                          float alpha, const at::Tensor& bias, bool bf16_result) {
  static PrimitiveCache<MatmulPrimitive>* primitives = new PrimitiveCache<MatmulPrimitive>();
  result_type(precision, bf16_result);
  at::Tensor src_tensor = in_precision(a, precision);
  at::Tensor weights_tensor = in_precision(b, precision);
  // Broadcast batch dimensions of size 1 by stride 0, which oneDNN reads as a repeat.
  std::vector<int64_t> output_sizes;
  for (int64_t d = 0; d < a.dim() - 2; ++d) output_sizes.push_back(std::max(a.size(d), b.size(d)));
  output_sizes.push_back(a.size(-2));
  output_sizes.push_back(b.size(-1));
  at::Tensor output = pooled_empty(output_sizes, bf16_result ? at::kBFloat16 : at::kFloat);

  at::Tensor bias_tensor;
  if (bias.defined()) {
    bias_tensor = bias.scalar_type() == at::kFloat ? bias : bias.to(at::kFloat);
    // Give the bias the output's rank with leading 1s: oneDNN broadcasts size-1 dims.
    std::vector<int64_t> bias_sizes(output_sizes.size() - bias_tensor.dim(), 1);
    for (int64_t s : bias_tensor.sizes()) bias_sizes.push_back(s);
    bias_tensor = bias_tensor.reshape(bias_sizes).contiguous();
    // oneDNN scales (A B + bias) as a whole; addmm scales only the product.
    if (alpha != 1.f) bias_tensor = bias_tensor.mul(1.0 / alpha);
  }

  auto src_md = strided_desc(src_tensor);
  auto weights_md = strided_desc(weights_tensor);
  auto dst_md = strided_desc(output);
  KeyBuilder key;
  key.add(src_md).add(weights_md).add(dst_md).add(precision).add(alpha).add(bias.defined());
  dnnl::memory::desc bias_md;
  if (bias.defined()) {
    bias_md = strided_desc(bias_tensor);
    key.add(bias_md);
  }
  auto matmul = primitives->get(key.take(), [&] {
    auto pd = onednn::matmul_primitive_desc(src_md, weights_md,
                                            bias.defined() ? &bias_md : nullptr, dst_md,
                                            attr_for(MatmulActivation::none, alpha));
    return MatmulPrimitive(pd);
  });

  onednn::Arguments arguments = onednn::result_scale_arguments(alpha);
  arguments.emplace(DNNL_ARG_SRC, wrap(src_tensor, src_md));
  arguments.emplace(DNNL_ARG_WEIGHTS, wrap(weights_tensor, weights_md));
  arguments.emplace(DNNL_ARG_DST, wrap(output, dst_md));
  if (bias.defined()) arguments.emplace(DNNL_ARG_BIAS, wrap(bias_tensor, bias_md));
  execute(matmul->primitive, matmul->scratchpad, std::move(arguments));
  return output;
}

namespace {

// A copy of `tensor` quantised with `scale` into a contiguous s8/u8 tensor.
at::Tensor quantise(const at::Tensor& tensor, float scale, bool uint8) {
  at::Tensor out = pooled_empty(tensor.sizes(), uint8 ? at::kByte : at::kChar);
  dnnl::memory from = wrap(tensor, strided_desc(tensor));
  dnnl::memory to = wrap(out, strided_desc(out));
  cached_scaled_reorder(from.get_desc(), to.get_desc(), scale)
      ->execute(thread_stream(), from, to);
  thread_stream().wait();
  return out;
}

}  // namespace

at::Tensor batched_matmul_int8(const at::Tensor& a, const at::Tensor& b,
                               const Int8MatmulSpec& spec, float a_factor) {
  static PrimitiveCache<MatmulPrimitive>* primitives = new PrimitiveCache<MatmulPrimitive>();
  const bool a_quantised = a.scalar_type() == at::kByte || a.scalar_type() == at::kChar;
  if (a_quantised && (a_factor != 1.f || (a.scalar_type() == at::kByte) != spec.a_uint8))
    throw std::invalid_argument("INT8 matmul: A's bytes are not in the spec's type");
  at::Tensor qa = a_quantised ? a : quantise(a, spec.a_scale * a_factor, spec.a_uint8);
  // B takes the weights' place: within int8_weight_bound() (spec.b_scale maps B's calibrated
  // range onto 127), values beyond the calibrated range clipped there too.
  const int bound = int8_weight_bound();
  const float b_scale = spec.b_scale * static_cast<float>(bound) / 127.f;
  at::Tensor qb = quantise(b, b_scale, false);
  // Symmetric at every bound: the reorder saturates at -128, one step past -127.
  qb.clamp_(-bound, bound);
  std::vector<int64_t> output_sizes;
  for (int64_t d = 0; d < a.dim() - 2; ++d) output_sizes.push_back(std::max(a.size(d), b.size(d)));
  output_sizes.push_back(a.size(-2));
  output_sizes.push_back(b.size(-1));
  at::Tensor output = pooled_empty(output_sizes, at::kFloat);
  // Batch dimensions of size 1 broadcast (oneDNN's matmul repeats them).
  auto src_md = strided_desc(qa);
  auto weights_md = strided_desc(qb);
  auto dst_md = strided_desc(output);
  // One scale each for A (src) and B (weights); an fp32 result.
  onednn::ProductScales scales;
  scales.src = spec.a_scale;
  scales.weights = {b_scale};
  KeyBuilder key;
  key.add(src_md).add(weights_md).add(dst_md).add_range(onednn::product_scales_kept(scales));
  auto matmul = primitives->get(key.take(), [&] {
    dnnl::primitive_attr attr = base_attr();
    onednn::set_product_scales(attr, scales);
    auto pd = onednn::matmul_primitive_desc(src_md, weights_md, nullptr, dst_md, attr);
    return MatmulPrimitive(pd);
  });
  onednn::Arguments arguments = onednn::product_scale_arguments(scales);
  arguments.emplace(DNNL_ARG_SRC, wrap(qa, src_md));
  arguments.emplace(DNNL_ARG_WEIGHTS, wrap(qb, weights_md));
  arguments.emplace(DNNL_ARG_DST, wrap(output, dst_md));
  execute(matmul->primitive, matmul->scratchpad, std::move(arguments));
  return output;
}

}  // namespace ipex_shim
