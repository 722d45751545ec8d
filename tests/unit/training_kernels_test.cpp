// The BF16 training kernels (kernels/convolution_training.h, kernels/linear_training.h):
// forward and backward against the exact math on BF16-rounded operands, computed in double.
// The kernels round the input, the weight and the output gradient to BF16 and accumulate in
// fp32 (the linear's bias gradient alone sums the fp32 output gradient), so what remains
// against that reference is fp32 accumulation order only; a forgotten rounding, a
// transposed weight or a wrong layout is orders of magnitude further off.
// Also: which gradients come back for which `wanted`, strided output gradients, reuse of the
// saved state, the results' sizes and strides, and what the support checks refuse.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <array>
#include <string>
#include <vector>

#include "kernels/convolution_training.h"
#include "kernels/linear_training.h"
#include "reference.h"

namespace ipex_shim {
namespace {

using testing::relative_error;

// Largest |actual - expected| relative to the largest |expected|, for results compared with
// the BF16-rounded reference in double. Observed on an AMD EPYC with avx512_bf16 (oneDNN
// 2.6.3, 2 threads), over every case below: forward outputs at most 2.0e-7, input
// gradients 2.4e-7, weight gradients 1.6e-7, the convolution's bias gradients 0 (sums of
// BF16 values, exact in fp32 here) and the linear's bias gradients 6.8e-8 (against the
// fp32 sum, see below). 2e-6 leaves ~8x for other ISAs' and thread counts' accumulation
// orders.
// Against the same math WITHOUT the BF16 rounding (fp32 operands and output gradient, in
// double) the kernels are 1.3e-3 to 3.8e-3 off (forward 1.9e-3..3.2e-3, input gradients
// 1.9e-3..3.0e-3, weight gradients 2.1e-3..3.8e-3, convolution bias gradients
// 1.3e-3..3.5e-3; the linear's bias against the rounded sum 6.5e-4..1.8e-3): at least 300
// times this bound, so an operand left unrounded (or a gradient rounded that should not
// be) fails it. A weight read with its window transposed (or, 1-D and linear, reversed)
// is off by 0.97..1.75, as any misread layout would be. kUnroundedAtLeast is asserted on
// every comparison, so the tolerance keeps telling the rounded math from the unrounded.
constexpr double kTolerance = 2e-6;
constexpr double kUnroundedAtLeast = 100 * kTolerance;

at::Tensor bf16_double(const at::Tensor& tensor) {
  return tensor.to(at::kBFloat16).to(at::kDouble);
}

// `actual` within kTolerance of `expected`, and at least kUnroundedAtLeast from
// `different` (the same math rounded otherwise: the comparison can tell them apart).
void expect_matches(const at::Tensor& actual, const at::Tensor& expected,
                    const at::Tensor& different, const std::string& what) {
  ASSERT_TRUE(actual.defined()) << what;
  ASSERT_EQ(actual.sizes(), expected.sizes()) << what;
  EXPECT_EQ(actual.scalar_type(), at::kFloat) << what;
  EXPECT_TRUE(actual.is_contiguous()) << what;
  EXPECT_LE(relative_error(actual, expected), kTolerance) << what << " against its reference";
  EXPECT_GE(relative_error(actual, different), kUnroundedAtLeast)
      << what << " against the differently rounded reference";
}

// ---------------------------------------------------------------------------------------
// Convolution.

using TrainingConvCase = testing::ConvCase;  // reference.h

const TrainingConvCase kConvCases[] = {
    // Channels multiples of 16: the aBcd16b (blocked) activations path.
    {"blocked2d_bias_stride2", {2, 32, 11, 10}, {48, 32, 3, 3}, {2, 2}, {1, 1}, {1, 1}, 1, true},
    // A network's stem: 3 input channels, 7x7, stride 2, padding 3, no bias.
    {"stem7x7", {2, 3, 30, 27}, {16, 3, 7, 7}, {2, 2}, {3, 3}, {1, 1}, 1, false},
    {"grouped4_dilated2", {2, 8, 13, 12}, {12, 2, 3, 3}, {1, 1}, {2, 2}, {2, 2}, 4, true},
    {"conv1d_groups2", {3, 6, 29}, {8, 3, 5}, {2}, {2}, {1}, 2, true},
    {"conv3d", {2, 4, 6, 7, 5}, {8, 4, 3, 3, 3}, {1, 2, 1}, {1, 1, 0}, {1, 1, 1}, 1, true},
};

struct ConvData {
  at::Tensor input, weight, bias;  // bias undefined without one
};

ConvData make_conv_data(const TrainingConvCase& c, uint64_t seed) {
  at::manual_seed(seed);
  ConvData d{at::randn(c.input), at::randn(c.weight), at::Tensor()};
  if (c.bias) d.bias = at::randn({c.weight[0]});
  return d;
}

ConvolutionArgs args_of(const TrainingConvCase& c) {
  return ConvolutionArgs{c.stride, c.padding, c.dilation, c.groups};
}

c10::optional<at::Tensor> optional_bias(const at::Tensor& bias) {
  return bias.defined() ? c10::optional<at::Tensor>(bias) : c10::nullopt;
}

at::Tensor conv_reference(const TrainingConvCase& c, const at::Tensor& input,
                          const at::Tensor& weight, const at::Tensor& bias) {
  return at::convolution(input, weight,
                         bias.defined() ? c10::optional<at::Tensor>(bias.to(at::kDouble))
                                        : c10::nullopt,
                         c.stride, c.padding, c.dilation, false,
                         std::vector<int64_t>(c.stride.size(), 0), c.groups);
}

// Stock's gradients in double of (grad_output, input, weight) as given.
std::array<at::Tensor, 3> conv_backward_reference(const TrainingConvCase& c,
                                                  const at::Tensor& grad_output,
                                                  const at::Tensor& input,
                                                  const at::Tensor& weight) {
  std::vector<int64_t> bias_sizes;
  if (c.bias) bias_sizes.push_back(c.weight[0]);
  auto grads = at::convolution_backward(
      grad_output, input, weight,
      c.bias ? at::OptionalIntArrayRef(bias_sizes) : at::OptionalIntArrayRef(c10::nullopt),
      c.stride, c.padding, c.dilation, false, std::vector<int64_t>(c.stride.size(), 0),
      c.groups, {true, true, c.bias});
  return {std::get<0>(grads), std::get<1>(grads), std::get<2>(grads)};
}

// The same values as `tensor` with non-contiguous strides (dimensions 0 and 1 swapped in
// memory): a transposed copy transposed back.
at::Tensor strided_copy(const at::Tensor& tensor) {
  at::Tensor strided = tensor.transpose(0, 1).contiguous().transpose(0, 1);
  EXPECT_FALSE(strided.is_contiguous());
  EXPECT_TRUE(at::equal(strided, tensor));
  return strided;
}

class TrainingConvolution : public ::testing::TestWithParam<TrainingConvCase> {};

TEST_P(TrainingConvolution, SupportAccepts) {
  const TrainingConvCase& c = GetParam();
  ConvData d = make_conv_data(c, 1);
  EXPECT_EQ(convolution_training_support(d.input, d.weight, optional_bias(d.bias), args_of(c)),
            Fallback::none);
}

TEST_P(TrainingConvolution, ForwardMatchesRoundedReference) {
  IPEX_SKIP_UNLESS_BF16_KERNELS();
  const TrainingConvCase& c = GetParam();
  ConvData d = make_conv_data(c, 2);
  const ConvolutionArgs args = args_of(c);
  ASSERT_EQ(convolution_training_support(d.input, d.weight, optional_bias(d.bias), args),
            Fallback::none);
  ConvolutionSaved saved;
  at::Tensor output = convolution_training_forward(d.input, d.weight, d.bias, args, &saved);
  EXPECT_TRUE(saved.source.defined());

  at::Tensor rounded =
      conv_reference(c, bf16_double(d.input), bf16_double(d.weight), d.bias);
  at::Tensor unrounded =
      conv_reference(c, d.input.to(at::kDouble), d.weight.to(at::kDouble), d.bias);
  expect_matches(output, rounded, unrounded, "output");
  EXPECT_EQ(output.strides(), c10::IntArrayRef(c10::contiguous_strides(rounded.sizes())));
  EXPECT_FALSE(output.is_view());

  // The same call again (cached primitives): the same bytes.
  ConvolutionSaved again_saved;
  at::Tensor again = convolution_training_forward(d.input, d.weight, d.bias, args, &again_saved);
  EXPECT_TRUE(at::equal(output, again));
}

TEST_P(TrainingConvolution, ToleranceRejectsATransposedWindow) {
  IPEX_SKIP_UNLESS_BF16_KERNELS();
  // The tolerance tells a weight read with its kernel's two last dimensions swapped apart
  // (the case's kernel as its own transpose: a square or cubic window).
  const TrainingConvCase& c = GetParam();
  ConvData d = make_conv_data(c, 3);
  ConvolutionSaved saved;
  at::Tensor output = convolution_training_forward(d.input, d.weight, d.bias, args_of(c), &saved);
  at::Tensor swapped = bf16_double(d.weight).transpose(-1, -2).contiguous();
  if (c.weight.size() == 3) swapped = bf16_double(d.weight).flip({-1});  // 1-D: reversed
  at::Tensor wrong = conv_reference(c, bf16_double(d.input), swapped, d.bias);
  EXPECT_GT(relative_error(output, wrong), 0.1);
}

TEST_P(TrainingConvolution, BackwardAllMatchesRoundedReference) {
  IPEX_SKIP_UNLESS_BF16_KERNELS();
  const TrainingConvCase& c = GetParam();
  ConvData d = make_conv_data(c, 4);
  const ConvolutionArgs args = args_of(c);
  ConvolutionSaved saved;
  at::Tensor output = convolution_training_forward(d.input, d.weight, d.bias, args, &saved);
  at::Tensor grad_output = at::randn(output.sizes());

  auto grads = convolution_training_backward(grad_output, d.input, d.weight, c.bias, args, saved,
                                             {true, true, true});
  auto rounded = conv_backward_reference(c, bf16_double(grad_output), bf16_double(d.input),
                                         bf16_double(d.weight));
  auto unrounded = conv_backward_reference(c, grad_output.to(at::kDouble),
                                           d.input.to(at::kDouble), d.weight.to(at::kDouble));
  expect_matches(grads[0], rounded[0], unrounded[0], "grad_input");
  EXPECT_EQ(grads[0].sizes(), d.input.sizes());
  expect_matches(grads[1], rounded[1], unrounded[1], "grad_weight");
  EXPECT_EQ(grads[1].sizes(), d.weight.sizes());
  if (c.bias) {
    expect_matches(grads[2], rounded[2], unrounded[2], "grad_bias");
    EXPECT_EQ(grads[2].sizes(), d.bias.sizes());
  } else {
    EXPECT_FALSE(grads[2].defined());
  }

  // Each operand rounded except the output gradient: also far off, so the kernel rounds it.
  auto grad_unrounded = conv_backward_reference(c, grad_output.to(at::kDouble),
                                                bf16_double(d.input), bf16_double(d.weight));
  EXPECT_GE(relative_error(grads[0], grad_unrounded[0]), kUnroundedAtLeast);
  EXPECT_GE(relative_error(grads[1], grad_unrounded[1]), kUnroundedAtLeast);
  // And the weights' gradient from the unrounded input: the kernel uses the rounded one.
  auto input_unrounded = conv_backward_reference(c, bf16_double(grad_output),
                                                 d.input.to(at::kDouble), bf16_double(d.weight));
  EXPECT_GE(relative_error(grads[1], input_unrounded[1]), kUnroundedAtLeast);
}

TEST_P(TrainingConvolution, BackwardSubsetsLeaveTheOthersUndefined) {
  IPEX_SKIP_UNLESS_BF16_KERNELS();
  const TrainingConvCase& c = GetParam();
  ConvData d = make_conv_data(c, 5);
  const ConvolutionArgs args = args_of(c);
  ConvolutionSaved saved;
  at::Tensor output = convolution_training_forward(d.input, d.weight, d.bias, args, &saved);
  at::Tensor grad_output = at::randn(output.sizes());
  auto all = convolution_training_backward(grad_output, d.input, d.weight, c.bias, args, saved,
                                           {true, true, true});
  const std::array<bool, 3> subsets[] = {{true, false, false}, {false, true, false},
                                         {false, false, true}, {false, true, true},
                                         {true, false, true},  {true, true, false},
                                         {false, false, false}};
  for (const auto& wanted : subsets) {
    SCOPED_TRACE(::testing::Message() << "wanted " << wanted[0] << wanted[1] << wanted[2]);
    auto grads = convolution_training_backward(grad_output, d.input, d.weight, c.bias, args,
                                               saved, wanted);
    for (int i = 0; i < 3; ++i) {
      const bool expected = wanted[i] && (i < 2 || c.bias);
      ASSERT_EQ(grads[i].defined(), expected) << "gradient " << i;
      if (expected) EXPECT_TRUE(at::equal(grads[i], all[i])) << "gradient " << i;
    }
  }
}

TEST_P(TrainingConvolution, StridedGradOutputGivesTheSameGradients) {
  IPEX_SKIP_UNLESS_BF16_KERNELS();
  const TrainingConvCase& c = GetParam();
  ConvData d = make_conv_data(c, 6);
  const ConvolutionArgs args = args_of(c);
  ConvolutionSaved saved;
  at::Tensor output = convolution_training_forward(d.input, d.weight, d.bias, args, &saved);
  at::Tensor grad_output = at::randn(output.sizes());
  auto contiguous = convolution_training_backward(grad_output, d.input, d.weight, c.bias, args,
                                                  saved, {true, true, true});
  auto strided = convolution_training_backward(strided_copy(grad_output), d.input, d.weight,
                                               c.bias, args, saved, {true, true, true});
  for (int i = 0; i < 3; ++i) {
    ASSERT_EQ(strided[i].defined(), contiguous[i].defined()) << "gradient " << i;
    if (contiguous[i].defined()) EXPECT_TRUE(at::equal(strided[i], contiguous[i])) << i;
  }
  // An expanded gradient (stride 0, what sum().backward() hands over) against its
  // materialised copy.
  {
    at::Tensor expanded = at::randn({1}).expand(output.sizes());
    auto from_expanded = convolution_training_backward(expanded, d.input, d.weight, c.bias, args,
                                                       saved, {true, true, true});
    auto from_copy = convolution_training_backward(expanded.contiguous(), d.input, d.weight,
                                                   c.bias, args, saved, {true, true, true});
    for (int i = 0; i < 3; ++i)
      if (from_copy[i].defined()) EXPECT_TRUE(at::equal(from_expanded[i], from_copy[i])) << i;
  }
  // A channels-last gradient (what a channels-last consumer's backward may hand over).
  if (output.dim() == 4 || output.dim() == 5) {
    at::Tensor channels_last = grad_output.contiguous(
        output.dim() == 4 ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::ChannelsLast3d);
    auto from_channels_last = convolution_training_backward(
        channels_last, d.input, d.weight, c.bias, args, saved, {true, true, true});
    for (int i = 0; i < 3; ++i)
      if (contiguous[i].defined()) EXPECT_TRUE(at::equal(from_channels_last[i], contiguous[i]));
  }
}

TEST_P(TrainingConvolution, BackwardTwiceOnTheSameSavedIsIdentical) {
  IPEX_SKIP_UNLESS_BF16_KERNELS();
  const TrainingConvCase& c = GetParam();
  ConvData d = make_conv_data(c, 7);
  const ConvolutionArgs args = args_of(c);
  ConvolutionSaved saved;
  at::Tensor output = convolution_training_forward(d.input, d.weight, d.bias, args, &saved);
  at::Tensor grad_output = at::randn(output.sizes());
  auto first = convolution_training_backward(grad_output, d.input, d.weight, c.bias, args, saved,
                                             {true, true, true});
  auto second = convolution_training_backward(grad_output, d.input, d.weight, c.bias, args,
                                              saved, {true, true, true});
  for (int i = 0; i < 3; ++i) {
    ASSERT_EQ(first[i].defined(), second[i].defined());
    if (first[i].defined()) EXPECT_TRUE(at::equal(first[i], second[i])) << "gradient " << i;
  }
}

TEST_P(TrainingConvolution, WeightGradientReadsTheSavedInput) {
  IPEX_SKIP_UNLESS_BF16_KERNELS();
  // The backward takes the input for its sizes; the weights' gradient comes from the BF16
  // copy the forward kept, so overwriting the input afterwards changes nothing.
  const TrainingConvCase& c = GetParam();
  ConvData d = make_conv_data(c, 8);
  const ConvolutionArgs args = args_of(c);
  ConvolutionSaved saved;
  at::Tensor output = convolution_training_forward(d.input, d.weight, d.bias, args, &saved);
  at::Tensor grad_output = at::randn(output.sizes());
  auto before = convolution_training_backward(grad_output, d.input, d.weight, c.bias, args,
                                              saved, {false, true, true});
  d.input.zero_();
  auto after = convolution_training_backward(grad_output, d.input, d.weight, c.bias, args, saved,
                                             {false, true, true});
  EXPECT_TRUE(at::equal(before[1], after[1]));
}

INSTANTIATE_TEST_SUITE_P(Kernels, TrainingConvolution, ::testing::ValuesIn(kConvCases),
                         [](const auto& info) { return std::string(info.param.name); });

// Channels-last programs (2-D): the result and the input's gradient are channels-last when
// the input or the weight is (as stock's), the weight's gradient has the weight's format,
// and the values are those of the contiguous case's reference.
TEST(TrainingConvolutionChannelsLast, ChannelsLastFollowsStock) {
  IPEX_SKIP_UNLESS_BF16_KERNELS();
  const auto channels_last = at::MemoryFormat::ChannelsLast;
  for (const TrainingConvCase& c : kConvCases) {
    if (c.input.size() != 4) continue;
    for (bool weight_too : {false, true}) {
      SCOPED_TRACE(std::string(c.name) + (weight_too ? ", channels-last weight" : ""));
      ConvData d = make_conv_data(c, 9);
      const at::Tensor input = d.input.contiguous(channels_last);
      const at::Tensor weight = weight_too ? d.weight.contiguous(channels_last) : d.weight;
      const ConvolutionArgs args = args_of(c);
      ASSERT_EQ(convolution_training_support(input, weight, optional_bias(d.bias), args),
                Fallback::none);
      ConvolutionSaved saved;
      at::Tensor output = convolution_training_forward(input, weight, d.bias, args, &saved);
      EXPECT_TRUE(output.is_contiguous(channels_last));
      EXPECT_LE(relative_error(output, conv_reference(c, bf16_double(d.input),
                                                      bf16_double(d.weight), d.bias)),
                kTolerance);
      at::manual_seed(10);
      at::Tensor grad_output = at::randn(output.sizes());
      auto grads = convolution_training_backward(grad_output, input, weight, c.bias, args, saved,
                                                 {true, true, true});
      auto rounded = conv_backward_reference(c, bf16_double(grad_output), bf16_double(d.input),
                                             bf16_double(d.weight));
      EXPECT_TRUE(grads[0].is_contiguous(channels_last));
      EXPECT_EQ(grads[1].strides(), weight.strides());
      for (int i = 0; i < (c.bias ? 3 : 2); ++i)
        EXPECT_LE(relative_error(grads[i], rounded[i]), kTolerance) << i;
    }
  }
}

TEST(TrainingConvolutionSupport, RefusesWhatItDoesNotCompute) {
  at::manual_seed(20);
  const std::vector<int64_t> one = {1, 1}, zero = {0, 0};
  const ConvolutionArgs args{one, one, one, 1};
  at::Tensor input = at::randn({2, 16, 8, 8});
  at::Tensor weight = at::randn({16, 16, 3, 3});
  at::Tensor bias = at::randn({16});
  ASSERT_EQ(convolution_training_support(input, weight, bias, args), Fallback::none);

  // Transposed (stock's convolution_support takes these: the training kernel does not).
  const ConvolutionArgs transposed{one, one, one, 1, true, zero};
  ASSERT_EQ(convolution_support(input, weight, bias, transposed), Fallback::none);
  EXPECT_NE(convolution_training_support(input, weight, bias, transposed), Fallback::none);

  // A channels-last 2-D input or weight is taken (ChannelsLastFollowsStock below); a 3-D
  // channels-last input is not.
  at::Tensor channels_last = input.contiguous(at::MemoryFormat::ChannelsLast);
  EXPECT_EQ(convolution_training_support(channels_last, weight, bias, args), Fallback::none);
  EXPECT_EQ(convolution_training_support(
                input, weight.contiguous(at::MemoryFormat::ChannelsLast), bias, args),
            Fallback::none);
  at::Tensor channels_last_3d =
      at::randn({1, 4, 4, 5, 6}).contiguous(at::MemoryFormat::ChannelsLast3d);
  const std::vector<int64_t> one3 = {1, 1, 1};
  EXPECT_EQ(convolution_training_support(channels_last_3d, at::randn({4, 4, 3, 3, 3}),
                                         c10::nullopt, ConvolutionArgs{one3, one3, one3, 1}),
            Fallback::unsupported_shape);

  // A weight dense in neither format (its kernel window transposed).
  at::Tensor swapped = weight.transpose(2, 3);
  ASSERT_FALSE(swapped.is_contiguous());
  EXPECT_EQ(convolution_training_support(input, swapped, bias, args),
            Fallback::unsupported_shape);

  // A non-contiguous bias.
  at::Tensor strided_bias = at::randn({32}).slice(0, 0, 32, 2);
  ASSERT_FALSE(strided_bias.is_contiguous());
  EXPECT_NE(convolution_training_support(input, weight, strided_bias, args), Fallback::none);

  // Double (any operand), and BF16 input.
  EXPECT_EQ(convolution_training_support(input.to(at::kDouble), weight.to(at::kDouble),
                                         bias.to(at::kDouble), args),
            Fallback::unsupported_dtype);
  EXPECT_EQ(convolution_training_support(input.to(at::kDouble), weight, bias, args),
            Fallback::unsupported_dtype);
  EXPECT_EQ(convolution_training_support(input, weight, bias.to(at::kDouble), args),
            Fallback::unsupported_dtype);
  EXPECT_EQ(convolution_training_support(input.to(at::kBFloat16), weight, bias, args),
            Fallback::unsupported_dtype);

  // Mismatched channels: stock gives the error.
  EXPECT_NE(convolution_training_support(at::randn({2, 8, 8, 8}), weight, bias, args),
            Fallback::none);
}

// ---------------------------------------------------------------------------------------
// Linear.

struct TrainingLinearCase {
  const char* name;
  std::vector<int64_t> input;  // ..., in
  int64_t out;
  bool bias;
};
void PrintTo(const TrainingLinearCase& c, std::ostream* os) { *os << c.name; }

const TrainingLinearCase kLinearCases[] = {
    {"rows2d_bias", {17, 40}, 24, true},
    {"rows2d_nobias", {33, 64}, 48, false},
    {"batch3d_bias", {3, 5, 37}, 19, true},
    {"batch3d_nobias", {4, 6, 32}, 16, false},
};

struct LinearData {
  at::Tensor input, weight, bias;
};

LinearData make_linear_data(const TrainingLinearCase& c, uint64_t seed) {
  at::manual_seed(seed);
  LinearData d{at::randn(c.input), at::randn({c.out, c.input.back()}), at::Tensor()};
  if (c.bias) d.bias = at::randn({c.out});
  return d;
}

at::Tensor linear_reference(const at::Tensor& input, const at::Tensor& weight,
                            const at::Tensor& bias) {
  return at::linear(input, weight,
                    bias.defined() ? c10::optional<at::Tensor>(bias.to(at::kDouble))
                                   : c10::nullopt);
}

// grad_input = g W, grad_weight = g_rows^T x_rows, grad_bias = sum of g_rows, in double.
std::array<at::Tensor, 3> linear_backward_reference(const at::Tensor& grad_output,
                                                    const at::Tensor& input,
                                                    const at::Tensor& weight) {
  const at::Tensor rows = grad_output.reshape({-1, weight.size(0)});
  return {at::matmul(grad_output, weight),
          at::mm(rows.t(), input.reshape({-1, weight.size(1)})), rows.sum(0)};
}

class TrainingLinear : public ::testing::TestWithParam<TrainingLinearCase> {};

TEST_P(TrainingLinear, ForwardMatchesRoundedReference) {
  IPEX_SKIP_UNLESS_BF16_KERNELS();
  const TrainingLinearCase& c = GetParam();
  LinearData d = make_linear_data(c, 30);
  ASSERT_EQ(linear_training_support(d.input, d.weight, optional_bias(d.bias)), Fallback::none);
  LinearSaved saved;
  at::Tensor output = linear_training_forward(d.input, d.weight, d.bias, &saved);
  EXPECT_TRUE(saved.source.defined());
  EXPECT_TRUE(saved.weights.defined());
  std::vector<int64_t> sizes = c.input;
  sizes.back() = c.out;
  EXPECT_EQ(output.sizes(), c10::IntArrayRef(sizes));
  EXPECT_FALSE(output.is_view());
  expect_matches(output, linear_reference(bf16_double(d.input), bf16_double(d.weight), d.bias),
                 linear_reference(d.input.to(at::kDouble), d.weight.to(at::kDouble), d.bias),
                 "output");
  // A weight read transposed (or rows and columns mixed up) is far off.
  at::Tensor wrong = linear_reference(bf16_double(d.input),
                                      bf16_double(d.weight).flip({0}), d.bias);
  EXPECT_GT(relative_error(output, wrong), 0.1);
}

TEST_P(TrainingLinear, BackwardMatchesRoundedReference) {
  IPEX_SKIP_UNLESS_BF16_KERNELS();
  const TrainingLinearCase& c = GetParam();
  LinearData d = make_linear_data(c, 31);
  LinearSaved saved;
  at::Tensor output = linear_training_forward(d.input, d.weight, d.bias, &saved);
  at::Tensor grad_output = at::randn(output.sizes());
  auto grads = linear_training_backward(grad_output, d.input, d.weight, c.bias, saved,
                                        {true, true, true});
  auto rounded = linear_backward_reference(bf16_double(grad_output), bf16_double(d.input),
                                           bf16_double(d.weight));
  auto unrounded = linear_backward_reference(grad_output.to(at::kDouble),
                                             d.input.to(at::kDouble), d.weight.to(at::kDouble));
  expect_matches(grads[0], rounded[0], unrounded[0], "grad_input");
  EXPECT_EQ(grads[0].sizes(), d.input.sizes());
  EXPECT_FALSE(grads[0].is_view());
  expect_matches(grads[1], rounded[1], unrounded[1], "grad_weight");
  EXPECT_EQ(grads[1].sizes(), d.weight.sizes());
  // The bias's gradient is the sum of the fp32 output gradient, as stock's (unlike the
  // convolution's, which oneDNN sums from the BF16-rounded gradient): the unrounded
  // reference is the one it must match, and the rounded one it must not.
  if (c.bias) {
    expect_matches(grads[2], unrounded[2], rounded[2], "grad_bias");
    EXPECT_EQ(grads[2].sizes(), d.bias.sizes());
  } else {
    EXPECT_FALSE(grads[2].defined());
  }
  // The output gradient alone unrounded: far off, so the kernel rounds it for the matmuls.
  auto grad_unrounded = linear_backward_reference(grad_output.to(at::kDouble),
                                                  bf16_double(d.input), bf16_double(d.weight));
  EXPECT_GE(relative_error(grads[0], grad_unrounded[0]), kUnroundedAtLeast);
  EXPECT_GE(relative_error(grads[1], grad_unrounded[1]), kUnroundedAtLeast);
}

TEST_P(TrainingLinear, BackwardSubsetsStridedGradAndReuse) {
  IPEX_SKIP_UNLESS_BF16_KERNELS();
  const TrainingLinearCase& c = GetParam();
  LinearData d = make_linear_data(c, 32);
  LinearSaved saved;
  at::Tensor output = linear_training_forward(d.input, d.weight, d.bias, &saved);
  at::Tensor grad_output = at::randn(output.sizes());
  auto all = linear_training_backward(grad_output, d.input, d.weight, c.bias, saved,
                                      {true, true, true});
  // A non-contiguous output gradient: the same gradients.
  auto strided = linear_training_backward(strided_copy(grad_output), d.input, d.weight, c.bias,
                                          saved, {true, true, true});
  // Twice on the same saved state: the same gradients.
  auto again = linear_training_backward(grad_output, d.input, d.weight, c.bias, saved,
                                        {true, true, true});
  for (int i = 0; i < 3; ++i) {
    ASSERT_EQ(strided[i].defined(), all[i].defined());
    ASSERT_EQ(again[i].defined(), all[i].defined());
    if (all[i].defined()) {
      EXPECT_TRUE(at::equal(strided[i], all[i])) << "gradient " << i;
      EXPECT_TRUE(at::equal(again[i], all[i])) << "gradient " << i;
    }
  }
  const std::array<bool, 3> subsets[] = {{true, false, false}, {false, true, false},
                                         {false, false, true}, {true, false, true}};
  for (const auto& wanted : subsets) {
    SCOPED_TRACE(::testing::Message() << "wanted " << wanted[0] << wanted[1] << wanted[2]);
    auto grads = linear_training_backward(grad_output, d.input, d.weight, c.bias, saved, wanted);
    for (int i = 0; i < 3; ++i) {
      const bool expected = wanted[i] && (i < 2 || c.bias);
      ASSERT_EQ(grads[i].defined(), expected) << "gradient " << i;
      if (expected) EXPECT_TRUE(at::equal(grads[i], all[i])) << "gradient " << i;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Kernels, TrainingLinear, ::testing::ValuesIn(kLinearCases),
                         [](const auto& info) { return std::string(info.param.name); });

TEST(TrainingLinearSupport, RefusesWhatItDoesNotCompute) {
  at::manual_seed(40);
  at::Tensor input = at::randn({6, 10});
  at::Tensor weight = at::randn({7, 10});
  at::Tensor bias = at::randn({7});
  EXPECT_EQ(linear_training_support(input, weight, bias), Fallback::none);
  EXPECT_EQ(linear_training_support(at::randn({2, 3, 10}), weight, c10::nullopt),
            Fallback::none);

  // Non-contiguous inputs: a transposed matrix, and a strided 3-D batch.
  at::Tensor transposed = at::randn({10, 6}).t();
  ASSERT_FALSE(transposed.is_contiguous());
  EXPECT_EQ(linear_training_support(transposed, weight, bias), Fallback::unsupported_shape);
  at::Tensor batch = at::randn({3, 2, 10}).transpose(0, 1);
  ASSERT_FALSE(batch.is_contiguous());
  EXPECT_EQ(linear_training_support(batch, weight, bias), Fallback::unsupported_shape);
  // A non-contiguous weight.
  EXPECT_EQ(linear_training_support(input, at::randn({10, 7}).t(), bias),
            Fallback::unsupported_shape);

  // Mismatched in-features (stock raises the error), a wrong bias, rank 1.
  EXPECT_EQ(linear_training_support(at::randn({6, 9}), weight, bias),
            Fallback::unsupported_shape);
  EXPECT_EQ(linear_training_support(input, weight, at::randn({8})), Fallback::unsupported_shape);
  EXPECT_EQ(linear_training_support(at::randn({10}), weight, bias), Fallback::unsupported_shape);

  // Double.
  EXPECT_EQ(linear_training_support(input.to(at::kDouble), weight, bias),
            Fallback::unsupported_dtype);
}

}  // namespace
}  // namespace ipex_shim
