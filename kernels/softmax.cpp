#include "kernels/softmax.h"

#include <cmath>
#include <stdexcept>

#include "kernels/buffer_pool.h"
#include "kernels/onednn_compat.h"
#include "kernels/onednn_context.h"
#include "kernels/primitive_cache.h"

namespace ipex_shim {
namespace {

struct SoftmaxPrimitive {
  explicit SoftmaxPrimitive(const onednn::softmax_forward::primitive_desc& made)
      : primitive(made), src(made.src_desc()), dst(made.dst_desc()),
        scratchpad(made.scratchpad_desc()) {}
  onednn::softmax_forward primitive;
  dnnl::memory::desc src, dst, scratchpad;
};

}  // namespace

bool softmax_last_dim_supported(const at::Tensor& input) {
  return input.defined() && input.device().is_cpu() && input.layout() == at::kStrided &&
         input.scalar_type() == at::kFloat && !input.is_nested() && input.dim() >= 1 &&
         input.numel() > 0 && input.is_contiguous();
}

namespace {

// softmax(input, dim=-1) into `output` (input itself, or a new contiguous tensor), multiplied
// by `result_scale` on the way (1: none; u8 results).
void softmax_into(const at::Tensor& input, const at::Tensor& output, float result_scale) {
  static PrimitiveCache<SoftmaxPrimitive>* primitives = new PrimitiveCache<SoftmaxPrimitive>();
  const dnnl::memory::desc src_md = strided_desc(input);
  const dnnl::memory::desc dst_md = strided_desc(output);
  KeyBuilder key;
  key.add(src_md).add(dst_md).add(result_scale);
  auto softmax = primitives->get(key.take(), [&] {
    dnnl::primitive_attr attr = base_attr();
    onednn::set_result_scale(attr, result_scale);
    return SoftmaxPrimitive(onednn::softmax_forward_primitive_desc(
        src_md, dst_md, static_cast<int>(input.dim() - 1), attr));
  });
  onednn::Arguments arguments = onednn::result_scale_arguments(result_scale);
  arguments.emplace(DNNL_ARG_SRC, wrap(input, softmax->src));
  arguments.emplace(DNNL_ARG_DST, wrap(output, softmax->dst));
  execute(softmax->primitive, softmax->scratchpad, std::move(arguments));
}

}  // namespace

at::Tensor softmax_last_dim(const at::Tensor& input, bool bf16_result, bool in_place) {
  if (in_place && bf16_result) throw std::invalid_argument("softmax: in place is fp32");
  // oneDNN's softmax may write over its source.
  at::Tensor output = in_place ? input
                               : pooled_empty(input.sizes(),
                                              bf16_result ? at::kBFloat16 : at::kFloat);
  softmax_into(input, output, 1.f);
  return output;
}

at::Tensor softmax_last_dim_u8(const at::Tensor& input, float scale) {
  if (!(scale > 0.f) || !std::isfinite(scale))
    throw std::invalid_argument("softmax: the u8 result's scale must be positive and finite");
  at::Tensor output = pooled_empty(input.sizes(), at::kByte);
  softmax_into(input, output, scale);
  return output;
}

}  // namespace ipex_shim
