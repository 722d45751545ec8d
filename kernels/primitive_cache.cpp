#include "kernels/primitive_cache.h"

#include "kernels/onednn_context.h"

namespace ipex_shim {

std::shared_ptr<const dnnl::reorder> cached_reorder(const dnnl::memory::desc& from,
                                                    const dnnl::memory::desc& to) {
  static PrimitiveCache<dnnl::reorder>* cache = new PrimitiveCache<dnnl::reorder>();
  return cache->get(KeyBuilder().add(from).add(to).take(), [&] {
    return dnnl::reorder(dnnl::reorder::primitive_desc(cpu_engine(), from, cpu_engine(), to));
  });
}

}  // namespace ipex_shim
