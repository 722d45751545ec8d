// The convolution kernel against ATen's fp32 convolution, in fp32 and BF16: odd sizes,
// groups (depthwise too), dilation, stride, padding, with and without bias, 1-D/2-D/3-D,
// and the memory format of the result.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include "kernels/convolution.h"
#include "reference.h"

namespace ipex_shim {
namespace {

using testing::ConvCase;

class Convolution : public ::testing::TestWithParam<std::tuple<ConvCase, Precision>> {};

// Seeded random input, weight and (if the case has one) bias for a case.
struct ConvInputs {
  at::Tensor input, weight;
  c10::optional<at::Tensor> bias;
};

ConvInputs make_inputs(const ConvCase& c, uint64_t seed) {
  at::manual_seed(seed);
  ConvInputs made{at::randn(c.input), at::randn(c.weight), c10::nullopt};
  if (c.bias) made.bias = at::randn({c.weight[0]});
  return made;
}

TEST_P(Convolution, MatchesAtenReference) {
  const auto& [c, precision] = GetParam();
  IPEX_SKIP_BF16_UNLESS_SUPPORTED(precision);
  auto [input, weight, bias] = make_inputs(c, 7);
  ConvolutionArgs args{c.stride, c.padding, c.dilation, c.groups};
  ASSERT_EQ(convolution_support(input, weight, bias, args), Fallback::none);

  at::Tensor expected = at::convolution(input.to(at::kDouble), weight.to(at::kDouble),
                                        bias ? c10::optional<at::Tensor>(bias->to(at::kDouble))
                                             : c10::nullopt,
                                        c.stride, c.padding, c.dilation, false,
                                        std::vector<int64_t>(c.stride.size(), 0), c.groups);
  at::Tensor actual = convolution_forward(input, weight, bias, args, precision);
  EXPECT_TRUE(actual.is_contiguous());
  testing::expect_close(actual, expected, precision);

  // The primitive and the packed weight are reused on the second call: same answer.
  at::Tensor again = convolution_forward(input, weight, bias, args, precision);
  EXPECT_TRUE(at::equal(actual, again));
}

TEST_P(Convolution, ReluPostOpMatchesReluOfReference) {
  const auto& [c, precision] = GetParam();
  IPEX_SKIP_BF16_UNLESS_SUPPORTED(precision);
  auto [input, weight, bias] = make_inputs(c, 8);
  ConvolutionArgs args{c.stride, c.padding, c.dilation, c.groups};
  at::Tensor expected = at::relu(at::convolution(input, weight, bias, c.stride, c.padding,
                                                 c.dilation, false,
                                                 std::vector<int64_t>(c.stride.size(), 0),
                                                 c.groups));
  at::Tensor actual = convolution_forward(input, weight, bias, args, precision, {nullptr, true});
  testing::expect_close(actual, expected, precision);
  EXPECT_GE(actual.min().item<float>(), 0.f);
}

// relu6 (hardtanh(0, 6)) as the relu's upper clamp: values beyond 6 must be cut there.
TEST_P(Convolution, ClampPostOpMatchesRelu6OfReference) {
  const auto& [c, precision] = GetParam();
  IPEX_SKIP_BF16_UNLESS_SUPPORTED(precision);
  auto [input, weight, bias] = make_inputs(c, 9);
  ConvolutionArgs args{c.stride, c.padding, c.dilation, c.groups};
  at::Tensor plain = at::convolution(input, weight, bias, c.stride, c.padding, c.dilation, false,
                                     std::vector<int64_t>(c.stride.size(), 0), c.groups);
  const float upper = 0.5f * plain.max().item<float>();  // half the values above: work to do
  ConvolutionPostOps clamp;
  clamp.relu = true;
  clamp.relu_upper = upper;
  at::Tensor actual = convolution_forward(input, weight, bias, args, precision, clamp);
  testing::expect_close(actual, at::clamp(plain, 0.0, upper), precision);
  EXPECT_GE(actual.min().item<float>(), 0.f);
  // BF16 writes the bound rounded to BF16 (half a step of 2^-8 up at most).
  EXPECT_LE(actual.max().item<float>(),
            precision == Precision::bf16 ? upper * (1.f + 1.f / 256.f) : upper);
}

// silu and hardswish as the convolution's post-op: both keep negative values (silu's minimum
// is about -0.28, hardswish's -0.375), so a relu in their place, or a missing post-op, is far
// outside the tolerance on these inputs (the plain results span roughly -10 to 10).
TEST_P(Convolution, SiluAndHardswishPostOpsMatchTheirReference) {
  const auto& [c, precision] = GetParam();
  IPEX_SKIP_BF16_UNLESS_SUPPORTED(precision);
  auto [input, weight, bias] = make_inputs(c, 11);
  ConvolutionArgs args{c.stride, c.padding, c.dilation, c.groups};
  at::Tensor plain = testing::conv_double(input, weight, bias, args);
  using Activation = ConvolutionPostOps::Activation;
  for (Activation activation : {Activation::silu, Activation::hardswish}) {
    SCOPED_TRACE(activation == Activation::silu ? "silu" : "hardswish");
    ConvolutionPostOps post_ops;
    post_ops.activation = activation;
    at::Tensor expected = activation == Activation::silu ? at::silu(plain) : at::hardswish(plain);
    at::Tensor actual = convolution_forward(input, weight, bias, args, precision, post_ops);
    testing::expect_close(actual, expected, precision);
    EXPECT_LT(actual.min().item<float>(), -0.05f);  // negatives kept: not a relu
  }
}

TEST_P(Convolution, FoldedBatchNormMatchesConvThenBatchNorm) {
  const auto& [c, precision] = GetParam();
  IPEX_SKIP_BF16_UNLESS_SUPPORTED(precision);
  auto [input, weight, bias] = make_inputs(c, 10);
  const int64_t channels = c.weight[0];
  BatchNormFold fold{at::rand({channels}) + 0.5, at::randn({channels}), at::randn({channels}),
                     at::rand({channels}) + 0.1, 1e-3};
  ConvolutionArgs args{c.stride, c.padding, c.dilation, c.groups};
  at::Tensor conv = at::convolution(input.to(at::kDouble), weight.to(at::kDouble),
                                    bias ? c10::optional<at::Tensor>(bias->to(at::kDouble))
                                         : c10::nullopt,
                                    c.stride, c.padding, c.dilation, false,
                                    std::vector<int64_t>(c.stride.size(), 0), c.groups);
  at::Tensor expected = at::batch_norm(conv, fold.gamma.to(at::kDouble), fold.beta.to(at::kDouble),
                                       fold.mean.to(at::kDouble), fold.var.to(at::kDouble),
                                       false, 0.1, fold.eps, false);
  testing::expect_close(convolution_forward(input, weight, bias, args, precision, {&fold, false}),
                        expected, precision);
  testing::expect_close(convolution_forward(input, weight, bias, args, precision, {&fold, true}),
                        at::relu(expected), precision);
  // affine=False: no gamma and beta.
  BatchNormFold plain{at::Tensor(), at::Tensor(), fold.mean, fold.var, fold.eps};
  at::Tensor expected_plain = at::batch_norm(conv, {}, {}, fold.mean.to(at::kDouble),
                                             fold.var.to(at::kDouble), false, 0.1, fold.eps, false);
  testing::expect_close(convolution_forward(input, weight, bias, args, precision, {&plain, false}),
                        expected_plain, precision);
}

const ConvCase kCases[] = {
    {"plain3x3", {2, 8, 9, 11}, {16, 8, 3, 3}, {1, 1}, {1, 1}, {1, 1}, 1, true},
    {"stride2_nobias", {3, 5, 13, 7}, {7, 5, 3, 3}, {2, 2}, {0, 0}, {1, 1}, 1, false},
    {"asymmetric_stride_pad", {1, 3, 17, 10}, {6, 3, 5, 2}, {3, 1}, {2, 1}, {1, 1}, 1, true},
    {"dilation2", {2, 4, 15, 15}, {4, 4, 3, 3}, {1, 1}, {2, 2}, {2, 2}, 1, true},
    {"groups3", {2, 6, 10, 10}, {9, 2, 3, 3}, {1, 1}, {1, 1}, {1, 1}, 3, true},
    {"depthwise", {2, 12, 9, 9}, {12, 1, 3, 3}, {2, 2}, {1, 1}, {1, 1}, 12, false},
    {"pointwise", {4, 32, 7, 7}, {64, 32, 1, 1}, {1, 1}, {0, 0}, {1, 1}, 1, false},
    {"odd_rows_dropped", {1, 2, 8, 8}, {3, 2, 3, 3}, {3, 3}, {0, 0}, {1, 1}, 1, true},
    {"conv1d", {3, 5, 31}, {4, 5, 4}, {2}, {1}, {1}, 1, true},
    {"conv1d_grouped_dilated", {2, 4, 20}, {6, 2, 3}, {1}, {2}, {3}, 2, false},
    {"conv3d", {2, 3, 6, 7, 5}, {5, 3, 3, 3, 3}, {1, 2, 1}, {1, 0, 1}, {1, 1, 1}, 1, true},
};

INSTANTIATE_TEST_SUITE_P(
    Kernels, Convolution,
    ::testing::Combine(::testing::ValuesIn(kCases),
                       ::testing::Values(Precision::fp32, Precision::bf16)),
    [](const auto& info) {
      return std::string(std::get<0>(info.param).name) + "_" +
             precision_name(std::get<1>(info.param));
    });

struct TransposedCase {
  const char* name;
  std::vector<int64_t> input;   // N, C_in, spatial...
  std::vector<int64_t> weight;  // C_in, C_out/groups, kernel...
  std::vector<int64_t> stride, padding, output_padding, dilation;
  int64_t groups;
  bool bias;
};

class TransposedConvolution
    : public ::testing::TestWithParam<std::tuple<TransposedCase, Precision>> {};

TEST_P(TransposedConvolution, MatchesAtenReference) {
  const auto& [c, precision] = GetParam();
  IPEX_SKIP_BF16_UNLESS_SUPPORTED(precision);
  at::manual_seed(9);
  at::Tensor input = at::randn(c.input);
  at::Tensor weight = at::randn(c.weight);
  c10::optional<at::Tensor> bias;
  if (c.bias) bias = at::randn({c.weight[1] * c.groups});
  ConvolutionArgs args{c.stride, c.padding, c.dilation, c.groups, true, c.output_padding};
  ASSERT_EQ(convolution_support(input, weight, bias, args), Fallback::none);
  at::Tensor expected = at::convolution(
      input.to(at::kDouble), weight.to(at::kDouble),
      bias ? c10::optional<at::Tensor>(bias->to(at::kDouble)) : c10::nullopt, c.stride,
      c.padding, c.dilation, true, c.output_padding, c.groups);
  at::Tensor actual = convolution_forward(input, weight, bias, args, precision);
  testing::expect_close(actual, expected, precision);
}

const TransposedCase kTransposedCases[] = {
    {"upsample2x", {2, 8, 7, 9}, {8, 4, 4, 4}, {2, 2}, {1, 1}, {0, 0}, {1, 1}, 1, true},
    {"output_padding", {1, 6, 5, 5}, {6, 3, 3, 3}, {2, 2}, {1, 1}, {1, 1}, {1, 1}, 1, false},
    {"grouped_dilated", {2, 6, 6, 5}, {6, 2, 3, 3}, {1, 2}, {2, 1}, {0, 1}, {2, 1}, 3, true},
    {"transpose1d", {3, 4, 11}, {4, 5, 3}, {3}, {2}, {2}, {1}, 1, true},
    {"transpose3d", {1, 3, 4, 5, 3}, {3, 2, 3, 3, 3}, {2, 1, 2}, {1, 1, 1}, {1, 0, 1}, {1, 1, 1},
     1, false},
};

INSTANTIATE_TEST_SUITE_P(
    Kernels, TransposedConvolution,
    ::testing::Combine(::testing::ValuesIn(kTransposedCases),
                       ::testing::Values(Precision::fp32, Precision::bf16)),
    [](const auto& info) {
      return std::string(std::get<0>(info.param).name) + "_" +
             precision_name(std::get<1>(info.param));
    });

TEST(TransposedConvolutionSupport, OutputPaddingBeyondPaddingGoesToStock) {
  at::Tensor input = at::randn({1, 4, 5, 5});
  at::Tensor weight = at::randn({4, 2, 3, 3});
  const std::vector<int64_t> two = {2, 2}, zero = {0, 0}, one = {1, 1};
  ConvolutionArgs args{two, zero, one, 1, true, one};  // output_padding 1 > padding 0
  EXPECT_EQ(convolution_support(input, weight, c10::nullopt, args), Fallback::unsupported_shape);
}

TEST(ConvolutionFormat, ChannelsLastInputGivesChannelsLastOutput) {
  IPEX_SKIP_UNLESS_BF16_KERNELS();
  at::manual_seed(3);
  at::Tensor input = at::randn({2, 8, 10, 10}).contiguous(at::MemoryFormat::ChannelsLast);
  at::Tensor weight = at::randn({4, 8, 3, 3});
  const std::vector<int64_t> ones = {1, 1};
  ConvolutionArgs args{ones, ones, ones, 1};
  for (Precision precision : {Precision::fp32, Precision::bf16}) {
    at::Tensor actual = convolution_forward(input, weight, c10::nullopt, args, precision);
    at::Tensor expected = at::conv2d(input, weight, {}, 1, 1);
    EXPECT_EQ(actual.is_contiguous(at::MemoryFormat::ChannelsLast),
              expected.is_contiguous(at::MemoryFormat::ChannelsLast));
    EXPECT_EQ(actual.is_contiguous(), expected.is_contiguous());
    testing::expect_close(actual, expected, precision);
  }
}

TEST(ConvolutionSupport, RefusesWhatTheKernelDoesNotTake) {
  at::Tensor weight = at::randn({4, 3, 3, 3});
  const std::vector<int64_t> ones = {1, 1}, zeros = {0, 0};
  ConvolutionArgs args{ones, zeros, ones, 1};
  EXPECT_EQ(convolution_support(at::randn({1, 3, 8, 8}, at::kDouble), weight, {}, args),
            Fallback::unsupported_dtype);
  EXPECT_EQ(convolution_support(at::randn({3, 8, 8}), weight, {}, args),
            Fallback::unsupported_shape);  // unbatched input
  EXPECT_EQ(convolution_support(at::randn({1, 4, 8, 8}), weight, {}, args),
            Fallback::unsupported_shape);  // channel mismatch: stock raises its own error
  EXPECT_EQ(convolution_support(at::randn({1, 3, 2, 2}), weight, {}, args),
            Fallback::unsupported_shape);  // kernel larger than padded input
  at::Tensor strided = at::randn({1, 3, 8, 16}).slice(3, 0, 16, 2);
  EXPECT_EQ(convolution_support(strided, weight, {}, args), Fallback::unsupported_shape);
  EXPECT_EQ(convolution_support(at::randn({1, 3, 8, 8}), weight, {}, args), Fallback::none);
}

}  // namespace
}  // namespace ipex_shim
