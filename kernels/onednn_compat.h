// The one place that knows which oneDNN the shim is built against: 2.x (Debian 12's 2.6) or
// 3.x (Debian 13's 3.7). The kernels call these functions and read the same on both; no other
// file tests DNNL_VERSION_MAJOR.
//
// What changed in oneDNN 3, and how this layer hides it:
//   - Primitive descriptors are built directly from memory descriptors (v2 first built an op
//     descriptor, `convolution_forward::desc`, ...): the *_primitive_desc functions below take
//     the same arguments on both. `pooling_v2_*` became `pooling_*`: the aliases below.
//   - memory::desc is an opaque handle (no `.data` struct): data_type_of, dims_of,
//     with_data_type and append_key replace reading or editing its fields.
//   - post_ops::append_eltwise lost its scale argument: append_eltwise.
//   - Scales. The shim's convention stays a multiplier everywhere outside this file:
//     q = round(x * scale) (DESIGN.md "INT8 configuration"). oneDNN 2 takes one "output
//     scale" per output channel, applied to the s32 accumulator plus the bias, before the
//     post-ops, so post-op arguments (a clip bound, a sum's factor) are in the result's
//     quantised units and an INT8 bias is in the accumulator's units. oneDNN 3 takes a
//     dequantisation factor per argument (x = scale * q), as memory at execution; the source
//     and weights factors scale the accumulator, the f32 bias is added after them, the
//     post-ops run on those values, and the destination factor divides last. ProductScales
//     and the functions beside it translate; cache keys include only what a primitive keeps
//     (product_scales_kept, the post-op arguments as returned here).
#pragma once

#include <ATen/core/Tensor.h>

#include <dnnl.hpp>
#include <string>
#include <unordered_map>
#include <vector>

