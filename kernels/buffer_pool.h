// Large buffers for the kernels' results and temporaries, kept for reuse when freed.
//
// A fresh allocation of tens of megabytes is served by mmap and freed by munmap, so every
// pass of a model pays page faults (and the kernel's zeroing) on each large result again:
// on resnet50 batch 16 in fp32 mode about 60 ms of a 400 ms pass. Buffers handed out here
// come back to the pool when their tensor dies and serve the next request of the same size
// (up to 1/8 larger), their pages already mapped. The pool keeps at most a limit of freed
// bytes (IPEX_BUFFER_CACHE_MB), dropping the longest unused first; requests under 64 KiB go
// to PyTorch's own CPU allocator.
//
// The tensors are ordinary resizable CPU tensors (a resize allocates from the pool too).
// serve_all_cpu_tensors() extends the pool to every CPU tensor of the process.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstddef>
#include <cstdint>

namespace ipex_shim {

// An uninitialised CPU tensor, like at::empty, whose storage comes from the pool.
at::Tensor pooled_empty(c10::IntArrayRef sizes, at::ScalarType dtype,
                        at::MemoryFormat format = at::MemoryFormat::Contiguous);

// How many freed bytes the pool may keep (0: keep none, every buffer is freed at once).
void set_buffer_cache_limit(size_t bytes);

// Makes the pool PyTorch's CPU allocator for the whole process (c10::SetCPUAllocator), so that
// stock ops' large results and autograd's saved tensors are reused too: a training step
// allocates and frees gigabytes of activations and gradients, each fresh mmap page-faulted
// again. Requests under 1 MiB still go to the allocator it replaced (PyTorch's default),
// which also frees the memory it handed out before the switch. Returns whether it took.
bool serve_all_cpu_tensors();
bool serves_all_cpu_tensors();

struct BufferPoolStats {
  size_t limit = 0;
  size_t cached_bytes = 0;   // freed buffers kept for reuse
  size_t cached_buffers = 0;
  size_t in_use_bytes = 0;   // pool buffers owned by live tensors
  uint64_t reused = 0;       // requests served by a kept buffer
  uint64_t allocated = 0;    // requests that needed new memory
};
BufferPoolStats buffer_pool_stats();

// Frees every kept buffer (tests; buffers in use are unaffected).
void release_cached_buffers();

}  // namespace ipex_shim
