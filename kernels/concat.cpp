#include "kernels/concat.h"

#include <stdexcept>

#include "kernels/buffer_pool.h"
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
                              at::MemoryFormat format, dnnl::memory::desc* output_layout) {
  if (inputs.empty() || inputs.size() != layouts.size())
    throw std::invalid_argument("concat: one layout per input");
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
  for (size_t i = 0; i < inputs.size(); ++i)
    args.emplace(DNNL_ARG_MULTIPLE_SRC + static_cast<int>(i), wrap(inputs[i], layouts[i]));
  execute(concat->primitive, concat->pd, std::move(args));
  return output;
}

}  // namespace ipex_shim