namespace ipex_shim::onednn {

using Arguments = std::unordered_map<int, dnnl::memory>;

// --- memory descriptors ---------------------------------------------------------------------

// data_type_of(desc), dims_of(desc): its element type and dimensions.
// append_key(key, desc): appends bytes that tell `desc` apart from any other descriptor to a
// cache key.
#if DNNL_VERSION_MAJOR >= 3
inline dnnl::memory::data_type data_type_of(const dnnl::memory::desc& desc) {
  return desc.get_data_type();
}
inline dnnl::memory::dims dims_of(const dnnl::memory::desc& desc) { return desc.get_dims(); }
void append_key(std::string* key, const dnnl::memory::desc& desc);
#else
inline dnnl::memory::data_type data_type_of(const dnnl::memory::desc& desc) {
  return desc.data_type();
}
inline dnnl::memory::dims dims_of(const dnnl::memory::desc& desc) { return desc.dims(); }
inline void append_key(std::string* key, const dnnl::memory::desc& desc) {
  // The C struct itself: oneDNN 2 initialises every byte of it, padding included.
  key->append(reinterpret_cast<const char*>(&desc.data), sizeof(desc.data));
}
#endif

// The same layout (dimension order and blocking) with elements of `type`.
dnnl::memory::desc with_data_type(const dnnl::memory::desc& desc, dnnl::memory::data_type type);

// --- primitive descriptors ------------------------------------------------------------------

// A convolution's window in oneDNN's terms (dilates count the gaps between taps).
struct ConvolutionWindow {
  dnnl::memory::dims strides, dilates, padding_l, padding_r;
};

// `bias` nullptr: none.
dnnl::convolution_forward::primitive_desc convolution_forward_primitive_desc(
    dnnl::prop_kind prop, const dnnl::memory::desc& src, const dnnl::memory::desc& weights,
    const dnnl::memory::desc* bias, const dnnl::memory::desc& dst,
    const ConvolutionWindow& window, const dnnl::primitive_attr& attr);
dnnl::deconvolution_forward::primitive_desc deconvolution_forward_primitive_desc(
    dnnl::prop_kind prop, const dnnl::memory::desc& src, const dnnl::memory::desc& weights,
    const dnnl::memory::desc* bias, const dnnl::memory::desc& dst,
    const ConvolutionWindow& window, const dnnl::primitive_attr& attr);
dnnl::convolution_backward_data::primitive_desc convolution_backward_data_primitive_desc(
    const dnnl::memory::desc& diff_src, const dnnl::memory::desc& weights,
    const dnnl::memory::desc& diff_dst, const ConvolutionWindow& window,
    const dnnl::convolution_forward::primitive_desc& forward, const dnnl::primitive_attr& attr);
dnnl::convolution_backward_weights::primitive_desc convolution_backward_weights_primitive_desc(
    const dnnl::memory::desc& src, const dnnl::memory::desc& diff_weights,
    const dnnl::memory::desc* diff_bias, const dnnl::memory::desc& diff_dst,
    const ConvolutionWindow& window, const dnnl::convolution_forward::primitive_desc& forward,
    const dnnl::primitive_attr& attr);

dnnl::matmul::primitive_desc matmul_primitive_desc(const dnnl::memory::desc& src,
                                                   const dnnl::memory::desc& weights,
                                                   const dnnl::memory::desc* bias,
                                                   const dnnl::memory::desc& dst,
                                                   const dnnl::primitive_attr& attr);

// Softmax along `axis`, forward inference, dst of its own type (oneDNN 2.6: softmax_v2).
#if DNNL_VERSION_MAJOR >= 3
using softmax_forward = dnnl::softmax_forward;
#else
using softmax_forward = dnnl::softmax_v2_forward;
#endif
softmax_forward::primitive_desc softmax_forward_primitive_desc(const dnnl::memory::desc& src,
                                                               const dnnl::memory::desc& dst,
                                                               int axis,
                                                               const dnnl::primitive_attr& attr);

#if DNNL_VERSION_MAJOR >= 3
using pooling_forward = dnnl::pooling_forward;
using pooling_backward = dnnl::pooling_backward;
#else
using pooling_forward = dnnl::pooling_v2_forward;
using pooling_backward = dnnl::pooling_v2_backward;
#endif

struct PoolingWindow {
  dnnl::memory::dims strides, kernel, dilates, padding_l, padding_r;
};

pooling_forward::primitive_desc pooling_forward_primitive_desc(
    dnnl::prop_kind prop, dnnl::algorithm algorithm, const dnnl::memory::desc& src,
    const dnnl::memory::desc& dst, const PoolingWindow& window, const dnnl::primitive_attr& attr);
pooling_backward::primitive_desc pooling_backward_primitive_desc(
    dnnl::algorithm algorithm, const dnnl::memory::desc& diff_src,
    const dnnl::memory::desc& diff_dst, const PoolingWindow& window,
    const pooling_forward::primitive_desc& forward, const dnnl::primitive_attr& attr);

// Concatenation along `axis` into a destination of oneDNN's choosing (format `any`).
dnnl::concat::primitive_desc concat_primitive_desc(const std::vector<dnnl::memory::desc>& srcs,
                                                   int axis, const dnnl::primitive_attr& attr);

// --- post-ops -------------------------------------------------------------------------------

// An element-wise post-op whose algorithm does not depend on the values' scale (relu, gelu).
void append_eltwise(dnnl::post_ops& ops, dnnl::algorithm algorithm, float alpha, float beta);

// A product's result is quantised with `result_scale` (0: fp32 values). The arguments of the
// post-ops as the primitive applies them, which is also what its cache key must hold:
//   sum_scale_in_primitive: the factor of a sum post-op whose addend bytes (the destination's
//     previous contents) are quantised with `addend_scale` (1: values);
//   clip_bound_in_primitive: a clip's bound, given as a value.
float sum_scale_in_primitive(float addend_scale, float result_scale);
float clip_bound_in_primitive(float bound, float result_scale);

// An activation that does not commute with scaling, after a product whose result may be
// quantised with `result_scale` (0: values): silu, x * sigmoid(x), or hardswish,
// x * relu6(x + 3) / 6, of the result's values, left in the units the result is in. oneDNN 3
// runs post-ops on values (the destination's scale divides after them); oneDNN 2 runs them in
// the quantised units, so there the scale is taken out first (swish's alpha for silu, a
// linear post-op before hardswish, whose own alpha and beta oneDNN 2 ignores) and put back
// after (the eltwise post-op's scale). gelu (exact or tanh) goes the hardswish way: a linear
// post-op takes the scale out, gelu's eltwise scale puts it back.
enum class ScaleSensitiveActivation { silu, hardswish, gelu_erf, gelu_tanh };
void append_scale_sensitive(dnnl::post_ops& ops, ScaleSensitiveActivation activation,
                            float result_scale);

// --- INT8 products (convolution, matmul) ----------------------------------------------------

// The scales of a product of quantised src and weights, in the shim's convention.
struct ProductScales {
  float src = 1.f;  // q_src = round(src * this->src)
  // q_weights = round(weights * this->weights[oc]), one per output channel. Empty: not known
  // yet (a primitive made only to learn the weights' layout).
  std::vector<float> weights;
  int weights_mask = 0;  // the weights' dimensions those channels run along
  float dst = 0.f;       // q_dst = round(dst * this->dst); 0: the result is fp32 values
};

// The product's scales in `attr`. The result's output channels are its dimension 1.
void set_product_scales(dnnl::primitive_attr& attr, const ProductScales& scales);
// The scale values the primitive keeps (a cache key must include them).
std::vector<float> product_scales_kept(const ProductScales& scales);
// The scale values the primitive takes at execution.
Arguments product_scale_arguments(const ProductScales& scales);
// Whether a primitive keeps the product's scale values (oneDNN 2: its cache key must hold
// product_scales_kept) rather than taking them at execution (oneDNN 3).
bool primitive_keeps_product_scales();
// The weights' scales (one per output channel) as the primitive takes them at execution,
// made once where the weights are packed; an empty memory where the primitive keeps them.
dnnl::memory weight_scales_argument(const std::vector<float>& weights);
// product_scale_arguments for a call whose weights' scales are `weights`
// (weight_scales_argument's) and whose src and dst scales are `src` and `dst` (0: no dst
// scale). The single-value memories are made once per value and thread, not per call.
Arguments product_scale_arguments(float src, const dnnl::memory& weights, float dst);
// An fp32 bias as the product adds it, for weights quantised with `weight_scales` (one per
// output channel) and a src quantised with `src_scale`.
at::Tensor int8_bias(const at::Tensor& bias, float src_scale, const at::Tensor& weight_scales);

// A floating-point product whose result (bias included) is multiplied by `scale`.
void set_result_scale(dnnl::primitive_attr& attr, float scale);
Arguments result_scale_arguments(float scale);

// --- reorders -------------------------------------------------------------------------------

// A reorder that multiplies each value by a scale on the way (quantise with s: s;
// dequantise: 1 / s; requantise: s_to / s_from): one scale, or one per index along the
// dimensions in `mask`. No scales: a plain reorder. Safe to run from several threads.
class ScaledReorder {
 public:
  ScaledReorder(const dnnl::memory::desc& from, const dnnl::memory::desc& to,
                const std::vector<float>& scales = {}, int mask = 0);
  void execute(dnnl::stream& stream, const dnnl::memory& from, const dnnl::memory& to) const;

 private:
  dnnl::reorder reorder_;
  dnnl::memory scales_;  // oneDNN 3: the scales, given at execution (oneDNN 2 keeps them)
};

}  // namespace ipex_shim::onednn
