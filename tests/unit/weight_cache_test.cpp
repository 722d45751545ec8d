// The packed-weight cache never returns stale weights and frees entries of dead weights.
#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "kernels/matmul.h"
#include "kernels/weight_cache.h"
#include "reference.h"

namespace ipex_shim {
namespace {

// Each case starts from an empty cache so that counts are this test's own.
class WeightCacheTest : public ::testing::Test {
 protected:
  void SetUp() override { weight_cache().clear(); }
  at::Tensor input = at::randn({4, 8});
};

TEST_F(WeightCacheTest, SecondCallReusesThePackedWeight) {
  at::Tensor weight = at::randn({6, 8});
  linear_forward(input, weight, c10::nullopt, Precision::fp32);
  linear_forward(input, weight, c10::nullopt, Precision::fp32);
  WeightCache::Stats stats = weight_cache().stats();
  EXPECT_EQ(stats.entries, 1u);
  EXPECT_GE(stats.hits, 1u);
  EXPECT_GT(stats.bytes, 0u);
}

TEST_F(WeightCacheTest, InPlaceUpdateIsSeen) {  // optimizer.step(), load_state_dict
  at::Tensor weight = at::randn({6, 8});
  at::Tensor before = linear_forward(input, weight, c10::nullopt, Precision::fp32);
  weight.mul_(-2);  // bumps the version counter
  at::Tensor after = linear_forward(input, weight, c10::nullopt, Precision::fp32);
  testing::expect_close(after, at::linear(input, weight), Precision::fp32);
  testing::expect_close(after, before * -2, Precision::fp32);
}

TEST_F(WeightCacheTest, CopyUnderNoGradIsSeen) {
  torch::Tensor weight = torch::randn({6, 8}, torch::requires_grad());
  linear_forward(input, weight.detach(), c10::nullopt, Precision::fp32);
  {
    torch::NoGradGuard no_grad;
    weight.copy_(torch::randn({6, 8}));
  }
  at::Tensor actual = linear_forward(input, weight.detach(), c10::nullopt, Precision::fp32);
  testing::expect_close(actual, at::linear(input, weight.detach()), Precision::fp32);
}

TEST_F(WeightCacheTest, NewDataPointerIsSeen) {  // `w.data = other`
  torch::Tensor weight = torch::randn({6, 8});
  linear_forward(input, weight, c10::nullopt, Precision::fp32);
  weight.set_data(torch::randn({6, 8}));
  at::Tensor actual = linear_forward(input, weight, c10::nullopt, Precision::fp32);
  testing::expect_close(actual, at::linear(input, weight), Precision::fp32);
}

TEST_F(WeightCacheTest, NewShapeIsSeen) {
  torch::Tensor weight = torch::randn({6, 8});
  linear_forward(input, weight, c10::nullopt, Precision::fp32);
  weight.set_data(torch::randn({3, 8}));
  at::Tensor actual = linear_forward(input, weight, c10::nullopt, Precision::fp32);
  EXPECT_EQ(actual.size(1), 3);
  testing::expect_close(actual, at::linear(input, weight), Precision::fp32);
}

TEST_F(WeightCacheTest, DeadWeightsAreFreed) {
  for (int i = 0; i < 5; ++i) {
    at::Tensor weight = at::randn({64, 8});
    linear_forward(input, weight, c10::nullopt, Precision::fp32);
  }  // each weight dies here
  at::Tensor alive = at::randn({6, 8});
  linear_forward(input, alive, c10::nullopt, Precision::fp32);
  WeightCache::Stats stats = weight_cache().stats();
  EXPECT_EQ(stats.entries, 1u);
  EXPECT_EQ(stats.packs, 6u);
}

TEST_F(WeightCacheTest, RecycledAddressIsNotMistakenForTheOldWeight) {
  // A new tensor may reuse the freed TensorImpl's address; the weak reference tells them apart.
  at::Tensor expected;
  for (int i = 0; i < 20; ++i) {
    at::Tensor weight = at::full({6, 8}, static_cast<float>(i));
    at::Tensor actual = linear_forward(input, weight, c10::nullopt, Precision::fp32);
    testing::expect_close(actual, at::linear(input, weight), Precision::fp32);
  }
}

}  // namespace
}  // namespace ipex_shim

namespace ipex_shim {
namespace {

TEST_F(WeightCacheTest, NewStorageAtTheOldAddressIsSeen) {
  // `w.data = a; w.data = b` between two calls: with large blocks glibc often hands the new
  // storage the freed one's address, so data_ptr alone would match the stale packed weight.
  at::Tensor big_input = at::randn({2, 2048});
  torch::Tensor weight = torch::randn({2048, 2048});
  linear_forward(big_input, weight, c10::nullopt, Precision::fp32);
  weight.set_data(torch::empty({2048, 2048}).normal_(0, 0.03));
  weight.set_data(weight.detach() * 0.5);
  at::Tensor actual = linear_forward(big_input, weight, c10::nullopt, Precision::fp32);
  testing::expect_close(actual, at::linear(big_input, weight), Precision::fp32);
}

}  // namespace
}  // namespace ipex_shim
