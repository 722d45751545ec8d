#include "kernels/buffer_pool.h"

#include <ATen/EmptyTensor.h>
#include <c10/core/CPUAllocator.h>
#include <c10/util/Exception.h>

#include <pthread.h>
#include <stdlib.h>

#include <atomic>
#include <cstring>
#include <mutex>
#include <unordered_map>
#include <vector>

#include "shim/torch_compat.h"

namespace ipex_shim {
namespace {

// Below this, PyTorch's allocator (malloc) serves the process's tensors well enough: a
// training step makes many small ones, each a lock and a scan here.
constexpr size_t kSmallestOfProcess = size_t{1} << 20;
// The shim's own results (pooled_empty) come from the pool from here up: between 64 KiB and
// 1 MiB glibc hands out memory that its heap trimming returned to the kernel a moment before,
// so each pass page-faulted again (resnet50 batch 1 in INT8 mode: 83 faults a pass).
constexpr size_t kSmallestOfShim = size_t{1} << 16;
constexpr size_t kGranule = size_t{1} << 16;  // sizes are rounded up to 64 KiB
constexpr size_t kAlignment = 4096;

struct Block {
  void* data;
  size_t size;
};

struct Kept {
  Block block;
  uint64_t released_at;  // tick of its release, for dropping the longest unused
};

class Pool {
 public:
  std::mutex mutex;
  size_t limit = size_t{1024} << 20;
  std::vector<Kept> kept;
  std::unordered_map<void*, size_t> live;  // the pool's blocks owned by tensors, by address
  size_t cached_bytes = 0;
  size_t in_use_bytes = 0;
  uint64_t tick = 0, reused = 0, allocated = 0;

  // A kept block of at least `size` bytes and at most 1/8 more, the smallest such and of
  // those the latest released (its bytes likeliest still in cache), or one with no data (then
  // the caller allocates and calls count_new).
  Block take(size_t size) {
    std::lock_guard<std::mutex> lock(mutex);
    size_t best = kept.size();
    for (size_t i = 0; i < kept.size(); ++i) {
      const size_t have = kept[i].block.size;
      if (have < size || have > size + size / 8) continue;
      if (best == kept.size() || have < kept[best].block.size ||
          (have == kept[best].block.size && kept[i].released_at > kept[best].released_at))
        best = i;
    }
    if (best == kept.size()) return {nullptr, size};
    Block block = kept[best].block;
    kept[best] = kept.back();
    kept.pop_back();
    cached_bytes -= block.size;
    in_use_bytes += block.size;
    live.emplace(block.data, block.size);
    ++reused;
    return block;
  }

  void count_new(Block block) {
    std::lock_guard<std::mutex> lock(mutex);
    ++allocated;
    in_use_bytes += block.size;
    live.emplace(block.data, block.size);
  }

  // Takes back the block at `data` if it is one of the pool's: keeps it for reuse (unless it
  // alone exceeds the limit), then frees the longest unused blocks beyond the limit.
  // Returns false for memory the pool did not hand out.
  bool give_back(void* data) {
    std::vector<void*> to_free;
    {
      std::lock_guard<std::mutex> lock(mutex);
      auto it = live.find(data);
      if (it == live.end()) return false;
      const Block block{data, it->second};
      live.erase(it);
      in_use_bytes -= block.size;
      if (block.size > limit) {
        to_free.push_back(block.data);
      } else {
        kept.push_back({block, ++tick});
        cached_bytes += block.size;
      }
      evict_locked(&to_free);
    }
    for (void* freed : to_free) free(freed);  // outside the lock
    return true;
  }

  void set_limit(size_t bytes) {
    std::vector<void*> to_free;
    {
      std::lock_guard<std::mutex> lock(mutex);
      limit = bytes;
      evict_locked(&to_free);
    }
    for (void* data : to_free) free(data);
  }

