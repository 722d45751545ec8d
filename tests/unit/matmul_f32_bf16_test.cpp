// linear and the batched matmul kernel against ATen in double, in fp32 and BF16; their BF16
// results for a BF16 product that reads them next; the softmax kernel of the composed
// attention.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <limits>
#include <stdexcept>

#include "kernels/matmul.h"
#include "kernels/onednn_compat.h"
#include "kernels/softmax.h"
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

// A result handed on in BF16 is the fp32 result rounded once: within half a BF16 step (2^-9
// relative) of the product in BF16 with an fp32 result, plus the reference's own tolerance.
// A BF16 input (such a handed-on result) is taken as it is, and gives the same as the fp32
// input it was rounded from.
TEST(Bf16Handoff, LinearWritesAndReadsBf16) {
  IPEX_SKIP_UNLESS_BF16_KERNELS();
  at::manual_seed(31);
  at::Tensor input = at::randn({4, 6, 40});
  at::Tensor weight = at::randn({24, 40});
  at::Tensor bias = at::randn({24});
  at::Tensor as_fp32 = linear_forward(input, weight, bias, Precision::bf16,
                                      MatmulActivation::gelu_erf);
  at::Tensor as_bf16 = linear_forward(input, weight, bias, Precision::bf16,
                                      MatmulActivation::gelu_erf, nullptr, true);
  ASSERT_EQ(as_bf16.scalar_type(), at::kBFloat16);
  ASSERT_EQ(as_bf16.sizes(), as_fp32.sizes());
  EXPECT_TRUE(at::allclose(as_bf16.to(at::kFloat), as_fp32, 1.0 / 256, 1e-6));
  at::Tensor next_weight = at::randn({8, 24});
  testing::expect_close(linear_forward(as_bf16, next_weight, c10::nullopt, Precision::bf16),
                        linear_forward(as_bf16.to(at::kFloat), next_weight, c10::nullopt,
                                       Precision::bf16),
                        Precision::fp32);
  EXPECT_THROW(linear_forward(input, weight, bias, Precision::fp32, MatmulActivation::none,
                              nullptr, true),
               std::invalid_argument);
}

// The same handoff into the program's fp32 tensor (kernels/matmul.h LinearHandoff): its bytes
// are exactly the BF16 result above, and the next linear reading them where they lie gives
// what it gives on that BF16 tensor. fp32 products keep nothing.
TEST(Bf16Handoff, LinearKeepsBf16BytesInTheProgramsTensorForTheNextLinear) {
  IPEX_SKIP_UNLESS_BF16_KERNELS();
  at::manual_seed(33);
  at::Tensor input = at::randn({4, 6, 40});
  at::Tensor weight = at::randn({24, 40}), bias = at::randn({24});
  at::Tensor next_weight = at::randn({8, 24}), next_bias = at::randn({8});
  at::Tensor as_bf16 = linear_forward(input, weight, bias, Precision::bf16,
                                      MatmulActivation::gelu_erf, nullptr, true);
  dnnl::memory::desc kept;
  LinearHandoff keep;
  keep.keep_result = true;
  keep.kept = &kept;
  at::Tensor handed = linear_forward(input, weight, bias, Precision::bf16,
                                     MatmulActivation::gelu_erf, nullptr, false, keep);
  ASSERT_EQ(handed.scalar_type(), at::kFloat);
  ASSERT_EQ(handed.sizes(), as_bf16.sizes());
  ASSERT_EQ(onednn::data_type_of(kept), dnnl::memory::data_type::bf16);
  ASSERT_EQ(onednn::dims_of(kept), (dnnl::memory::dims{24, 24}));
  const at::Tensor bytes = at::from_blob(handed.data_ptr(), {4, 6, 24}, at::kBFloat16);
  EXPECT_TRUE(at::equal(bytes, as_bf16));

  LinearHandoff read;
  read.input_layout = &kept;
  EXPECT_TRUE(at::equal(
      linear_forward(handed, next_weight, next_bias, Precision::bf16, MatmulActivation::none,
                     nullptr, false, read),
      linear_forward(as_bf16, next_weight, next_bias, Precision::bf16)));

  dnnl::memory::desc not_kept;
  keep.kept = &not_kept;
  at::Tensor fp32 = linear_forward(input, weight, bias, Precision::fp32, MatmulActivation::none,
                                   nullptr, false, keep);
  EXPECT_EQ(not_kept.get_size(), 0u);
  testing::expect_close(fp32, linear_forward(input, weight, bias, Precision::fp32),
                        Precision::fp32);
}

// The attention's products on strided BF16 views of one projection, scaled, BF16 out.
TEST(Bf16Handoff, BatchedMatmulOnStridedBf16ViewsWithScale) {
  IPEX_SKIP_UNLESS_BF16_KERNELS();
  at::manual_seed(32);
  at::Tensor qkv = at::randn({2, 5, 3, 4, 8}).to(at::kBFloat16);  // (B, T, 3, H, head)
  at::Tensor q = qkv.select(2, 0).permute({0, 2, 1, 3});
  at::Tensor k_t = qkv.select(2, 1).permute({0, 2, 3, 1});
  at::Tensor expected = at::matmul(q.to(at::kDouble), k_t.to(at::kDouble)) * 0.25;
  at::Tensor scores = batched_matmul(q, k_t, Precision::bf16, 0.25f);
  ASSERT_EQ(scores.scalar_type(), at::kFloat);
  testing::expect_close(scores, expected, Precision::fp32);  // exact products of BF16 inputs
  at::Tensor rounded = batched_matmul(q, k_t, Precision::bf16, 0.25f, at::Tensor(), true);
  ASSERT_EQ(rounded.scalar_type(), at::kBFloat16);
  EXPECT_TRUE(at::allclose(rounded.to(at::kFloat), scores, 1.0 / 256, 1e-6));
}

