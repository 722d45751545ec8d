// The kernels' buffer pool (kernels/buffer_pool.h): freed buffers serve the next request of
// their size, the pool never keeps more than its limit, and its tensors behave as at::empty's.
// Installed as the process's CPU allocator (serve_all_cpu_tensors), it must serve at::empty
// the same way, keep data == context with a raw deleter (c10's raw_allocate/raw_deallocate,
// which libtorch's ideep uses), send small requests to PyTorch's default allocator, and free
// memory the default allocator made (before or after the switch) without counting it.
#include <gtest/gtest.h>

#include <ATen/ATen.h>
#include <c10/core/CPUAllocator.h>

#include <cstring>

#include <thread>
#include <vector>

#include "kernels/buffer_pool.h"

namespace ipex_shim {
namespace {

class BufferPoolTest : public ::testing::Test {
 protected:
  void SetUp() override {
    limit_ = buffer_pool_stats().limit;
    release_cached_buffers();
  }
  void TearDown() override {
    set_buffer_cache_limit(limit_);
    release_cached_buffers();
  }
  size_t limit_ = 0;
};

constexpr int64_t kMiB = 1 << 20;

TEST_F(BufferPoolTest, AFreedBufferServesTheNextRequestOfItsSize) {
  set_buffer_cache_limit(64 * kMiB);
  const BufferPoolStats before = buffer_pool_stats();
  const void* first = nullptr;
  {
    at::Tensor t = pooled_empty({4, 256, 64, 64}, at::kFloat);  // 16 MiB
    first = t.data_ptr();
    EXPECT_EQ(buffer_pool_stats().in_use_bytes, before.in_use_bytes + 16 * kMiB);
  }
  EXPECT_EQ(buffer_pool_stats().cached_bytes, static_cast<size_t>(16 * kMiB));
  at::Tensor again = pooled_empty({4, 256, 64, 64}, at::kFloat);
  EXPECT_EQ(again.data_ptr(), first);
  const BufferPoolStats after = buffer_pool_stats();
  EXPECT_EQ(after.reused, before.reused + 1);
  EXPECT_EQ(after.allocated, before.allocated + 1);
  EXPECT_EQ(after.cached_bytes, 0u);
}

TEST_F(BufferPoolTest, AMuchLargerKeptBufferIsNotHandedOut) {
  set_buffer_cache_limit(64 * kMiB);
  { at::Tensor big = pooled_empty({8 * kMiB}, at::kFloat); }  // 32 MiB kept
  const BufferPoolStats before = buffer_pool_stats();
  at::Tensor small = pooled_empty({2 * kMiB}, at::kFloat);  // 8 MiB: a new buffer
  EXPECT_EQ(buffer_pool_stats().allocated, before.allocated + 1);
  EXPECT_EQ(buffer_pool_stats().cached_bytes, static_cast<size_t>(32 * kMiB));
}

TEST_F(BufferPoolTest, KeepsNoMoreThanItsLimitDroppingTheLongestUnused) {
  set_buffer_cache_limit(20 * kMiB);
  const void* oldest = nullptr;
  const void* newest = nullptr;
  {
    at::Tensor a = pooled_empty({2 * kMiB}, at::kFloat);  // 8 MiB
    at::Tensor b = pooled_empty({2 * kMiB}, at::kFloat);
    at::Tensor c = pooled_empty({2 * kMiB}, at::kFloat);
    oldest = a.data_ptr();
    newest = c.data_ptr();
    a.reset();  // released first: dropped when the third comes back
    b.reset();
    c.reset();
  }
  const BufferPoolStats kept = buffer_pool_stats();
  EXPECT_EQ(kept.cached_bytes, static_cast<size_t>(16 * kMiB));
  EXPECT_EQ(kept.cached_buffers, 2u);
  // The two kept ones are b and c: two requests are served without a new buffer, and
  // neither is a's (the allocator may reuse a's freed address only for a new buffer).
  const uint64_t allocated = kept.allocated;
  at::Tensor x = pooled_empty({2 * kMiB}, at::kFloat);
  at::Tensor y = pooled_empty({2 * kMiB}, at::kFloat);
  EXPECT_EQ(buffer_pool_stats().allocated, allocated);
  EXPECT_TRUE(x.data_ptr() == newest || y.data_ptr() == newest);
  (void)oldest;

  // A buffer larger than the limit is never kept; limit 0 keeps nothing.
  set_buffer_cache_limit(0);
  EXPECT_EQ(buffer_pool_stats().cached_bytes, 0u);
  { at::Tensor z = pooled_empty({2 * kMiB}, at::kFloat); }
  EXPECT_EQ(buffer_pool_stats().cached_bytes, 0u);
}

TEST_F(BufferPoolTest, TensorsLookLikeAtEmptysAndResize) {
  at::Tensor t = pooled_empty({3, 40, 70, 90}, at::kFloat, at::MemoryFormat::ChannelsLast);
  at::Tensor stock = at::empty({3, 40, 70, 90}, at::TensorOptions(at::kFloat).memory_format(
                                                    at::MemoryFormat::ChannelsLast));
  EXPECT_EQ(t.sizes(), stock.sizes());
  EXPECT_EQ(t.strides(), stock.strides());
  EXPECT_EQ(t.scalar_type(), at::kFloat);
  EXPECT_TRUE(t.device().is_cpu());
  EXPECT_EQ(reinterpret_cast<uintptr_t>(t.data_ptr()) % 64, 0u);

  // Values written survive a resize to a larger size (a new pool buffer, data copied).
  t.copy_(at::arange(t.numel(), at::kFloat).reshape(t.sizes()));
  at::Tensor expected = t.clone();
  at::Tensor flat = pooled_empty({2 * kMiB}, at::kFloat);
  flat.copy_(at::arange(flat.numel(), at::kFloat));
  flat.resize_({4 * kMiB});
  EXPECT_TRUE(flat.slice(0, 0, 2 * kMiB).equal(at::arange(2 * kMiB, at::kFloat)));
  EXPECT_TRUE(t.equal(expected));

  // Small requests come from PyTorch's allocator, not the pool.
  const BufferPoolStats before = buffer_pool_stats();
  at::Tensor small = pooled_empty({16, 16}, at::kFloat);
  EXPECT_EQ(buffer_pool_stats().allocated, before.allocated);
  EXPECT_EQ(buffer_pool_stats().in_use_bytes, before.in_use_bytes);
}

TEST_F(BufferPoolTest, TheShimsResultsFrom64KiBAreReusedAndTheLatestReleasedComesFirst) {
  set_buffer_cache_limit(64 * kMiB);
  // 256 KiB, under the process allocator's 1 MiB: glibc returned such memory to the kernel
  // between passes, so each pass page-faulted on it again.
  const BufferPoolStats before = buffer_pool_stats();
  const void* older = nullptr;
  const void* newer = nullptr;
  {
    at::Tensor a = pooled_empty({64 * 1024}, at::kFloat);
    at::Tensor b = pooled_empty({64 * 1024}, at::kFloat);
    older = a.data_ptr();
    newer = b.data_ptr();
    EXPECT_EQ(buffer_pool_stats().in_use_bytes, before.in_use_bytes + 512 * 1024);
    a.reset();
    b.reset();
  }
  at::Tensor again = pooled_empty({64 * 1024}, at::kFloat);
  EXPECT_EQ(again.data_ptr(), newer) << "not the buffer released last (its bytes in cache)";
  at::Tensor second = pooled_empty({64 * 1024}, at::kFloat);
  EXPECT_EQ(second.data_ptr(), older);
  EXPECT_EQ(buffer_pool_stats().reused, before.reused + 2);
  EXPECT_EQ(buffer_pool_stats().allocated, before.allocated + 2);
}

TEST_F(BufferPoolTest, ThreadsTakingAndFreeingBuffersLeaveConsistentCounts) {
  set_buffer_cache_limit(64 * kMiB);
  const size_t in_use = buffer_pool_stats().in_use_bytes;
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([t] {
      for (int i = 0; i < 200; ++i) {
        at::Tensor a = pooled_empty({(1 + (i + t) % 3) * kMiB / 2}, at::kFloat);
        a.fill_(static_cast<float>(t));
        ASSERT_EQ(a[0].item<float>(), static_cast<float>(t));
        ASSERT_EQ(a[-1].item<float>(), static_cast<float>(t));
      }
    });
  }
  for (auto& thread : threads) thread.join();
  const BufferPoolStats after = buffer_pool_stats();
  EXPECT_EQ(after.in_use_bytes, in_use);
  EXPECT_LE(after.cached_bytes, static_cast<size_t>(64 * kMiB));
  EXPECT_GT(after.reused, 0u);
}


// The process-wide allocator tests install the pool as c10's CPU allocator and put the
// default allocator back afterwards (at the pool's priority, which a later
// serve_all_cpu_tensors() may take again), so that they hold in any order and the other tests
// of this binary see stock's allocator. Memory either allocator handed out stays valid and is
// freed by its own DataPtr's deleter whichever allocator is current.
class ProcessAllocatorTest : public BufferPoolTest {
 protected:
  void SetUp() override {
    BufferPoolTest::SetUp();
    set_buffer_cache_limit(64 * kMiB);
    ASSERT_TRUE(serve_all_cpu_tensors());
  }
  void TearDown() override {
    c10::SetCPUAllocator(c10::GetDefaultCPUAllocator(), /*priority=*/1);
    BufferPoolTest::TearDown();
  }
};

TEST_F(ProcessAllocatorTest, ServingAllCpuTensorsMakesThePoolTheAllocatorWithDataAsContext) {
  EXPECT_TRUE(serves_all_cpu_tensors());
  c10::Allocator* allocator = c10::GetCPUAllocator();
  EXPECT_NE(allocator, c10::GetDefaultCPUAllocator());
  EXPECT_NE(allocator->raw_deleter(), nullptr);
  const BufferPoolStats before = buffer_pool_stats();
  {
    c10::DataPtr large = allocator->allocate(4 * kMiB);  // the pool's
    ASSERT_NE(large.get(), nullptr);
    EXPECT_EQ(large.get(), large.get_context());
    EXPECT_EQ(large.get_deleter(), allocator->raw_deleter());
    EXPECT_EQ(buffer_pool_stats().in_use_bytes, before.in_use_bytes + 4 * kMiB);
    c10::DataPtr small = allocator->allocate(512 * 1024);  // the default allocator's
    ASSERT_NE(small.get(), nullptr);
    EXPECT_EQ(small.get(), small.get_context());
    EXPECT_EQ(buffer_pool_stats().in_use_bytes, before.in_use_bytes + 4 * kMiB);
  }
  EXPECT_EQ(buffer_pool_stats().in_use_bytes, before.in_use_bytes);
  EXPECT_EQ(buffer_pool_stats().cached_bytes, before.cached_bytes + 4 * kMiB);

  // Calling it again keeps it installed.
  EXPECT_TRUE(serve_all_cpu_tensors());
  EXPECT_TRUE(serves_all_cpu_tensors());
}

TEST_F(ProcessAllocatorTest, AtEmptyReusesAFreedBufferThroughTheProcessAllocator) {
  const BufferPoolStats before = buffer_pool_stats();
  const void* first = nullptr;
  {
    at::Tensor t = at::empty({4, 256, 64, 64});  // 16 MiB, from c10::GetCPUAllocator()
    first = t.data_ptr();
    EXPECT_EQ(buffer_pool_stats().in_use_bytes, before.in_use_bytes + 16 * kMiB);
  }
  EXPECT_EQ(buffer_pool_stats().cached_bytes, before.cached_bytes + 16 * kMiB);
  at::Tensor again = at::empty({16 * kMiB}, at::kByte);
  EXPECT_EQ(again.data_ptr(), first);
  EXPECT_EQ(buffer_pool_stats().reused, before.reused + 1);
  EXPECT_EQ(buffer_pool_stats().allocated, before.allocated + 1);

  // Stock ops' results come from the pool too.
  at::Tensor x = at::ones({4 * kMiB});
  const BufferPoolStats mid = buffer_pool_stats();
  at::Tensor y = x * 2;
  EXPECT_EQ(buffer_pool_stats().in_use_bytes, mid.in_use_bytes + 16 * kMiB);
  EXPECT_EQ(y.sum().item<double>(), 8.0 * kMiB);
}

TEST_F(ProcessAllocatorTest, RawAllocateAndDeallocateRoundTripLargeAndSmall) {
  c10::Allocator* allocator = c10::GetCPUAllocator();
  const BufferPoolStats before = buffer_pool_stats();

  // 4 MiB: the pool's, kept for reuse when freed.
  void* large = allocator->raw_allocate(4 * kMiB);
  ASSERT_NE(large, nullptr);
  std::memset(large, 0x5a, 4 * kMiB);
  EXPECT_EQ(buffer_pool_stats().in_use_bytes, before.in_use_bytes + 4 * kMiB);
  allocator->raw_deallocate(large);
  EXPECT_EQ(buffer_pool_stats().in_use_bytes, before.in_use_bytes);
  EXPECT_EQ(buffer_pool_stats().cached_bytes, before.cached_bytes + 4 * kMiB);
  void* again = allocator->raw_allocate(4 * kMiB);
  EXPECT_EQ(again, large);
  allocator->raw_deallocate(again);

  // 1 KiB: the default allocator's, through the pool's raw deleter, never counted.
  const BufferPoolStats mid = buffer_pool_stats();
  void* small = allocator->raw_allocate(1024);
  ASSERT_NE(small, nullptr);
  std::memset(small, 0x5a, 1024);
  allocator->raw_deallocate(small);
  const BufferPoolStats after = buffer_pool_stats();
  EXPECT_EQ(after.in_use_bytes, mid.in_use_bytes);
  EXPECT_EQ(after.cached_bytes, mid.cached_bytes);
  EXPECT_EQ(after.allocated, mid.allocated);
}

// libtorch's ideep takes scratch memory with raw_allocate from whichever CPU allocator is
// current and frees it with raw_deallocate later, perhaps after the switch: the pool must hand
// memory it did not make to the default allocator, without touching its own counts.
TEST_F(ProcessAllocatorTest, DefaultAllocatorMemoryIsFreedThroughThePoolUncounted) {
  // Made by the default allocator before the switch (put back for the moment) and after it.
  c10::SetCPUAllocator(c10::GetDefaultCPUAllocator(), /*priority=*/1);
  ASSERT_FALSE(serves_all_cpu_tensors());
  void* before_switch = c10::GetCPUAllocator()->raw_allocate(4 * kMiB);
  ASSERT_TRUE(serve_all_cpu_tensors());
  void* after_switch = c10::GetDefaultCPUAllocator()->raw_allocate(4 * kMiB);
  ASSERT_NE(before_switch, nullptr);
  ASSERT_NE(after_switch, nullptr);
  std::memset(before_switch, 1, 4 * kMiB);
  std::memset(after_switch, 2, 4 * kMiB);

  const BufferPoolStats before = buffer_pool_stats();
  c10::GetCPUAllocator()->raw_deallocate(before_switch);
  c10::GetCPUAllocator()->raw_deallocate(after_switch);
  const BufferPoolStats after = buffer_pool_stats();
  EXPECT_EQ(after.in_use_bytes, before.in_use_bytes);
  EXPECT_EQ(after.cached_bytes, before.cached_bytes);
  EXPECT_EQ(after.cached_buffers, before.cached_buffers);
  EXPECT_EQ(after.allocated, before.allocated);
  EXPECT_EQ(after.reused, before.reused);

  // A tensor the default allocator made is freed by its own deleter after the switch.
  c10::SetCPUAllocator(c10::GetDefaultCPUAllocator(), /*priority=*/1);
  at::Tensor stock = at::empty({4 * kMiB});
  ASSERT_TRUE(serve_all_cpu_tensors());
  const BufferPoolStats with_stock = buffer_pool_stats();
  stock.reset();
  EXPECT_EQ(buffer_pool_stats().cached_bytes, with_stock.cached_bytes);
  EXPECT_EQ(buffer_pool_stats().in_use_bytes, with_stock.in_use_bytes);
}

}  // namespace
}  // namespace ipex_shim
