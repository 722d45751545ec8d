#include "kernels/int8.h"

#include <ATen/TensorOperators.h>
#include <ATen/ops/amax.h>
#include <ATen/ops/ones_like.h>
#include <ATen/ops/where.h>

#include "kernels/onednn_context.h"
#include "kernels/primitive_cache.h"

namespace ipex_shim {

at::Tensor weight_scales(const at::Tensor& weight, bool per_channel) {
  at::Tensor magnitude = weight.detach().abs().reshape({weight.size(0), -1});
  at::Tensor largest = per_channel ? at::amax(magnitude, {1})
                                   : at::amax(magnitude).expand({weight.size(0)});
  at::Tensor scales = 127.0 / largest;
  // A channel of zeros: any finite scale gives the right (zero) result.
  scales = at::where(largest > 0, scales, at::ones_like(scales));
  return scales.to(at::kFloat).contiguous();
}

at::Tensor transposed_weight_scales(const at::Tensor& weight, int64_t groups, bool per_channel) {
  const int64_t out_per_group = weight.size(1);
  // (groups, in / groups, out / groups, k...) -> one row per output channel.
  at::Tensor by_output = weight.detach()
                             .reshape({groups, weight.size(0) / groups, out_per_group, -1})
                             .permute({0, 2, 1, 3})
                             .reshape({groups * out_per_group, -1});
  at::Tensor magnitude = by_output.abs();
  at::Tensor largest = per_channel ? at::amax(magnitude, {1})
                                   : at::amax(magnitude).expand({groups * out_per_group});
  at::Tensor scales = 127.0 / largest;
  scales = at::where(largest > 0, scales, at::ones_like(scales));
  return scales.to(at::kFloat).contiguous();
}

std::vector<float> output_multipliers(const at::Tensor& weight_scales, float input_scale,
                                      float result_scale) {
  const float* values = weight_scales.data_ptr<float>();
  std::vector<float> multipliers;
  bool uniform = true;
  for (int64_t oc = 0; oc < weight_scales.numel(); ++oc) {
    multipliers.push_back(result_scale / (input_scale * values[oc]));
    uniform = uniform && multipliers.back() == multipliers.front();
  }
  if (uniform) multipliers.resize(1);
  return multipliers;
}

dnnl::memory::data_type activation_type(bool uint8) {
  return uint8 ? dnnl::memory::data_type::u8 : dnnl::memory::data_type::s8;
}

std::shared_ptr<const dnnl::reorder> cached_scaled_reorder(const dnnl::memory::desc& from,
                                                           const dnnl::memory::desc& to,
                                                           float scale) {
  if (scale == 1.f) return cached_reorder(from, to);
  static PrimitiveCache<dnnl::reorder>* cache = new PrimitiveCache<dnnl::reorder>();
  return cache->get(KeyBuilder().add(from).add(to).add(scale).take(), [&] {
    dnnl::primitive_attr attr;
    attr.set_output_scales(0, {scale});
    return dnnl::reorder(dnnl::reorder::primitive_desc(cpu_engine(), from, cpu_engine(), to, attr));
  });
}

}  // namespace ipex_shim
