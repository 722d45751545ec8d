// Max pooling of tensors the program made (kernels/pooling.h, max_pool_plain): the forward
// must equal stock max_pool2d_with_indices bit for bit, values and strides (contiguous in,
// contiguous out; channels-last in, channels-last out), in inference (no workspace) and in
// training; the backward, from the training forward's workspace, must send each output's
// gradient to the same input element as stock's indices do (ties to the first element of a
// window), so the nonzero positions of the input's gradient are stock's exactly and the
// values stock's up to the order in which overlapping windows' gradients are summed.
// max_pool_needs_stock must find a NaN or a -inf anywhere (the kernel's results differ from
// stock's there); the support check must refuse what the kernel does
// not take (not 4-D, not contiguous in either format, not fp32, padding over half a kernel).
// Inference pooling (max_pool_values, avg_pool_plain, which run an NCHW input through
// channel blocks): max bit for bit like stock, averages within a few ulps of the largest
// input, stock's sizes and strides; NCHW whose channels do not fill the blocks is refused.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <string>
#include <tuple>
#include <vector>

#include "kernels/pooling.h"

namespace ipex_shim {
namespace {

struct PlainPoolCase {
  const char* name;
  std::vector<int64_t> input;  // N, C, H, W
  std::vector<int64_t> kernel, stride, padding, dilation;
  bool ceil_mode;
};
void PrintTo(const PlainPoolCase& c, std::ostream* os) { *os << c.name; }

const PlainPoolCase kCases[] = {
    {"resnet_stem", {2, 8, 28, 28}, {3, 3}, {2, 2}, {1, 1}, {1, 1}, false},
    {"resnet_stem_odd_sizes", {3, 5, 13, 11}, {3, 3}, {2, 2}, {1, 1}, {1, 1}, false},
    {"k2_s2", {2, 6, 16, 16}, {2, 2}, {2, 2}, {0, 0}, {1, 1}, false},
    {"k2_s2_ceil_mode_odd_sizes", {2, 4, 13, 11}, {2, 2}, {2, 2}, {0, 0}, {1, 1}, true},
    {"k3_s2_ceil_mode_odd_sizes", {2, 3, 14, 15}, {3, 3}, {2, 2}, {0, 0}, {1, 1}, true},
    {"k3_s2_ceil_mode_padded", {1, 6, 10, 9}, {3, 3}, {2, 2}, {1, 1}, {1, 1}, true},
    {"dilated", {2, 4, 12, 12}, {3, 3}, {1, 1}, {1, 1}, {2, 2}, false},
    {"dilated_ceil_mode_stride3", {2, 5, 11, 10}, {3, 2}, {3, 2}, {1, 1}, {2, 1}, true},
    {"k3_s1_overlapping", {2, 3, 9, 9}, {3, 3}, {1, 1}, {1, 1}, {1, 1}, false},
    {"rectangular", {1, 16, 9, 15}, {2, 3}, {1, 2}, {1, 0}, {1, 1}, false},
};

const char* format_name(bool channels_last) { return channels_last ? "channels_last" : "nchw"; }

at::Tensor in_format(const at::Tensor& t, bool channels_last) {
  return t.contiguous(channels_last ? at::MemoryFormat::ChannelsLast
                                    : at::MemoryFormat::Contiguous);
}

std::tuple<at::Tensor, at::Tensor> stock(const at::Tensor& input, const PlainPoolCase& c) {
  return at::max_pool2d_with_indices(input, c.kernel, c.stride, c.padding, c.dilation,
                                     c.ceil_mode);
}

// The forward's values bit for bit, and stock's sizes and strides.
void expect_forward_equal(const at::Tensor& output, const at::Tensor& expected) {
  ASSERT_EQ(output.sizes(), expected.sizes());
  EXPECT_EQ(output.strides(), expected.strides());
  EXPECT_EQ(output.scalar_type(), at::kFloat);
  EXPECT_TRUE(at::equal(output, expected))
      << "max difference " << (output - expected).abs().max().item<float>();
}

// The input's gradient against stock's: the same nonzero positions (each output's gradient
// sent to the same input element), the same strides, and values equal up to the order of
// summation where several windows chose the same element (a few fp32 roundings of the
// summed gradients: 4 ulps of the sum of their magnitudes, bounded by 4 ulps of k*k times
// the largest gradient).
void expect_gradient_equal(const at::Tensor& grad_input, const at::Tensor& expected,
                           const at::Tensor& grad_output, const PlainPoolCase& c) {
  ASSERT_EQ(grad_input.sizes(), expected.sizes());
  EXPECT_EQ(grad_input.strides(), expected.strides());
  const at::Tensor nonzero = grad_input.ne(0), expected_nonzero = expected.ne(0);
  EXPECT_TRUE(at::equal(nonzero, expected_nonzero))
      << (nonzero != expected_nonzero).sum().item<int64_t>() << " of " << expected.numel()
      << " positions differ in receiving a gradient (stock: "
      << expected_nonzero.sum().item<int64_t>() << ", kernel: "
      << nonzero.sum().item<int64_t>() << ")";
  const double largest = grad_output.abs().max().item<double>();
  const double allowed =
      4 * std::numeric_limits<float>::epsilon() * c.kernel[0] * c.kernel[1] * largest;
  const double error =
      (grad_input.to(at::kDouble) - expected.to(at::kDouble)).abs().max().item<double>();
  EXPECT_LE(error, allowed) << "largest gradient " << largest;
}

// Inference, then training's forward and backward, of `x` against stock.
void expect_stock_max_pool(const at::Tensor& x, const PlainPoolCase& c) {
  ASSERT_EQ(max_pool_plain_support(x, c.kernel, c.stride, c.padding, c.dilation),
            Fallback::none);
  auto [expected, indices] = stock(x, c);

  {
    SCOPED_TRACE("inference");
    at::Tensor output = max_pool_plain(x, c.kernel, c.stride, c.padding, c.dilation,
                                       c.ceil_mode, /*workspace=*/nullptr);
    expect_forward_equal(output, expected);
  }

  SCOPED_TRACE("training");
  at::Tensor workspace;
  at::Tensor output =
      max_pool_plain(x, c.kernel, c.stride, c.padding, c.dilation, c.ceil_mode, &workspace);
  expect_forward_equal(output, expected);
  ASSERT_TRUE(workspace.defined());
  ASSERT_GT(workspace.numel(), 0);

  // Gradients in the output's format and in the other one (the kernel converts).
  for (bool other_format : {false, true}) {
    SCOPED_TRACE(other_format ? "gradient in the other memory format"
                              : "gradient in the output's memory format");
    at::Tensor grad_output = at::randn(expected.sizes());
    const bool channels_last = x.suggest_memory_format() == at::MemoryFormat::ChannelsLast;
    grad_output = in_format(grad_output, channels_last != other_format);
    at::Tensor grad_input = max_pool_plain_backward(grad_output, x, workspace, c.kernel,
                                                    c.stride, c.padding, c.dilation,
                                                    c.ceil_mode);
    at::Tensor expected_grad = at::max_pool2d_with_indices_backward(
        grad_output, x, c.kernel, c.stride, c.padding, c.dilation, c.ceil_mode, indices);
    expect_gradient_equal(grad_input, expected_grad, grad_output, c);
  }
}

class PlainMaxPool : public ::testing::TestWithParam<std::tuple<PlainPoolCase, bool>> {};

TEST_P(PlainMaxPool, ForwardAndBackwardEqualStockOfRandomValues) {
  const auto& [c, channels_last] = GetParam();
  at::manual_seed(21);
  expect_stock_max_pool(in_format(at::randn(c.input), channels_last), c);
}

// Windows whose largest value occurs more than once (in how many of the windows that lie
// inside the input: the padded and ceil_mode ones have more zeros still).
int64_t windows_with_tied_max(const at::Tensor& x, const PlainPoolCase& c) {
  const int64_t zeros[] = {0, 0};
  at::Tensor columns = at::im2col(x.contiguous(), c.kernel, c.dilation, zeros, c.stride);
  columns = columns.view({x.size(0), x.size(1), c.kernel[0] * c.kernel[1], -1});
  const at::Tensor largest = std::get<0>(columns.max(2, /*keepdim=*/true));
  return columns.eq(largest).sum(2).gt(1).sum().item<int64_t>();
}

// relu'd values rounded to whole numbers: most windows hold their maximum several times
// (many zeros among them), and stock's indices name the first; the kernel's workspace must
// send the gradient there too.
TEST_P(PlainMaxPool, TiesGoToTheFirstElementOfAWindowLikeStock) {
  const auto& [c, channels_last] = GetParam();
  at::manual_seed(22);
  at::Tensor x = (at::randn(c.input) * 1.5).round().relu();
  const int64_t ties = windows_with_tied_max(x, c);
  ASSERT_GT(ties, 0) << "no window with a tied maximum: the case cannot see tie-breaking";
  expect_stock_max_pool(in_format(x, channels_last), c);
}

INSTANTIATE_TEST_SUITE_P(Cases, PlainMaxPool,
                         ::testing::Combine(::testing::ValuesIn(kCases), ::testing::Bool()),
                         [](const auto& info) {
                           return std::string(std::get<0>(info.param).name) + "_" +
                                  format_name(std::get<1>(info.param));
                         });

// All zeros: every window is one tie, and every gradient goes to its first element inside
// the input.
TEST(PlainMaxPoolTies, AllZerosSendEachGradientToTheFirstElementInsideTheWindow) {
  const PlainPoolCase c = kCases[0];  // resnet's stem: 3x3, stride 2, padding 1
  for (bool channels_last : {false, true}) {
    SCOPED_TRACE(format_name(channels_last));
    expect_stock_max_pool(in_format(at::zeros(c.input), channels_last), c);
  }
}

// Windows holding only -inf (and padding): stock's max is -inf and its index the window's
// first element inside the input. The kernel gives -FLT_MAX there (oneDNN starts its max at
// the type's lowest finite value) and, where such a window includes padding, sends its
// gradient to no input element (the workspace names the padded corner), so such inputs
// must be screened out for stock. The kernel's own difference stays recorded, disabled.
TEST(PlainMaxPoolInfinity, WindowsOfMinusInfinityAreScreenedForStock) {
  at::manual_seed(23);
  at::Tensor x = at::randn(kCases[0].input);
  EXPECT_FALSE(max_pool_needs_stock(x));
  x.slice(2, 0, 6).fill_(-std::numeric_limits<float>::infinity());
  EXPECT_TRUE(max_pool_needs_stock(x));
  EXPECT_TRUE(max_pool_needs_stock(x.contiguous(at::MemoryFormat::ChannelsLast)));
}

TEST(PlainMaxPoolInfinity, DISABLED_WindowsOfMinusInfinityAreMinusInfinityLikeStock) {
  const PlainPoolCase c = kCases[0];  // resnet's stem: 3x3, stride 2, padding 1
  for (bool channels_last : {false, true}) {
    SCOPED_TRACE(format_name(channels_last));
    at::manual_seed(23);
    at::Tensor x = at::randn(c.input);
    x.slice(2, 0, 6).fill_(-std::numeric_limits<float>::infinity());
    expect_stock_max_pool(in_format(x, channels_last), c);
  }
}

TEST(PlainMaxPoolNan, NeedsStockFindsANanAnywhere) {
  at::Tensor x = at::randn({2, 16, 30, 30});
  EXPECT_FALSE(max_pool_needs_stock(x));
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const float inf = std::numeric_limits<float>::infinity();
  for (int64_t at : {int64_t{0}, int64_t{12345}, x.numel() - 1}) {
    SCOPED_TRACE(at);
    at::Tensor y = x.clone();
    y.view({-1})[at] = nan;
    EXPECT_TRUE(max_pool_needs_stock(y));
    EXPECT_TRUE(max_pool_needs_stock(y.contiguous(at::MemoryFormat::ChannelsLast)));
  }
  // +inf is a value like any other; -inf is screened (above).
  at::Tensor y = x.clone();
  y.view({-1})[7] = inf;
  EXPECT_FALSE(max_pool_needs_stock(y));
  y.view({-1})[8] = -inf;
  EXPECT_TRUE(max_pool_needs_stock(y));
  // A NaN among negative values (a max that skipped NaN would return a number).
  at::Tensor negative = -x.abs() - 1;
  negative.view({-1})[100] = nan;
  EXPECT_TRUE(max_pool_needs_stock(negative));
}

TEST(PlainMaxPoolSupport, TakesContiguousAndChannelsLastFp32) {
  const at::Tensor x = at::randn({2, 8, 16, 16});
  EXPECT_EQ(max_pool_plain_support(x, {3, 3}, {2, 2}, {1, 1}, {1, 1}), Fallback::none);
  EXPECT_EQ(max_pool_plain_support(x.contiguous(at::MemoryFormat::ChannelsLast), {3, 3}, {2, 2},
                                   {1, 1}, {1, 1}),
            Fallback::none);
  EXPECT_EQ(max_pool_plain_support(x, {2, 2}, {2, 2}, {1, 1}, {1, 1}), Fallback::none);  // pad k/2
}

TEST(PlainMaxPoolSupport, RefusesWhatTheKernelDoesNotTake) {
  const at::Tensor x = at::randn({2, 8, 16, 16});
  auto support = [](const at::Tensor& t, c10::IntArrayRef padding = {1, 1}) {
    return max_pool_plain_support(t, {3, 3}, {2, 2}, padding, {1, 1});
  };
  // A 3-D (C, H, W) input.
  EXPECT_NE(support(at::randn({8, 16, 16})), Fallback::none);
  // Not contiguous in either memory format: a strided slice, a transpose of H and W.
  EXPECT_NE(support(x.slice(3, 0, 16, 2)), Fallback::none);
  EXPECT_NE(support(x.slice(1, 0, 8, 2)), Fallback::none);
  EXPECT_NE(support(x.transpose(2, 3)), Fallback::none);
  // Double (or any type but fp32).
  EXPECT_NE(support(x.to(at::kDouble)), Fallback::none);
  EXPECT_NE(support(x.to(at::kBFloat16)), Fallback::none);
  // Padding over half the kernel (stock's own error).
  EXPECT_NE(support(x, {2, 2}), Fallback::none);
  EXPECT_NE(support(x, {1, 2}), Fallback::none);
  // Empty input.
  EXPECT_NE(support(at::randn({0, 8, 16, 16})), Fallback::none);
}

// Inference pooling of plain tensors: squeezenet's and inception's shapes (channels filling
// 8- and 16-channel blocks), odd sizes, ceil_mode, padding.
const PlainPoolCase kInferenceCases[] = {
    {"squeezenet_k3_s2_ceil", {2, 32, 27, 27}, {3, 3}, {2, 2}, {0, 0}, {1, 1}, true},
    {"inception_k3_s2", {1, 48, 35, 35}, {3, 3}, {2, 2}, {0, 0}, {1, 1}, false},
    {"k3_s1_p1", {2, 16, 17, 13}, {3, 3}, {1, 1}, {1, 1}, {1, 1}, false},
    {"k2_s2_odd_ceil", {3, 64, 9, 11}, {2, 2}, {2, 2}, {0, 0}, {1, 1}, true},
    {"dilated", {2, 8, 12, 12}, {3, 3}, {1, 1}, {1, 1}, {2, 2}, false},
};

class PlainInferencePool : public ::testing::TestWithParam<std::tuple<PlainPoolCase, bool>> {};

TEST_P(PlainInferencePool, MaxEqualsStockBitForBit) {
  const auto& [c, channels_last] = GetParam();
  at::manual_seed(24);
  const at::Tensor x = in_format(at::randn(c.input), channels_last);
  ASSERT_EQ(plain_pool_inference_input(x), Fallback::none);
  const at::Tensor output =
      max_pool_values(x, c.kernel, c.stride, c.padding, c.dilation, c.ceil_mode);
  expect_forward_equal(output, std::get<0>(stock(x, c)));
}

// Averages (without dilation or ceil_mode, which the average does not take), counting the
// padding and not: stock's summation order differs, so within 4 ulps of the largest input.
TEST_P(PlainInferencePool, AverageWithinUlpsOfStock) {
  const auto& [c, channels_last] = GetParam();
  if (c.ceil_mode || c.dilation[0] != 1 || c.dilation[1] != 1)
    GTEST_SKIP() << c.name << ": ceil_mode and dilation are refused by avg_pool_support";
  at::manual_seed(25);
  const at::Tensor x = in_format(at::randn(c.input), channels_last);
  ASSERT_EQ(avg_pool_support(x, c.kernel, c.stride, c.padding, false, false), Fallback::none);
  const double allowed = 4 * std::numeric_limits<float>::epsilon() *
                         x.abs().max().item<double>();
  for (bool count_include_pad : {true, false}) {
    SCOPED_TRACE(count_include_pad ? "count_include_pad" : "padding not counted");
    const at::Tensor output = avg_pool_plain(x, c.kernel, c.stride, c.padding, count_include_pad);
    const at::Tensor expected =
        at::avg_pool2d(x, c.kernel, c.stride, c.padding, false, count_include_pad);
    ASSERT_EQ(output.sizes(), expected.sizes());
    EXPECT_EQ(output.strides(), expected.strides());
    EXPECT_LE((output - expected).abs().max().item<double>(), allowed);
  }
}

INSTANTIATE_TEST_SUITE_P(Cases, PlainInferencePool,
                         ::testing::Combine(::testing::ValuesIn(kInferenceCases),
                                            ::testing::Bool()),
                         [](const auto& info) {
                           return std::string(std::get<0>(info.param).name) + "_" +
                                  format_name(std::get<1>(info.param));
                         });

// Global average (adaptive_avg_pool2d to 1x1, the shape every classifier head pools to).
TEST(PlainInferencePoolAdaptive, GlobalAverageWithinUlpsOfStock) {
  at::manual_seed(26);
  for (bool channels_last : {false, true}) {
    SCOPED_TRACE(format_name(channels_last));
    const at::Tensor x = in_format(at::randn({2, 1024, 7, 7}), channels_last);
    std::vector<int64_t> kernel;
    ASSERT_TRUE(adaptive_as_average(x, {1, 1}, &kernel));
    const int64_t zeros[] = {0, 0};
    const at::Tensor output = avg_pool_plain(x, kernel, kernel, zeros, true);
    const at::Tensor expected = at::adaptive_avg_pool2d(x, {1, 1});
    ASSERT_EQ(output.sizes(), expected.sizes());
    EXPECT_LE((output - expected).abs().max().item<double>(),
              4 * std::numeric_limits<float>::epsilon() * x.abs().max().item<double>());
  }
}

// NCHW whose channels do not fill whole blocks would pool through a copy larger than the
// result: refused (stock runs it); channels-last takes any channel count.
TEST(PlainInferencePoolSupport, NchwNeedsChannelsThatFillBlocks) {
  EXPECT_EQ(plain_pool_inference_input(at::randn({2, 16, 9, 9})), Fallback::none);
  EXPECT_EQ(plain_pool_inference_input(at::randn({2, 8, 9, 9})), Fallback::none);
  EXPECT_EQ(plain_pool_inference_input(at::randn({2, 12, 9, 9})), Fallback::unsupported_shape);
  EXPECT_EQ(plain_pool_inference_input(at::randn({2, 3, 9, 9})), Fallback::unsupported_shape);
  EXPECT_EQ(plain_pool_inference_input(
                at::randn({2, 3, 9, 9}).contiguous(at::MemoryFormat::ChannelsLast)),
            Fallback::none);
  EXPECT_EQ(plain_pool_inference_input(at::randn({2, 16, 9, 9}).to(at::kDouble)),
            Fallback::unsupported_dtype);
  EXPECT_EQ(plain_pool_inference_input(at::randn({2, 16, 9, 9}).slice(3, 0, 9, 2)),
            Fallback::unsupported_shape);
}

}  // namespace
}  // namespace ipex_shim
