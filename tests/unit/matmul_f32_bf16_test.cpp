// linear and the batched matmul kernel against ATen in double, in fp32 and BF16.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include "kernels/matmul.h"
#include "reference.h"

namespace ipex_shim {
namespace {

class Linear : public ::testing::TestWithParam<Precision> {};

TEST_P(Linear, MatchesAtenReferenceWithAndWithoutBias) {
  const Precision precision = GetParam();
  IPEX_SKIP_BF16_UNLESS_SUPPORTED(precision);
  at::manual_seed(11);
  for (bool with_bias : {true, false}) {
    at::Tensor input = at::randn({3, 5, 37});
    at::Tensor weight = at::randn({19, 37});
    c10::optional<at::Tensor> bias;
    if (with_bias) bias = at::randn({19});
    ASSERT_EQ(linear_support(input, weight, bias), Fallback::none);
    at::Tensor expected = at::linear(input.to(at::kDouble), weight.to(at::kDouble),
                                     bias ? c10::optional<at::Tensor>(bias->to(at::kDouble))
                                          : c10::nullopt);
    at::Tensor actual = linear_forward(input, weight, bias, precision);
    EXPECT_EQ(actual.sizes(), (std::vector<int64_t>{3, 5, 19}));
    testing::expect_close(actual, expected, precision);
  }
}

TEST_P(Linear, ActivationsMatchReference) {
  const Precision precision = GetParam();
  IPEX_SKIP_BF16_UNLESS_SUPPORTED(precision);
  at::manual_seed(12);
  at::Tensor input = at::randn({8, 24});
  at::Tensor weight = at::randn({10, 24});
  at::Tensor bias = at::randn({10});
  at::Tensor pre = at::linear(input, weight, bias);
  testing::expect_close(linear_forward(input, weight, bias, precision, MatmulActivation::relu),
                        at::relu(pre), precision);
  testing::expect_close(linear_forward(input, weight, bias, precision, MatmulActivation::gelu_erf),
                        at::gelu(pre), precision);
  testing::expect_close(
      linear_forward(input, weight, bias, precision, MatmulActivation::gelu_tanh),
      at::gelu(pre, "tanh"), precision);
}

TEST_P(Linear, NonContiguousInputAndTransposedWeight) {
  const Precision precision = GetParam();
  IPEX_SKIP_BF16_UNLESS_SUPPORTED(precision);
  at::manual_seed(13);
  at::Tensor input = at::randn({16, 9}).t();          // (9, 16), strided
  at::Tensor weight = at::randn({16, 7}).t();         // (7, 16), column-major
  at::Tensor expected = at::linear(input.to(at::kDouble), weight.to(at::kDouble));
  testing::expect_close(linear_forward(input, weight, c10::nullopt, precision), expected,
                        precision);
}

TEST_P(Linear, SingleVectorInput) {
  const Precision precision = GetParam();
  IPEX_SKIP_BF16_UNLESS_SUPPORTED(precision);
  at::Tensor input = at::randn({13});
  at::Tensor weight = at::randn({4, 13});
  at::Tensor actual = linear_forward(input, weight, c10::nullopt, precision);
  EXPECT_EQ(actual.sizes(), (std::vector<int64_t>{4}));
  testing::expect_close(actual, at::linear(input.to(at::kDouble), weight.to(at::kDouble)),
                        precision);
}

class BatchedMatmul : public ::testing::TestWithParam<Precision> {};

TEST_P(BatchedMatmul, PlainTransposedAndBroadcast) {
  const Precision precision = GetParam();
  IPEX_SKIP_BF16_UNLESS_SUPPORTED(precision);
  at::manual_seed(21);
  struct Case {
    at::Tensor a, b;
  };
  std::vector<Case> cases = {
      {at::randn({5, 7}), at::randn({7, 3})},
      {at::randn({4, 5, 7}), at::randn({4, 7, 3})},
      {at::randn({2, 3, 9, 8}), at::randn({2, 3, 9, 8}).transpose(-1, -2)},  // q k^T
      {at::randn({2, 1, 6, 5}), at::randn({1, 3, 5, 4})},                   // broadcast
      {at::randn({7, 5}).t(), at::randn({7, 3})},                            // a^T b
  };
  for (const Case& c : cases) {
    ASSERT_EQ(batched_matmul_support(c.a, c.b), Fallback::none);
    at::Tensor expected = at::matmul(c.a.to(at::kDouble), c.b.to(at::kDouble));
    at::Tensor actual = batched_matmul(c.a, c.b, precision);
    EXPECT_TRUE(actual.is_contiguous());
    testing::expect_close(actual, expected, precision);
  }
}

TEST_P(BatchedMatmul, AlphaAndBias) {
  const Precision precision = GetParam();
  IPEX_SKIP_BF16_UNLESS_SUPPORTED(precision);
  at::manual_seed(22);
  at::Tensor a = at::randn({3, 6, 5}), b = at::randn({3, 5, 4});
  at::Tensor bias_full = at::randn({3, 6, 4}), bias_row = at::randn({4});
  at::Tensor product = at::bmm(a.to(at::kDouble), b.to(at::kDouble));
  testing::expect_close(batched_matmul(a, b, precision, 0.25f), product * 0.25, precision);
  testing::expect_close(batched_matmul(a, b, precision, 1.f, bias_full),
                        product + bias_full.to(at::kDouble), precision);
  testing::expect_close(batched_matmul(a, b, precision, 2.f, bias_row),
                        product * 2 + bias_row.to(at::kDouble), precision);
}

TEST(BatchedMatmulSupport, RefusesMismatchedShapes) {
  EXPECT_EQ(batched_matmul_support(at::randn({3, 4}), at::randn({5, 6})),
            Fallback::unsupported_shape);
  EXPECT_EQ(batched_matmul_support(at::randn({2, 3, 4}), at::randn({4, 6})),
            Fallback::unsupported_shape);  // different ranks: stock matmul handles it
  EXPECT_EQ(batched_matmul_support(at::randn({3, 4}, at::kDouble), at::randn({4, 6}, at::kDouble)),
            Fallback::unsupported_dtype);
  at::Tensor no_unit_stride = at::randn({8, 8}).slice(0, 0, 8, 2).slice(1, 0, 8, 2);
  EXPECT_EQ(batched_matmul_support(no_unit_stride, at::randn({4, 4})),
            Fallback::unsupported_shape);
}

INSTANTIATE_TEST_SUITE_P(Kernels, Linear, ::testing::Values(Precision::fp32, Precision::bf16),
                         [](const auto& info) { return precision_name(info.param); });
INSTANTIATE_TEST_SUITE_P(Kernels, BatchedMatmul,
                         ::testing::Values(Precision::fp32, Precision::bf16),
                         [](const auto& info) { return precision_name(info.param); });

}  // namespace
}  // namespace ipex_shim
