#include "kernels/primitive_cache.h"

#include "kernels/onednn_context.h"

namespace ipex_shim {

const dnnl::reorder& cached_reorder(const dnnl::memory::desc& from, const dnnl::memory::desc& to) {
  static PrimitiveCache<dnnl::reorder>* cache = new PrimitiveCache<dnnl::reorder>();
  std::string key = KeyBuilder().add(from).add(to).take();
  // The entry lives in the cache; callers use it immediately.
  thread_local std::shared_ptr<const dnnl::reorder> last;
  last = cache->get(key, [&] {
    return dnnl::reorder(dnnl::reorder::primitive_desc(cpu_engine(), from, cpu_engine(), to));
  });
  return *last;
}

}  // namespace ipex_shim
