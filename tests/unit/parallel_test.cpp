// The shim's loops on torch's threads (kernels/parallel.h): a range large enough is split
// over more than one thread (compiled without OpenMP, at::parallel_for ran every loop of the
// shim on the calling thread), every index is visited once, and small ranges or one thread
// stay on the caller.
#include <gtest/gtest.h>

#include <ATen/Parallel.h>

#include <algorithm>
#include <mutex>
#include <numeric>
#include <set>
#include <thread>
#include <vector>

#include "kernels/parallel.h"

namespace ipex_shim {
namespace {

class ParallelTest : public ::testing::Test {
 protected:
  void SetUp() override { threads_ = at::get_num_threads(); }
  void TearDown() override { at::set_num_threads(threads_); }
  int threads_ = 1;
};

// The threads that ran parts of a parallel_for over [0, n) with this grain, and how often
// each index was visited.
std::set<std::thread::id> threads_of(int64_t n, int64_t grain, std::vector<int>* visits) {
  std::mutex mutex;
  std::set<std::thread::id> ids;
  visits->assign(n, 0);
  parallel_for(0, n, grain, [&](int64_t begin, int64_t end) {
    {
      std::lock_guard<std::mutex> lock(mutex);
      ids.insert(std::this_thread::get_id());
    }
    for (int64_t i = begin; i < end; ++i) ++(*visits)[i];
  });
  return ids;
}

TEST_F(ParallelTest, ALargeRangeRunsOnMoreThanOneThreadVisitingEachIndexOnce) {
  if (std::thread::hardware_concurrency() < 2) GTEST_SKIP() << "one CPU: nothing to split over";
  at::set_num_threads(2);
  std::vector<int> visits;
  const auto ids = threads_of(1 << 20, 1024, &visits);
  EXPECT_GE(ids.size(), 2u) << "the loop ran on one thread: the shim's loops are serial";
  EXPECT_EQ(std::count(visits.begin(), visits.end(), 1), static_cast<long>(visits.size()));
}

TEST_F(ParallelTest, ASmallRangeOrOneThreadStaysOnTheCaller) {
  at::set_num_threads(2);
  std::vector<int> visits;
  auto ids = threads_of(100, 1024, &visits);
  EXPECT_EQ(ids, std::set<std::thread::id>{std::this_thread::get_id()});
  EXPECT_EQ(std::count(visits.begin(), visits.end(), 1), 100);
  at::set_num_threads(1);
  ids = threads_of(1 << 20, 1024, &visits);
  EXPECT_EQ(ids, std::set<std::thread::id>{std::this_thread::get_id()});
  EXPECT_EQ(std::count(visits.begin(), visits.end(), 1), 1 << 20);
}

TEST_F(ParallelTest, ParallelCopyCopiesEveryByteOfOddSizes) {
  at::set_num_threads(2);
  for (int64_t bytes : {int64_t{0}, int64_t{1}, int64_t{4097}, (int64_t{3} << 20) + 7}) {
    std::vector<unsigned char> from(bytes), to(bytes + 1, 0xAB);
    for (int64_t i = 0; i < bytes; ++i) from[i] = static_cast<unsigned char>(i * 131 + 7);
    parallel_copy(to.data(), from.data(), bytes);
    EXPECT_TRUE(std::equal(from.begin(), from.end(), to.begin())) << bytes << " bytes";
    EXPECT_EQ(to[bytes], 0xAB) << "wrote past " << bytes << " bytes";
  }
}

}  // namespace
}  // namespace ipex_shim
