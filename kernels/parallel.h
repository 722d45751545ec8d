// Loops split over PyTorch's intra-op threads (its OpenMP pool, which oneDNN's primitives use
// too), so that the shim's own elementwise work runs at the speed of torch's.
//
// at::parallel_for is a header template whose parallel branch is compiled only where the
// including file is built with OpenMP; without it the loop quietly runs on one thread (the
// INT8 residual addend copies of resnet50 batch 16 took 7 ms a pass that way). Only
// kernels/parallel.cpp is built with OpenMP, and every loop of the shim goes through it.
#pragma once

#include <cstdint>

namespace ipex_shim {

// Runs body(b, e) over disjoint ranges covering [begin, end), each at least `grain` long
// (except the last), on torch's threads; on the calling thread alone when the range is
// smaller than `grain`, when torch uses one thread, or inside a parallel region.
template <class Body>
void parallel_for(int64_t begin, int64_t end, int64_t grain, const Body& body);

// What parallel_for calls: `body` with its `context`.
using RangeFunction = void (*)(const void* context, int64_t begin, int64_t end);
void parallel_for_range(int64_t begin, int64_t end, int64_t grain, RangeFunction body,
                        const void* context);

// Copies `bytes` bytes from `source` to `target` (not overlapping) on torch's threads.
void parallel_copy(void* target, const void* source, int64_t bytes);

template <class Body>
void parallel_for(int64_t begin, int64_t end, int64_t grain, const Body& body) {
  parallel_for_range(
      begin, end, grain,
      [](const void* context, int64_t b, int64_t e) { (*static_cast<const Body*>(context))(b, e); },
      &body);
}

}  // namespace ipex_shim
