// Built with OpenMP (CMakeLists.txt), so that at::parallel_for below takes its parallel branch.
#include "kernels/parallel.h"

#include <ATen/Parallel.h>

#include <cstring>

#if !defined(_OPENMP) && AT_PARALLEL_OPENMP
#error "kernels/parallel.cpp must be compiled with OpenMP: at::parallel_for would run serially"
#endif

namespace ipex_shim {

void parallel_for_range(int64_t begin, int64_t end, int64_t grain, RangeFunction body,
                        const void* context) {
  at::parallel_for(begin, end, grain, [&](int64_t b, int64_t e) { body(context, b, e); });
}

void parallel_copy(void* target, const void* source, int64_t bytes) {
  auto* to = static_cast<char*>(target);
  const auto* from = static_cast<const char*>(source);
  // Below a quarter MiB one thread copies at cache speed before another would have woken.
  at::parallel_for(0, bytes, int64_t{1} << 18, [&](int64_t b, int64_t e) {
    std::memcpy(to + b, from + b, static_cast<size_t>(e - b));
  });
}

}  // namespace ipex_shim