 private:
  void evict_locked(std::vector<void*>* to_free) {
    while (cached_bytes > limit) {
      size_t oldest = 0;
      for (size_t i = 1; i < kept.size(); ++i)
        if (kept[i].released_at < kept[oldest].released_at) oldest = i;
      to_free->push_back(kept[oldest].block.data);
      cached_bytes -= kept[oldest].block.size;
      kept[oldest] = kept.back();
      kept.pop_back();
    }
  }
};

// Never destroyed: tensors may die during exit, after static destructors ran.
Pool& pool() {
  static Pool* instance = [] {
    auto* created = new Pool();
    // A fork while another thread holds the lock must not leave the child's pool locked
    // (DataLoader workers are forked from a process that may be computing).
    pthread_atfork([] { pool().mutex.lock(); }, [] { pool().mutex.unlock(); },
                   [] { pool().mutex.unlock(); });
    return created;
  }();
  return *instance;
}

// The allocator that serves what the pool does not (requests under 1 MiB): the CPU allocator
// current when the pool took its place (serve_all_cpu_tensors), else PyTorch's default.
std::atomic<c10::Allocator*> g_beneath{nullptr};

c10::Allocator* beneath() {
  c10::Allocator* allocator = g_beneath.load(std::memory_order_acquire);
  return allocator ? allocator : c10::GetDefaultCPUAllocator();
}

// The deleter of every pool buffer, and the allocator's raw deleter. Memory the pool did
// not hand out belongs to the allocator beneath it: small requests, and (once the pool is
// the process's CPU allocator) buffers that libtorch's ideep took through the allocator
// current before the switch and frees through whichever allocator is current now.
void release(void* data) {
  if (pool().give_back(data)) return;
  const c10::DeleterFnPtr deleter = beneath()->raw_deleter();
  TORCH_CHECK(deleter != nullptr, "ipex-shim: memory of an allocator without a raw deleter");
  deleter(data);
}

// Data and context are the same pointer, as c10::Allocator::raw_allocate requires (libtorch's
// ideep allocates its buffers that way from the current CPU allocator).
class PoolAllocator final : public c10::Allocator {
 public:
  explicit PoolAllocator(size_t smallest) : smallest_(smallest) {}
  c10::DataPtr allocate(size_t bytes) IPEX_SHIM_ALLOCATE_CONST override {
    if (bytes < smallest_) return beneath()->allocate(bytes);
    const size_t size = (bytes + kGranule - 1) / kGranule * kGranule;
    Block block = pool().take(size);
    if (block.data == nullptr) {
      TORCH_CHECK(posix_memalign(&block.data, kAlignment, size) == 0,
                  "ipex-shim: not enough memory for a buffer of ", size, " bytes");
      pool().count_new(block);
    }
    return {block.data, block.data, &release, c10::Device(c10::DeviceType::CPU)};
  }
  c10::DeleterFnPtr raw_deleter() const override { return &release; }
  // Torch 2.x's Allocator copies through this (Tensor.clone of a storage); 1.13 has no such
  // virtual, and there it is an unused member.
  void copy_data(void* dest, const void* src, std::size_t count) const {
    if (count > 0) std::memcpy(dest, src, count);
  }

 private:
  const size_t smallest_;
};

// The process's CPU allocator once serve_all_cpu_tensors took its place.
PoolAllocator& allocator() {
  static PoolAllocator* instance = new PoolAllocator(kSmallestOfProcess);
  return *instance;
}

PoolAllocator& shim_allocator() {
  static PoolAllocator* instance = new PoolAllocator(kSmallestOfShim);
  return *instance;
}

}  // namespace

at::Tensor pooled_empty(c10::IntArrayRef sizes, at::ScalarType dtype, at::MemoryFormat format) {
  return at::Tensor(at::detail::empty_generic(sizes, &shim_allocator(),
                                              c10::DispatchKeySet(c10::DispatchKey::CPU), dtype,
                                              format));
}

void set_buffer_cache_limit(size_t bytes) { pool().set_limit(bytes); }

bool serve_all_cpu_tensors() {
  // Above the default allocator's priority (0), so that a later registration at the default
  // priority does not undo it.
  c10::Allocator* current = c10::GetCPUAllocator();
  if (current == &allocator()) return true;
  g_beneath.store(current, std::memory_order_release);
  c10::SetCPUAllocator(&allocator(), /*priority=*/1);
  return serves_all_cpu_tensors();
}

bool serves_all_cpu_tensors() { return c10::GetCPUAllocator() == &allocator(); }

BufferPoolStats buffer_pool_stats() {
  Pool& p = pool();
  std::lock_guard<std::mutex> lock(p.mutex);
  BufferPoolStats out;
  out.limit = p.limit;
  out.cached_bytes = p.cached_bytes;
  out.cached_buffers = p.kept.size();
  out.in_use_bytes = p.in_use_bytes;
  out.reused = p.reused;
  out.allocated = p.allocated;
  return out;
}

void release_cached_buffers() {
  const size_t limit = buffer_pool_stats().limit;
  pool().set_limit(0);
  pool().set_limit(limit);
}

}  // namespace ipex_shim