// On a oneDNN whose reorders lose values (onednn_context.h) the shim stays off and runs none
// of these kernels, which give wrong results there: every kernel test of this binary is
// skipped, saying why (registered from here for the whole binary).
class OnednnSelfCheckEnvironment : public ::testing::Environment {
 public:
  void SetUp() override {
    const std::string failed = onednn_reorder_self_check();
    if (!failed.empty())
      GTEST_SKIP() << "oneDNN " << onednn_version() << " lost values in a reorder on this CPU ("
                   << failed << "); the shim stays off here, so its kernels are not tested";
  }
};
const ::testing::Environment* const kSelfCheck =
    ::testing::AddGlobalTestEnvironment(new OnednnSelfCheckEnvironment);

// Where the tests run, the start-up check finds this oneDNN's reorders exact.
TEST(OnednnSelfCheck, ReordersIntoPaddedBlocksKeepEveryValue) {
  EXPECT_EQ(onednn_reorder_self_check(), "");
}

TEST(Softmax, LastDimMatchesAtenInDouble) {
  at::manual_seed(33);
  at::Tensor scores = at::randn({2, 3, 7, 19}) * 6;
  scores[0][0][0].fill_(1e4);            // one row far beyond exp's range: the max is taken out
  scores[1][2][3][5] = -std::numeric_limits<float>::infinity();  // a left-out key
  ASSERT_TRUE(softmax_last_dim_supported(scores));
  at::Tensor expected = at::softmax(scores.to(at::kDouble), -1);
  at::Tensor actual = softmax_last_dim(scores, false);
  ASSERT_EQ(actual.scalar_type(), at::kFloat);
  ASSERT_EQ(actual.sizes(), scores.sizes());
  EXPECT_LE((actual.to(at::kDouble) - expected).abs().max().item<double>(), 1e-6);
  EXPECT_EQ(actual[1][2][3][5].item<float>(), 0.f);
  at::Tensor written_over = scores.clone();
  at::Tensor same = softmax_last_dim(written_over, false, true);
  EXPECT_TRUE(same.is_same(written_over));
  EXPECT_TRUE(at::equal(written_over, actual));
  if (onednn_has_bf16_kernels()) {
    // oneDNN's BF16 destination is not the exact result rounded once (half a BF16 step,
    // 2^-9 relative): here 0.05615 for 0.05643, 1.15 steps off. Within two steps (2^-7).
    at::Tensor rounded = softmax_last_dim(scores, true);
    ASSERT_EQ(rounded.scalar_type(), at::kBFloat16);
    EXPECT_TRUE(at::allclose(rounded.to(at::kDouble), expected, 1.0 / 128, 1e-6));
  }
}

// The probabilities quantised for an INT8 product, written by the softmax itself: within one
// u8 step of round(p * scale) of the exact softmax (oneDNN's fp32 softmax is off by up to
// 1e-6, which moves a value sitting on a half step to either side), saturated at 255 for a
// scale that takes p beyond it, and refused for a scale that is not a positive number.
TEST(Softmax, U8ResultIsTheProbabilitiesQuantisedWithTheScale) {
  at::manual_seed(34);
  at::Tensor scores = at::randn({2, 3, 7, 19}) * 4;
  scores[1][2][3][5] = -std::numeric_limits<float>::infinity();
  at::Tensor exact = at::softmax(scores.to(at::kDouble), -1);
  for (float scale : {255.f, 255.f / 0.6f, 1000.f}) {
    at::Tensor q = softmax_last_dim_u8(scores, scale);
    ASSERT_EQ(q.scalar_type(), at::kByte);
    ASSERT_EQ(q.sizes(), scores.sizes());
    at::Tensor expected = at::clamp(at::round(exact * scale), 0, 255);
    EXPECT_LE((q.to(at::kDouble) - expected).abs().max().item<double>(), 1.0) << scale;
    EXPECT_GE((q.to(at::kDouble) == expected).to(at::kDouble).mean().item<double>(), 0.99)
        << scale;
    EXPECT_EQ(q[1][2][3][5].item<uint8_t>(), 0);
    if (scale == 1000.f) EXPECT_EQ(q.max().item<uint8_t>(), 255);
  }
  EXPECT_THROW(softmax_last_dim_u8(scores, 0.f), std::invalid_argument);
  EXPECT_THROW(softmax_last_dim_u8(scores, std::numeric_limits<float>::quiet_NaN()),
               std::invalid_argument);
}

TEST(Softmax, SupportRefusesWhatTheKernelDoesNotTake) {
  EXPECT_FALSE(softmax_last_dim_supported(at::randn({4, 6}).t()));     // not contiguous
  EXPECT_FALSE(softmax_last_dim_supported(at::randn({4, 6}, at::kDouble)));
  EXPECT_FALSE(softmax_last_dim_supported(at::randn({0, 6})));
  EXPECT_FALSE(softmax_last_dim_supported(at::Tensor()));
}

INSTANTIATE_TEST_SUITE_P(Kernels, Linear, ::testing::Values(Precision::fp32, Precision::bf16),
                         [](const auto& info) { return precision_name(info.param); });
INSTANTIATE_TEST_SUITE_P(Kernels, BatchedMatmul,
                         ::testing::Values(Precision::fp32, Precision::bf16),
                         [](const auto& info) { return precision_name(info.param); });

}  // namespace
}  // namespace ipex_shim
