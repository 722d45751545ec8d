#include "kernels/onednn_compat.h"

#include <ATen/TensorOperators.h>

#include <algorithm>
#include <cstring>
#include <mutex>
#include <stdexcept>
#include <unordered_map>

#include "kernels/onednn_context.h"

namespace ipex_shim::onednn {
namespace {

using dt = dnnl::memory::data_type;

#if DNNL_VERSION_MAJOR >= 3

// An f32 memory holding `values`, for a scale argument.
dnnl::memory scale_memory(const std::vector<float>& values) {
  const auto count = static_cast<dnnl::memory::dim>(values.size());
  dnnl::memory memory({{count}, dt::f32, dnnl::memory::format_tag::a}, cpu_engine());
  std::copy(values.begin(), values.end(), static_cast<float*>(memory.get_data_handle()));
  return memory;
}

// oneDNN 3 takes dequantisation factors (x = factor * q): the inverse of the shim's scales.
std::vector<float> inverses(const std::vector<float>& scales) {
  std::vector<float> factors;
  factors.reserve(scales.size());
  for (float scale : scales) factors.push_back(1.f / scale);
  return factors;
}

// A one-value scale memory holding `factor`, made once per value and thread: a program's
// sites use a fixed set of scales, and each call would otherwise allocate one. Per thread,
// so no lock; a primitive only reads it, and one call at a time per thread uses it.
dnnl::memory factor_memory(float factor) {
  thread_local std::unordered_map<uint32_t, dnnl::memory> made;
  uint32_t bits;
  std::memcpy(&bits, &factor, sizeof bits);
  auto it = made.find(bits);
  if (it != made.end()) return it->second;
  if (made.size() >= 4096) made.clear();  // bounds a stream of new scales (recalibration)
  return made.emplace(bits, scale_memory({factor})).first->second;
}

// The format tag whose layout `desc` is (in its own data type), found by trying each tag:
// oneDNN 3 builds blocked layouts only from tags. Each layout is searched for once.
dnnl::memory::format_tag format_tag_of(const dnnl::memory::desc& desc) {
  static std::mutex mutex;
  static auto* found = new std::unordered_map<std::string, dnnl::memory::format_tag>();
  std::string key;
  append_key(&key, desc);
  {
    std::lock_guard<std::mutex> lock(mutex);
    if (auto it = found->find(key); it != found->end()) return it->second;
  }
  const dnnl::memory::dims dims = desc.get_dims();
  auto tag = dnnl::memory::format_tag::undef;
  for (int candidate = dnnl_a; candidate < dnnl_format_tag_last; ++candidate) {
    dnnl_memory_desc_t made = nullptr;
    if (dnnl_memory_desc_create_with_tag(&made, static_cast<int>(dims.size()), dims.data(),
                                         static_cast<dnnl_data_type_t>(desc.get_data_type()),
                                         static_cast<dnnl_format_tag_t>(candidate)) !=
        dnnl_success)
      continue;  // a tag of another rank
    const bool same = dnnl_memory_desc_equal(made, desc.get()) != 0;
    dnnl_memory_desc_destroy(made);
    if (same) {
      tag = static_cast<dnnl::memory::format_tag>(candidate);
      break;
    }
  }
  if (tag == dnnl::memory::format_tag::undef)
    throw std::runtime_error("oneDNN: no format tag describes this blocked layout");
  std::lock_guard<std::mutex> lock(mutex);
  found->emplace(key, tag);
  return tag;
}

#else

// oneDNN 2's output scales for a product: result / (src * weights[oc]) per output channel
// (result 1: fp32 values), a single value when they all agree.
std::vector<float> output_multipliers(const ProductScales& scales) {
  const float result_scale = scales.dst > 0.f ? scales.dst : 1.f;
  std::vector<float> multipliers;
  bool uniform = true;
  for (float weight_scale : scales.weights) {
    multipliers.push_back(result_scale / (scales.src * weight_scale));
    uniform = uniform && multipliers.back() == multipliers.front();
  }
  if (uniform && !multipliers.empty()) multipliers.resize(1);
  return multipliers;
}

#endif

}  // namespace

// --- memory descriptors ---------------------------------------------------------------------

#if DNNL_VERSION_MAJOR >= 3

void append_key(std::string* key, const dnnl::memory::desc& desc) {
  // The opaque descriptor's serialised form (get_blob) copies a struct with uninitialised
  // padding, so the key is built from its answers instead. Extra buffers that a layout
  // carries (INT8 weights' compensation) show in its size.
  const auto add = [key](const auto& value) {
    key->append(reinterpret_cast<const char*>(&value), sizeof(value));
  };
  const auto add_dims = [&](const dnnl::memory::dims& dims) {
    add(dims.size());
    for (dnnl::memory::dim d : dims) add(d);
  };
  add(desc.get_data_type());
  add(desc.get_format_kind());
  add(desc.get_size());
  add(desc.get_submemory_offset());
  add_dims(desc.get_dims());
  add_dims(desc.get_padded_dims());
  add_dims(desc.get_padded_offsets());
  add_dims(desc.get_strides());
  add_dims(desc.get_inner_blks());
  add_dims(desc.get_inner_idxs());
}

dnnl::memory::desc with_data_type(const dnnl::memory::desc& desc, dt type) {
  if (desc.get_format_kind() == dnnl::memory::format_kind::blocked &&
      desc.get_inner_nblks() == 0)
    return dnnl::memory::desc(desc.get_dims(), type, desc.get_strides());
  return dnnl::memory::desc(desc.get_dims(), type, format_tag_of(desc));
}

#else

dnnl::memory::desc with_data_type(const dnnl::memory::desc& desc, dt type) {
  dnnl::memory::desc retyped = desc;
  retyped.data.data_type = static_cast<dnnl_data_type_t>(type);
  return retyped;
}

#endif

// --- primitive descriptors ------------------------------------------------------------------

#if DNNL_VERSION_MAJOR >= 3

// Convolution and deconvolution forward take the same arguments; Primitive is either.
template <class Primitive>
typename Primitive::primitive_desc windowed_forward(
    dnnl::algorithm algorithm, dnnl::prop_kind prop, const dnnl::memory::desc& src,
    const dnnl::memory::desc& weights, const dnnl::memory::desc* bias,
    const dnnl::memory::desc& dst, const ConvolutionWindow& window,
    const dnnl::primitive_attr& attr) {
  if (bias)
    return {cpu_engine(), prop, algorithm, src, weights, *bias, dst, window.strides,
            window.dilates, window.padding_l, window.padding_r, attr};
  return {cpu_engine(), prop, algorithm, src, weights, dst, window.strides,
          window.dilates, window.padding_l, window.padding_r, attr};
}

dnnl::convolution_backward_data::primitive_desc convolution_backward_data_primitive_desc(
    const dnnl::memory::desc& diff_src, const dnnl::memory::desc& weights,
    const dnnl::memory::desc& diff_dst, const ConvolutionWindow& window,
    const dnnl::convolution_forward::primitive_desc& forward, const dnnl::primitive_attr& attr) {
  return {cpu_engine(), dnnl::algorithm::convolution_direct, diff_src, weights, diff_dst,
          window.strides, window.dilates, window.padding_l, window.padding_r, forward, attr};
}

dnnl::convolution_backward_weights::primitive_desc convolution_backward_weights_primitive_desc(
    const dnnl::memory::desc& src, const dnnl::memory::desc& diff_weights,
    const dnnl::memory::desc* diff_bias, const dnnl::memory::desc& diff_dst,
    const ConvolutionWindow& window, const dnnl::convolution_forward::primitive_desc& forward,
    const dnnl::primitive_attr& attr) {
  const auto algorithm = dnnl::algorithm::convolution_direct;
  if (diff_bias)
    return {cpu_engine(), algorithm, src, diff_weights, *diff_bias, diff_dst, window.strides,
            window.dilates, window.padding_l, window.padding_r, forward, attr};
  return {cpu_engine(), algorithm, src, diff_weights, diff_dst, window.strides,
          window.dilates, window.padding_l, window.padding_r, forward, attr};
}

dnnl::matmul::primitive_desc matmul_primitive_desc(const dnnl::memory::desc& src,
                                                   const dnnl::memory::desc& weights,
                                                   const dnnl::memory::desc* bias,
                                                   const dnnl::memory::desc& dst,
                                                   const dnnl::primitive_attr& attr) {
  if (bias) return {cpu_engine(), src, weights, *bias, dst, attr};
  return {cpu_engine(), src, weights, dst, attr};
}

softmax_forward::primitive_desc softmax_forward_primitive_desc(const dnnl::memory::desc& src,
                                                               const dnnl::memory::desc& dst,
                                                               int axis,
                                                               const dnnl::primitive_attr& attr) {
  return {cpu_engine(), dnnl::prop_kind::forward_inference, dnnl::algorithm::softmax_accurate,
          src, dst, axis, attr};
}

pooling_forward::primitive_desc pooling_forward_primitive_desc(
    dnnl::prop_kind prop, dnnl::algorithm algorithm, const dnnl::memory::desc& src,
    const dnnl::memory::desc& dst, const PoolingWindow& window,
    const dnnl::primitive_attr& attr) {
  return {cpu_engine(), prop, algorithm, src, dst, window.strides, window.kernel,
          window.dilates, window.padding_l, window.padding_r, attr};
}

pooling_backward::primitive_desc pooling_backward_primitive_desc(
    dnnl::algorithm algorithm, const dnnl::memory::desc& diff_src,
    const dnnl::memory::desc& diff_dst, const PoolingWindow& window,
    const pooling_forward::primitive_desc& forward, const dnnl::primitive_attr& attr) {
  return {cpu_engine(), algorithm, diff_src, diff_dst, window.strides, window.kernel,
          window.dilates, window.padding_l, window.padding_r, forward, attr};
}

#else

// Convolution and deconvolution forward take the same arguments; Primitive is either.
template <class Primitive>
typename Primitive::primitive_desc windowed_forward(
    dnnl::algorithm algorithm, dnnl::prop_kind prop, const dnnl::memory::desc& src,
    const dnnl::memory::desc& weights, const dnnl::memory::desc* bias,
    const dnnl::memory::desc& dst, const ConvolutionWindow& window,
    const dnnl::primitive_attr& attr) {
  const auto desc =
      bias ? typename Primitive::desc(prop, algorithm, src, weights, *bias, dst, window.strides,
                                      window.dilates, window.padding_l, window.padding_r)
           : typename Primitive::desc(prop, algorithm, src, weights, dst, window.strides,
                                      window.dilates, window.padding_l, window.padding_r);
  return {desc, attr, cpu_engine()};
}

dnnl::convolution_backward_data::primitive_desc convolution_backward_data_primitive_desc(
    const dnnl::memory::desc& diff_src, const dnnl::memory::desc& weights,
    const dnnl::memory::desc& diff_dst, const ConvolutionWindow& window,
    const dnnl::convolution_forward::primitive_desc& forward, const dnnl::primitive_attr& attr) {
  const dnnl::convolution_backward_data::desc desc(
      dnnl::algorithm::convolution_direct, diff_src, weights, diff_dst, window.strides,
      window.dilates, window.padding_l, window.padding_r);
  return {desc, attr, cpu_engine(), forward};
}

dnnl::convolution_backward_weights::primitive_desc convolution_backward_weights_primitive_desc(
    const dnnl::memory::desc& src, const dnnl::memory::desc& diff_weights,
    const dnnl::memory::desc* diff_bias, const dnnl::memory::desc& diff_dst,
    const ConvolutionWindow& window, const dnnl::convolution_forward::primitive_desc& forward,
    const dnnl::primitive_attr& attr) {
  const auto algorithm = dnnl::algorithm::convolution_direct;
  const auto desc =
      diff_bias ? dnnl::convolution_backward_weights::desc(
                      algorithm, src, diff_weights, *diff_bias, diff_dst, window.strides,
                      window.dilates, window.padding_l, window.padding_r)
                : dnnl::convolution_backward_weights::desc(
                      algorithm, src, diff_weights, diff_dst, window.strides, window.dilates,
                      window.padding_l, window.padding_r);
  return {desc, attr, cpu_engine(), forward};
}

dnnl::matmul::primitive_desc matmul_primitive_desc(const dnnl::memory::desc& src,
                                                   const dnnl::memory::desc& weights,
                                                   const dnnl::memory::desc* bias,
                                                   const dnnl::memory::desc& dst,
                                                   const dnnl::primitive_attr& attr) {
  const auto desc = bias ? dnnl::matmul::desc(src, weights, *bias, dst)
                         : dnnl::matmul::desc(src, weights, dst);
  return {desc, attr, cpu_engine()};
}

softmax_forward::primitive_desc softmax_forward_primitive_desc(const dnnl::memory::desc& src,
                                                               const dnnl::memory::desc& dst,
                                                               int axis,
                                                               const dnnl::primitive_attr& attr) {
  const softmax_forward::desc desc(dnnl::prop_kind::forward_inference,
                                   dnnl::algorithm::softmax_accurate, src, dst, axis);
  return {desc, attr, cpu_engine()};
}

pooling_forward::primitive_desc pooling_forward_primitive_desc(
    dnnl::prop_kind prop, dnnl::algorithm algorithm, const dnnl::memory::desc& src,
    const dnnl::memory::desc& dst, const PoolingWindow& window,
    const dnnl::primitive_attr& attr) {
  const pooling_forward::desc desc(prop, algorithm, src, dst, window.strides, window.kernel,
                                   window.dilates, window.padding_l, window.padding_r);
  return {desc, attr, cpu_engine()};
}

pooling_backward::primitive_desc pooling_backward_primitive_desc(
    dnnl::algorithm algorithm, const dnnl::memory::desc& diff_src,
    const dnnl::memory::desc& diff_dst, const PoolingWindow& window,
    const pooling_forward::primitive_desc& forward, const dnnl::primitive_attr& attr) {
  const pooling_backward::desc desc(algorithm, diff_src, diff_dst, window.strides,
                                    window.kernel, window.dilates, window.padding_l,
                                    window.padding_r);
  return {desc, attr, cpu_engine(), forward};
}

#endif

dnnl::convolution_forward::primitive_desc convolution_forward_primitive_desc(
    dnnl::prop_kind prop, const dnnl::memory::desc& src, const dnnl::memory::desc& weights,
    const dnnl::memory::desc* bias, const dnnl::memory::desc& dst,
    const ConvolutionWindow& window, const dnnl::primitive_attr& attr) {
  return windowed_forward<dnnl::convolution_forward>(dnnl::algorithm::convolution_direct, prop,
                                                     src, weights, bias, dst, window, attr);
}

dnnl::deconvolution_forward::primitive_desc deconvolution_forward_primitive_desc(
    dnnl::prop_kind prop, const dnnl::memory::desc& src, const dnnl::memory::desc& weights,
    const dnnl::memory::desc* bias, const dnnl::memory::desc& dst,
    const ConvolutionWindow& window, const dnnl::primitive_attr& attr) {
  return windowed_forward<dnnl::deconvolution_forward>(dnnl::algorithm::deconvolution_direct,
                                                       prop, src, weights, bias, dst, window,
                                                       attr);
}

// --- post-ops -------------------------------------------------------------------------------

#if DNNL_VERSION_MAJOR >= 3

void append_eltwise(dnnl::post_ops& ops, dnnl::algorithm algorithm, float alpha, float beta) {
  ops.append_eltwise(algorithm, alpha, beta);
}

// The post-ops run on values (the destination's scale divides after them); the addend's
// bytes are read as they are, so the sum dequantises them.
float sum_scale_in_primitive(float addend_scale, float result_scale) {
  return 1.f / addend_scale;
}

float clip_bound_in_primitive(float bound, float result_scale) { return bound; }

void append_scale_sensitive(dnnl::post_ops& ops, ScaleSensitiveActivation activation,
                            float /*result_scale*/) {
  if (activation == ScaleSensitiveActivation::silu) {
    ops.append_eltwise(dnnl::algorithm::eltwise_swish, 1.f, 0.f);
  } else if (activation == ScaleSensitiveActivation::hardswish) {
    ops.append_eltwise(dnnl::algorithm::eltwise_hardswish, 1.f / 6.f, 0.5f);
  } else {
    ops.append_eltwise(activation == ScaleSensitiveActivation::gelu_erf
                           ? dnnl::algorithm::eltwise_gelu_erf
                           : dnnl::algorithm::eltwise_gelu_tanh,
                       0.f, 0.f);
  }
}

#else

void append_eltwise(dnnl::post_ops& ops, dnnl::algorithm algorithm, float alpha, float beta) {
  ops.append_eltwise(1.f, algorithm, alpha, beta);
}

// The output scale has already brought the result into its quantised units; the addend's
// bytes are rescaled into them.
float sum_scale_in_primitive(float addend_scale, float result_scale) {
  return (result_scale > 0.f ? result_scale : 1.f) / addend_scale;
}

float clip_bound_in_primitive(float bound, float result_scale) {
  return bound * (result_scale > 0.f ? result_scale : 1.f);
}

void append_scale_sensitive(dnnl::post_ops& ops, ScaleSensitiveActivation activation,
                            float result_scale) {
  // y = s * x arrives; s * f(x) must leave.
  const float s = result_scale > 0.f ? result_scale : 1.f;
  if (activation == ScaleSensitiveActivation::silu) {
    // y * sigmoid(y / s) = s * x * sigmoid(x)
    ops.append_eltwise(1.f, dnnl::algorithm::eltwise_swish, 1.f / s, 0.f);
    return;
  }
  if (s != 1.f) ops.append_eltwise(1.f, dnnl::algorithm::eltwise_linear, 1.f / s, 0.f);
  const dnnl::algorithm algorithm =
      activation == ScaleSensitiveActivation::hardswish ? dnnl::algorithm::eltwise_hardswish
      : activation == ScaleSensitiveActivation::gelu_erf ? dnnl::algorithm::eltwise_gelu_erf
                                                          : dnnl::algorithm::eltwise_gelu_tanh;
  ops.append_eltwise(s, algorithm, 0.f, 0.f);
}

#endif

// --- INT8 products --------------------------------------------------------------------------

#if DNNL_VERSION_MAJOR >= 3

void set_product_scales(dnnl::primitive_attr& attr, const ProductScales& scales) {
  // Masks only (the same whether the values are known yet or not): the values come with
  // each execution. Weights always per channel, so the mask never depends on the values.
  attr.set_scales_mask(DNNL_ARG_SRC, 0);
  attr.set_scales_mask(DNNL_ARG_WEIGHTS, scales.weights_mask);
  if (scales.dst > 0.f) attr.set_scales_mask(DNNL_ARG_DST, 0);
}

std::vector<float> product_scales_kept(const ProductScales& scales) { return {}; }

Arguments product_scale_arguments(const ProductScales& scales) {
  // One weight scale (a batched matmul's B) is kept per value like src's and dst's.
  const dnnl::memory weights = scales.weights.size() == 1
                                   ? factor_memory(1.f / scales.weights[0])
                                   : weight_scales_argument(scales.weights);
  return product_scale_arguments(scales.src, weights, scales.dst);
}

bool primitive_keeps_product_scales() { return false; }

dnnl::memory weight_scales_argument(const std::vector<float>& weights) {
  return scale_memory(inverses(weights));
}

Arguments product_scale_arguments(float src, const dnnl::memory& weights, float dst) {
  Arguments arguments{{DNNL_ARG_ATTR_SCALES | DNNL_ARG_SRC, factor_memory(1.f / src)},
                      {DNNL_ARG_ATTR_SCALES | DNNL_ARG_WEIGHTS, weights}};
  if (dst > 0.f) arguments.emplace(DNNL_ARG_ATTR_SCALES | DNNL_ARG_DST, factor_memory(1.f / dst));
  return arguments;
}

at::Tensor int8_bias(const at::Tensor& bias, float src_scale, const at::Tensor& weight_scales) {
  // Added in f32 after the accumulator is dequantised: the bias as it is.
  return bias.contiguous();
}

void set_result_scale(dnnl::primitive_attr& attr, float scale) {
  // The destination's factor divides the result, bias included.
  if (scale != 1.f) attr.set_scales_mask(DNNL_ARG_DST, 0);
}

Arguments result_scale_arguments(float scale) {
  if (scale == 1.f) return {};
  return {{DNNL_ARG_ATTR_SCALES | DNNL_ARG_DST, factor_memory(1.f / scale)}};
}

#else

void set_product_scales(dnnl::primitive_attr& attr, const ProductScales& scales) {
  const std::vector<float> multipliers = output_multipliers(scales);
  if (!multipliers.empty())
    attr.set_output_scales(multipliers.size() > 1 ? 1 << 1 : 0, multipliers);
}

std::vector<float> product_scales_kept(const ProductScales& scales) {
  return output_multipliers(scales);
}

Arguments product_scale_arguments(const ProductScales& scales) { return {}; }

bool primitive_keeps_product_scales() { return true; }

dnnl::memory weight_scales_argument(const std::vector<float>& weights) { return {}; }

Arguments product_scale_arguments(float src, const dnnl::memory& weights, float dst) {
  return {};
}

at::Tensor int8_bias(const at::Tensor& bias, float src_scale, const at::Tensor& weight_scales) {
  // Added to the s32 accumulator, before the output scale: in its units.
  return (bias * (weight_scales * src_scale)).contiguous();
}

void set_result_scale(dnnl::primitive_attr& attr, float scale) {
  if (scale != 1.f) attr.set_output_scales(0, {scale});
}

Arguments result_scale_arguments(float scale) { return {}; }

#endif

// --- reorders -------------------------------------------------------------------------------

ScaledReorder::ScaledReorder(const dnnl::memory::desc& from, const dnnl::memory::desc& to,
                             const std::vector<float>& scales, int mask) {
  dnnl::primitive_attr attr;
  if (!scales.empty()) {
#if DNNL_VERSION_MAJOR >= 3
    // A source factor multiplies (a destination factor would divide).
    attr.set_scales_mask(DNNL_ARG_FROM, mask);
    scales_ = scale_memory(scales);
#else
    attr.set_output_scales(mask, scales);
#endif
  }
  reorder_ =
      dnnl::reorder(dnnl::reorder::primitive_desc(cpu_engine(), from, cpu_engine(), to, attr));
}

void ScaledReorder::execute(dnnl::stream& stream, const dnnl::memory& from,
                            const dnnl::memory& to) const {
  Arguments arguments{{DNNL_ARG_FROM, from}, {DNNL_ARG_TO, to}};
#if DNNL_VERSION_MAJOR >= 3
  if (scales_) arguments.emplace(DNNL_ARG_ATTR_SCALES | DNNL_ARG_FROM, scales_);
#endif
  reorder_.execute(stream, arguments);
}

dnnl::concat::primitive_desc concat_primitive_desc(const std::vector<dnnl::memory::desc>& srcs,
                                                   int axis, const dnnl::primitive_attr& attr) {
#if DNNL_VERSION_MAJOR >= 3
  return {cpu_engine(), axis, srcs, attr};
#else
  return {axis, srcs, cpu_engine(), attr};
#endif
}

}  // namespace ipex_shim::onednn
