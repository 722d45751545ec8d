#include "kernels/concat.h"

#include <stdexcept>

#include "kernels/buffer_pool.h"
#include "kernels/int8.h"
#include "kernels/onednn_compat.h"
#include "kernels/onednn_context.h"
#include "kernels/primitive_cache.h"

namespace ipex_shim {
namespace {

struct ConcatPrimitive {
  dnnl::concat::primitive_desc pd;
  dnnl::concat primitive;
};

}  // namespace

at::Tensor concat_handed_over(const std::vector<at::Tensor>& inputs,
                              const std::vector<dnnl::memory::desc>& layouts,
                              at::MemoryFormat format, dnnl::memory::desc* output_layout,
                              const std::vector<float>& scales, float joined_scale) {
  if (inputs.empty() || inputs.size() != layouts.size())
    throw std::invalid_argument("concat: one layout per input");
  if (!scales.empty() && scales.size() != inputs.size())
    throw std::invalid_argument("concat: one scale per input");
  static PrimitiveCache<ConcatPrimitive>* primitives = new PrimitiveCache<ConcatPrimitive>();
  KeyBuilder key;
  key.add(layouts.size());
  for (const dnnl::memory::desc& layout : layouts) key.add(layout);
  auto concat = primitives->get(key.take(), [&] {
    auto pd = onednn::concat_primitive_desc(layouts, 1, base_attr());
    return ConcatPrimitive{pd, dnnl::concat(pd)};
  });
  std::vector<int64_t> sizes = inputs[0].sizes().vec();
  sizes[1] = 0;
  for (const at::Tensor& input : inputs) sizes[1] += input.size(1);
  at::Tensor output = pooled_empty(sizes, inputs[0].scalar_type(), format);
  *output_layout = concat->pd.dst_desc();
  if (output_layout->get_size() > output.nbytes())  // a blocked layout padded beyond fp32
    throw std::runtime_error("concat: the joined layout does not fit the result");
  std::unordered_map<int, dnnl::memory> args{{DNNL_ARG_DST, wrap(output, *output_layout)}};
  std::vector<at::Tensor> requantised;  // alive until the concat has run
  for (size_t i = 0; i < inputs.size(); ++i) {
    dnnl::memory source = wrap(inputs[i], layouts[i]);
    if (!scales.empty() && scales[i] != joined_scale) {
      // INT8 bytes in another scale (a max pool's result keeps its input's): rescaled into
      // the joined scale first, in the same layout and type.
      at::Tensor rescaled = pooled_empty(inputs[i].sizes(), inputs[i].scalar_type(),
                                         inputs[i].suggest_memory_format());
      if (layouts[i].get_size() > rescaled.nbytes())
        throw std::runtime_error("concat: an input's layout does not fit a tensor of its sizes");
      dnnl::memory target = wrap(rescaled, layouts[i]);
      cached_scaled_reorder(layouts[i], layouts[i], joined_scale / scales[i])
          ->execute(thread_stream(), source, target);
      source = target;
      requantised.push_back(std::move(rescaled));
    }
    args.emplace(DNNL_ARG_MULTIPLE_SRC + static_cast<int>(i), source);
  }
  execute(concat->primitive, concat->pd, std::move(args));
  return output;
}

}  // namespace ipex_shim
