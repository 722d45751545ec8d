#include "kernels/int8.h"

#include <ATen/TensorOperators.h>
#include <ATen/ops/amax.h>
#include <ATen/ops/ones_like.h>
#include <ATen/ops/where.h>

#include "kernels/onednn_context.h"
#include "kernels/primitive_cache.h"
#include "shim/runtime.h"

namespace ipex_shim {

int int8_weight_bound() {
  static const int bound = onednn_reaches_int8() ? 127 : 63;
  return bound;
}

float weights_reorder_factor(const dnnl::memory::desc& weights) {
  static auto* cache = new PrimitiveCache<float>();
  return *cache->get(KeyBuilder().add(weights).take(), [&] {
    const dnnl::memory::dims dims = onednn::dims_of(weights);
    dnnl::memory::dims strides(dims.size(), 1);
    for (size_t d = dims.size(); d-- > 1;) strides[d - 1] = strides[d] * dims[d];
    const dnnl::memory::desc plain(dims, dnnl::memory::data_type::s8, strides);
    std::vector<int8_t> twos(plain.get_size(), 2);
    dnnl::memory from(plain, cpu_engine(), twos.data());
    Reordered to = allocate(weights);
    dnnl::reorder(from, to.memory).execute(thread_stream(), from, to.memory);
    thread_stream().wait();
    // Element 0 sits at byte 0 of every layout a primitive picks.
    return *static_cast<const int8_t*>(to.memory.get_data_handle()) / 2.f;
  });
}

at::Tensor weight_scales(const at::Tensor& weight, bool per_channel, int bound) {
  at::Tensor magnitude = weight.detach().abs().reshape({weight.size(0), -1});
  at::Tensor largest = per_channel ? at::amax(magnitude, {1})
                                   : at::amax(magnitude).expand({weight.size(0)});
  at::Tensor scales = static_cast<double>(bound) / largest;
  // A channel of zeros: any finite scale gives the right (zero) result.
  scales = at::where(largest > 0, scales, at::ones_like(scales));
  return scales.to(at::kFloat).contiguous();
}

at::Tensor transposed_weight_scales(const at::Tensor& weight, int64_t groups, bool per_channel,
                                    int bound) {
  const int64_t out_per_group = weight.size(1);
  // (groups, in / groups, out / groups, k...) -> one row per output channel.
  at::Tensor by_output = weight.detach()
                             .reshape({groups, weight.size(0) / groups, out_per_group, -1})
                             .permute({0, 2, 1, 3})
                             .reshape({groups * out_per_group, -1});
  at::Tensor magnitude = by_output.abs();
  at::Tensor largest = per_channel ? at::amax(magnitude, {1})
                                   : at::amax(magnitude).expand({groups * out_per_group});
  at::Tensor scales = static_cast<double>(bound) / largest;
  scales = at::where(largest > 0, scales, at::ones_like(scales));
  return scales.to(at::kFloat).contiguous();
}

dnnl::memory::data_type activation_type(bool uint8) {
  return uint8 ? dnnl::memory::data_type::u8 : dnnl::memory::data_type::s8;
}

std::shared_ptr<const onednn::ScaledReorder> cached_scaled_reorder(
    const dnnl::memory::desc& from, const dnnl::memory::desc& to, float scale) {
  static auto* cache = new PrimitiveCache<onednn::ScaledReorder>();
  return cache->get(KeyBuilder().add(from).add(to).add(scale).take(), [&] {
    return scale == 1.f ? onednn::ScaledReorder(from, to)
                        : onednn::ScaledReorder(from, to, {scale}, 0);
  });
}

}  // namespace ipex_shim
