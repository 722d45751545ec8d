// Max pooling of bytes handed over in oneDNN's layout (kernels/pooling.h): pooling INT8
// bytes must give exactly stock max_pool2d of the dequantised input, and pooling fp32 or
// BF16 bytes (blocked, as a convolution keeps them, or NHWC) exactly stock max_pool2d of
// their values, with PyTorch's output sizes (ceil_mode included) and memory format.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "kernels/channel_scale.h"
#include "kernels/convolution.h"
#include "kernels/int8.h"
#include "kernels/onednn_context.h"
#include "kernels/pooling.h"
#include "reference.h"

namespace ipex_shim {
namespace {

struct PoolCase {
  const char* name;
  std::vector<int64_t> input;  // N, C, H, W
  std::vector<int64_t> kernel, stride, padding, dilation;
  bool ceil_mode;
  bool uint8;
};
void PrintTo(const PoolCase& c, std::ostream* os) { *os << c.name; }

class Int8MaxPool : public ::testing::TestWithParam<PoolCase> {};

// `values` quantised with `scale` into a u8/s8 NHWC buffer the size of an fp32 tensor (as a
// fused convolution leaves it), and that layout.
at::Tensor quantised_nhwc(const at::Tensor& values, float scale, bool uint8,
                          dnnl::memory::desc* layout) {
  at::Tensor bytes = at::empty(values.sizes(), values.options());
  *layout = dnnl::memory::desc(to_dims(values.sizes()), activation_type(uint8),
                               dnnl::memory::format_tag::acdb);
  dnnl::memory from = wrap(values, strided_desc(values));
  dnnl::memory to = wrap(bytes, *layout);
  cached_scaled_reorder(from.get_desc(), *layout, scale)->execute(thread_stream(), from, to);
  thread_stream().wait();
  return bytes;
}

TEST_P(Int8MaxPool, EqualsStockMaxPoolOfTheQuantisedValues) {
  const PoolCase& c = GetParam();
  at::manual_seed(3);
  at::Tensor x = at::randn(c.input);
  if (c.uint8) x = x.relu();
  const float scale = (c.uint8 ? 255.f : 127.f) / x.abs().max().item<float>();
  dnnl::memory::desc layout;
  at::Tensor bytes = quantised_nhwc(x, scale, c.uint8, &layout);
  ASSERT_EQ(max_pool_support(bytes, c.kernel, c.stride, c.padding, c.dilation), Fallback::none);

  dnnl::memory::desc pooled_layout;
  at::Tensor pooled = max_pool_handed_over(bytes, layout, c.kernel, c.stride, c.padding,
                                           c.dilation, c.ceil_mode, &pooled_layout);
  at::Tensor values = from_layout(pooled, pooled_layout, scale);

  at::Tensor dequantised = from_layout(bytes, layout, scale);
  at::Tensor expected =
      at::max_pool2d(dequantised, c.kernel, c.stride, c.padding, c.dilation, c.ceil_mode);
  ASSERT_EQ(values.sizes(), expected.sizes());
  EXPECT_TRUE(at::equal(values, expected)) << (values - expected).abs().max().item<float>();
  EXPECT_EQ(onednn::data_type_of(pooled_layout), onednn::data_type_of(layout));
}

const PoolCase kPoolCases[] = {
    {"resnet_stem_u8", {2, 8, 14, 14}, {3, 3}, {2, 2}, {1, 1}, {1, 1}, false, true},
    {"odd_sizes_s8", {3, 5, 13, 11}, {3, 3}, {2, 2}, {1, 1}, {1, 1}, false, false},
    {"ceil_mode_u8", {2, 4, 13, 11}, {2, 2}, {2, 2}, {0, 0}, {1, 1}, true, true},
    {"ceil_mode_padded_s8", {1, 6, 10, 9}, {3, 3}, {2, 2}, {1, 1}, {1, 1}, true, false},
    {"dilated_u8", {2, 3, 12, 12}, {3, 3}, {1, 1}, {1, 1}, {2, 2}, false, true},
    {"rectangular_u8", {1, 16, 9, 15}, {2, 3}, {1, 2}, {1, 0}, {1, 1}, false, true},
};

INSTANTIATE_TEST_SUITE_P(Cases, Int8MaxPool, ::testing::ValuesIn(kPoolCases),
                         [](const auto& info) { return std::string(info.param.name); });

TEST(Int8MaxPoolSupport, RejectsWhatStockRejects) {
  at::Tensor x = at::zeros({1, 2, 8, 8});
  EXPECT_NE(max_pool_support(x, {3, 3}, {2, 2}, {2, 2}, {1, 1}), Fallback::none);  // pad > k/2
  EXPECT_NE(max_pool_support(at::zeros({2, 8, 8}), {3, 3}, {2, 2}, {1, 1}, {1, 1}),
            Fallback::none);  // 3-D input
  EXPECT_NE(max_pool_support(x, {3}, {2, 2}, {1, 1}, {1, 1}), Fallback::none);
}

// fp32 and BF16 bytes: max pooling is exact, so the pooled values read back must equal
// stock max_pool2d of the handed-over values bit for bit, in either type.

struct FloatPoolCase {
  const char* name;
  std::vector<int64_t> input;  // N, C, H, W of the pooled tensor (C a multiple of 16: a
                               // blocked layout fits the fp32 tensor's storage)
  std::vector<int64_t> kernel, stride, padding, dilation;
  bool ceil_mode;
};
void PrintTo(const FloatPoolCase& c, std::ostream* os) { *os << c.name; }

// Where the handed-over bytes come from.
enum class Source { convolution, nhwc, blocked16 };
const char* source_name(Source source) {
  return source == Source::convolution ? "kept by a convolution"
         : source == Source::nhwc      ? "NHWC bytes"
                                       : "nChw16c bytes";
}

struct Handed {
  at::Tensor bytes;  // fp32-shaped, with the strides the program sees
  dnnl::memory::desc layout;
};

// A convolution (3x3, padding 1: the case's sizes) whose result is kept in its layout; with a
// channels-last input its result tensor has channels-last strides.
Handed kept_convolution(const std::vector<int64_t>& sizes, Precision precision,
                        bool channels_last) {
  at::Tensor input = at::randn({sizes[0], 3, sizes[2], sizes[3]});
  if (channels_last) input = input.contiguous(at::MemoryFormat::ChannelsLast);
  at::Tensor weight = at::randn({sizes[1], 3, 3, 3}), bias = at::randn({sizes[1]});
  const std::vector<int64_t> ones = {1, 1};
  ConvolutionArgs args{ones, ones, ones, 1};
  Handed handed;
  ConvolutionHandoff keep;
  keep.keep_output_layout = true;
  keep.output_layout = &handed.layout;
  handed.bytes = convolution_forward(input, weight, bias, args, precision, {}, keep);
  return handed;
}

// Random values converted into `format` bytes of `type`, in a tensor of their strides.
Handed reordered(const std::vector<int64_t>& sizes, dnnl::memory::data_type type,
                 dnnl::memory::format_tag format, bool channels_last) {
  at::Tensor values = at::randn(sizes);
  if (channels_last) values = values.contiguous(at::MemoryFormat::ChannelsLast);
  Handed handed{at::empty_like(values), dnnl::memory::desc(to_dims(values.sizes()), type, format)};
  dnnl::memory from = wrap(values, strided_desc(values));
  dnnl::memory to = wrap(handed.bytes, handed.layout);
  cached_scaled_reorder(from.get_desc(), handed.layout, 1.f)->execute(thread_stream(), from, to);
  thread_stream().wait();
  return handed;
}

// Calls `check(handed, channels_last)` for bytes of `precision` handed over from each source
// (a convolution's kept result, NHWC bytes, nChw16c bytes), in an NCHW and a channels-last
// tensor of `sizes`.
template <class Check>
void for_each_handed_over(const std::vector<int64_t>& sizes, Precision precision, Check check) {
  const auto type = to_dnnl(precision);
  for (bool channels_last : {false, true}) {
    for (Source source : {Source::convolution, Source::nhwc, Source::blocked16}) {
      SCOPED_TRACE(::testing::Message() << source_name(source) << ", "
                                        << (channels_last ? "channels-last" : "NCHW")
                                        << " tensor");
      Handed handed;
      if (source == Source::convolution) {
        handed = kept_convolution(sizes, precision, channels_last);
        ASSERT_GT(handed.layout.get_size(), 0u) << "the convolution's output was not kept";
        ASSERT_EQ(onednn::data_type_of(handed.layout), type);
        ASSERT_EQ(handed.bytes.is_contiguous(at::MemoryFormat::ChannelsLast), channels_last);
      } else {
        handed = reordered(sizes, type,
                           source == Source::nhwc ? dnnl::memory::format_tag::acdb
                                                  : dnnl::memory::format_tag::aBcd16b,
                           channels_last);
      }
      check(handed, channels_last);
    }
  }
}

// Pools `handed` and checks values, type and memory format against stock max_pool2d.
void expect_stock_max_pool(const Handed& handed, const FloatPoolCase& c, bool channels_last) {
  ASSERT_EQ(max_pool_support(handed.bytes, c.kernel, c.stride, c.padding, c.dilation),
            Fallback::none);
  dnnl::memory::desc pooled_layout;
  at::Tensor pooled = max_pool_handed_over(handed.bytes, handed.layout, c.kernel, c.stride,
                                           c.padding, c.dilation, c.ceil_mode, &pooled_layout);
  ASSERT_GT(pooled_layout.get_size(), 0u);
  EXPECT_EQ(onednn::data_type_of(pooled_layout), onednn::data_type_of(handed.layout));  // no conversion
  at::Tensor values = from_layout(pooled, pooled_layout);

  at::Tensor input_values = from_layout(handed.bytes, handed.layout);
  at::Tensor expected =
      at::max_pool2d(input_values, c.kernel, c.stride, c.padding, c.dilation, c.ceil_mode);
  ASSERT_EQ(values.sizes(), expected.sizes());
  EXPECT_TRUE(at::equal(values, expected)) << (values - expected).abs().max().item<float>();
  // Stock's strides: channels-last in, channels-last out (a 1x1 result is both).
  EXPECT_EQ(pooled.strides(), expected.strides());
  if (pooled.size(2) * pooled.size(3) > 1) {
    EXPECT_EQ(pooled.is_contiguous(at::MemoryFormat::ChannelsLast), channels_last);
    EXPECT_EQ(pooled.is_contiguous(), !channels_last);
  }
}

class HandedOverMaxPool
    : public ::testing::TestWithParam<std::tuple<FloatPoolCase, Precision>> {};

TEST_P(HandedOverMaxPool, EqualsStockMaxPoolOfTheHandedOverValues) {
  const auto& [c, precision] = GetParam();
  IPEX_SKIP_BF16_UNLESS_SUPPORTED(precision);
  at::manual_seed(5);
  for_each_handed_over(c.input, precision, [&](const Handed& handed, bool channels_last) {
    expect_stock_max_pool(handed, c, channels_last);
  });
}

const FloatPoolCase kFloatPoolCases[] = {
    {"resnet_stem", {2, 16, 14, 14}, {3, 3}, {2, 2}, {1, 1}, {1, 1}, false},
    {"odd_sizes", {3, 16, 13, 11}, {3, 3}, {2, 2}, {1, 1}, {1, 1}, false},
    {"ceil_mode", {2, 16, 13, 11}, {2, 2}, {2, 2}, {0, 0}, {1, 1}, true},
    {"ceil_mode_padded", {1, 32, 10, 9}, {3, 3}, {2, 2}, {1, 1}, {1, 1}, true},
    {"ceil_mode_stride3_dilated", {2, 16, 11, 10}, {3, 2}, {3, 2}, {1, 1}, {2, 1}, true},
    {"dilated", {2, 16, 12, 12}, {3, 3}, {1, 1}, {1, 1}, {2, 2}, false},
    {"rectangular", {1, 16, 9, 15}, {2, 3}, {1, 2}, {1, 0}, {1, 1}, false},
};

INSTANTIATE_TEST_SUITE_P(
    Cases, HandedOverMaxPool,
    ::testing::Combine(::testing::ValuesIn(kFloatPoolCases),
                       ::testing::Values(Precision::fp32, Precision::bf16)),
    [](const auto& info) {
      return std::string(std::get<0>(info.param).name) + "_" +
             precision_name(std::get<1>(info.param));
    });

// 5 channels: no blocked layout fits, but NHWC bytes do, and their pooled result too.
TEST(HandedOverMaxPoolOddChannels, NhwcBytesOfFiveChannels) {
  IPEX_SKIP_UNLESS_BF16_KERNELS();
  at::manual_seed(6);
  const FloatPoolCase c{"odd_channels", {2, 5, 11, 9}, {3, 3}, {2, 2}, {1, 1}, {1, 1}, true};
  for (Precision precision : {Precision::fp32, Precision::bf16}) {
    for (bool channels_last : {false, true}) {
      SCOPED_TRACE(::testing::Message() << precision_name(precision) << " channels-last "
                                        << channels_last);
      expect_stock_max_pool(
          reordered(c.input, to_dnnl(precision), dnnl::memory::format_tag::acdb, channels_last),
          c, channels_last);
    }
  }
}


// ---------------------------------------------------------------------------------------
// Average pooling of handed-over bytes (avg_pool_handed_over): fp32 bytes must give stock
// avg_pool2d of their values (to fp32 rounding), BF16 bytes the same rounded once to bf16,
// INT8 bytes the same rounded to the input's own quantisation step; count_include_pad picks
// oneDNN's include/exclude-padding algorithm, and the result has stock's strides.

struct AvgPoolCase {
  const char* name;
  std::vector<int64_t> input;  // N, C, H, W (C a multiple of 16 for the float cases)
  std::vector<int64_t> kernel, stride, padding;
};
void PrintTo(const AvgPoolCase& c, std::ostream* os) { *os << c.name; }

bool has_padding(const AvgPoolCase& c) { return c.padding[0] > 0 || c.padding[1] > 0; }

// Where padding is present, stock's two counts must give different results for the case
// (else the case could not tell the algorithms apart).
void expect_counts_differ(const at::Tensor& input_values, const AvgPoolCase& c) {
  if (!has_padding(c)) return;
  at::Tensor include = at::avg_pool2d(input_values, c.kernel, c.stride, c.padding, false, true);
  at::Tensor exclude = at::avg_pool2d(input_values, c.kernel, c.stride, c.padding, false, false);
  EXPECT_GT((include - exclude).abs().max().item<float>(),
            1e-2f * input_values.abs().max().item<float>())
      << "count_include_pad makes no difference in this case";
}

// Pools `handed` (fp32 or BF16 bytes) and checks values, type and strides against stock
// avg_pool2d of the handed-over values: fp32 within 1e-6 relative (plus 1e-6 of the input's
// largest magnitude for summation order near cancellation), BF16 within one bf16 rounding
// (2^-8 of the value) plus the same.
void expect_stock_avg_pool(const Handed& handed, const AvgPoolCase& c, bool count_include_pad,
                           bool channels_last) {
  ASSERT_EQ(avg_pool_support(handed.bytes, c.kernel, c.stride, c.padding, false, false),
            Fallback::none);
  dnnl::memory::desc pooled_layout;
  at::Tensor pooled = avg_pool_handed_over(handed.bytes, handed.layout, c.kernel, c.stride,
                                           c.padding, count_include_pad, &pooled_layout);
  ASSERT_GT(pooled_layout.get_size(), 0u);
  EXPECT_EQ(onednn::data_type_of(pooled_layout), onednn::data_type_of(handed.layout));  // no conversion
  at::Tensor values = from_layout(pooled, pooled_layout);

  at::Tensor input_values = from_layout(handed.bytes, handed.layout);
  expect_counts_differ(input_values, c);
  at::Tensor expected =
      at::avg_pool2d(input_values, c.kernel, c.stride, c.padding, false, count_include_pad);
  ASSERT_EQ(values.sizes(), expected.sizes());
  const bool bf16 = onednn::data_type_of(handed.layout) == dnnl::memory::data_type::bf16;
  const float relative = bf16 ? 1.f / 256 : 1e-6f;
  const float absolute = 1e-6f * input_values.abs().max().item<float>();
  at::Tensor error = (values - expected).abs();
  at::Tensor allowed = expected.abs() * relative + absolute;
  EXPECT_TRUE(error.le(allowed).all().item<bool>())
      << "max error " << error.max().item<float>() << ", max excess "
      << (error - allowed).max().item<float>();
  // Stock's strides: channels-last in, channels-last out (a 1x1 result is both).
  EXPECT_EQ(pooled.strides(), expected.strides());
  if (pooled.size(2) * pooled.size(3) > 1) {
    EXPECT_EQ(pooled.is_contiguous(at::MemoryFormat::ChannelsLast), channels_last);
    EXPECT_EQ(pooled.is_contiguous(), !channels_last);
  }
}

class HandedOverAvgPool
    : public ::testing::TestWithParam<std::tuple<AvgPoolCase, Precision, bool>> {};

TEST_P(HandedOverAvgPool, EqualsStockAvgPoolOfTheHandedOverValues) {
  const auto& [c, precision, count_include_pad] = GetParam();
  IPEX_SKIP_BF16_UNLESS_SUPPORTED(precision);
  at::manual_seed(7);
  for_each_handed_over(c.input, precision, [&](const Handed& handed, bool channels_last) {
    expect_stock_avg_pool(handed, c, count_include_pad, channels_last);
  });
}

const AvgPoolCase kAvgPoolCases[] = {
    {"padded_3x3_stride2", {2, 16, 14, 14}, {3, 3}, {2, 2}, {1, 1}},
    {"padded_stride1", {2, 16, 8, 8}, {3, 3}, {1, 1}, {1, 1}},
    {"odd_sizes", {3, 16, 13, 11}, {3, 3}, {2, 2}, {1, 1}},
    {"rectangular_padded", {1, 32, 9, 15}, {3, 5}, {1, 2}, {1, 2}},
    {"stride_not_kernel_padded", {1, 16, 10, 13}, {2, 4}, {3, 1}, {1, 2}},
    // Windows that stop short of the last rows/columns (oneDNN's right padding negative).
    {"stride_over_kernel", {2, 16, 12, 9}, {2, 2}, {3, 3}, {0, 0}},
    {"unpadded_2x2", {2, 16, 8, 8}, {2, 2}, {2, 2}, {0, 0}},
    // One window over the whole image (adaptive_avg_pool2d to 1x1): INT8 bytes are averaged
    // by the shim's own channel sums (kernels/channel_scale.h); 208 channels leave a
    // remainder after the blocks of 64 (and fill whole blocks of 16 for the blocked sources).
    {"global_7x7", {3, 208, 7, 7}, {7, 7}, {7, 7}, {0, 0}},
};

INSTANTIATE_TEST_SUITE_P(
    Cases, HandedOverAvgPool,
    ::testing::Combine(::testing::ValuesIn(kAvgPoolCases),
                       ::testing::Values(Precision::fp32, Precision::bf16),
                       ::testing::Bool()),
    [](const auto& info) {
      return std::string(std::get<0>(info.param).name) + "_" +
             precision_name(std::get<1>(info.param)) +
             (std::get<2>(info.param) ? "_include_pad" : "_exclude_pad");
    });

// 5 channels: NHWC bytes only.
TEST(HandedOverAvgPoolOddChannels, NhwcBytesOfFiveChannels) {
  IPEX_SKIP_UNLESS_BF16_KERNELS();
  at::manual_seed(8);
  const AvgPoolCase c{"odd_channels", {2, 5, 11, 9}, {3, 3}, {2, 2}, {1, 1}};
  for (Precision precision : {Precision::fp32, Precision::bf16}) {
    for (bool count_include_pad : {false, true}) {
      for (bool channels_last : {false, true}) {
        SCOPED_TRACE(::testing::Message() << precision_name(precision) << " include pad "
                                          << count_include_pad << " channels-last "
                                          << channels_last);
        expect_stock_avg_pool(
            reordered(c.input, to_dnnl(precision), dnnl::memory::format_tag::acdb,
                      channels_last),
            c, count_include_pad, channels_last);
      }
    }
  }
}

// `values` quantised with `scale` into u8/s8 NHWC bytes in a tensor of values' strides.
at::Tensor quantised_like(const at::Tensor& values, float scale, bool uint8,
                          dnnl::memory::desc* layout) {
  at::Tensor bytes = at::empty_like(values);
  *layout = dnnl::memory::desc(to_dims(values.sizes()), activation_type(uint8),
                               dnnl::memory::format_tag::acdb);
  dnnl::memory from = wrap(values, strided_desc(values));
  dnnl::memory to = wrap(bytes, *layout);
  cached_scaled_reorder(from.get_desc(), *layout, scale)->execute(thread_stream(), from, to);
  thread_stream().wait();
  return bytes;
}

// Checks INT8 pooled values (read back with the input's scale) against the exact average
// `expected` of the dequantised input: within half a quantisation step, on average well
// within it (rounding, not truncation), and exact where the average is a whole step.
void expect_within_half_step(const at::Tensor& values, const at::Tensor& expected,
                             float scale) {
  ASSERT_EQ(values.sizes(), expected.sizes());
  at::Tensor error = (values - expected).abs();
  const float half_step = 0.5f / scale;
  EXPECT_LE(error.max().item<float>(), half_step + 1e-6f);
  const float mean = error.mean().item<float>();
  EXPECT_LT(mean, 0.35f * (1.f / scale)) << "mean error " << mean * scale << " steps";
  at::Tensor steps = expected * scale;
  at::Tensor whole = (steps - steps.round()).abs().lt(1e-3);
  ASSERT_GT(whole.sum().item<int64_t>(), 0) << "no average lands on a whole step";
  EXPECT_LE(error.masked_select(whole).max().item<float>(),
            1e-6f * expected.abs().max().item<float>() + 1e-7f)
      << "averages on a whole step are not exact";
}

class Int8AvgPool
    : public ::testing::TestWithParam<std::tuple<AvgPoolCase, bool /*uint8*/, bool>> {};

TEST_P(Int8AvgPool, WithinHalfAStepOfStockAvgPoolOfTheQuantisedValues) {
  const auto& [c, uint8, count_include_pad] = GetParam();
  at::manual_seed(9);
  for (bool channels_last : {false, true}) {
    SCOPED_TRACE(channels_last ? "channels-last tensor" : "NCHW tensor");
    at::Tensor x = at::randn(c.input);
    if (uint8) x = x.relu();
    if (channels_last) x = x.contiguous(at::MemoryFormat::ChannelsLast);
    const float scale = (uint8 ? 255.f : 127.f) / x.abs().max().item<float>();
    dnnl::memory::desc layout;
    at::Tensor bytes = channels_last ? quantised_like(x, scale, uint8, &layout)
                                     : quantised_nhwc(x, scale, uint8, &layout);
    ASSERT_EQ(avg_pool_support(bytes, c.kernel, c.stride, c.padding, false, false),
              Fallback::none);

    dnnl::memory::desc pooled_layout;
    at::Tensor pooled = avg_pool_handed_over(bytes, layout, c.kernel, c.stride, c.padding,
                                             count_include_pad, &pooled_layout);
    EXPECT_EQ(onednn::data_type_of(pooled_layout), onednn::data_type_of(layout));
    at::Tensor values = from_layout(pooled, pooled_layout, scale);

    at::Tensor dequantised = from_layout(bytes, layout, scale);
    expect_counts_differ(dequantised, c);
    at::Tensor expected =
        at::avg_pool2d(dequantised, c.kernel, c.stride, c.padding, false, count_include_pad);
    expect_within_half_step(values, expected, scale);
    EXPECT_EQ(pooled.strides(), expected.strides());
    EXPECT_EQ(pooled.is_contiguous(at::MemoryFormat::ChannelsLast), channels_last);
  }
}

// avg_pool_values, the path the pooling wrappers take: the average of the handed-over
// values computed in fp32 (no rounding to u8/s8 or BF16 in between) and returned in stock's
// strides, so it equals stock's average of the same values to fp32 rounding, INT8 included.
class AvgPoolValues
    : public ::testing::TestWithParam<std::tuple<AvgPoolCase, int /*0 fp32, 1 bf16, 2 u8, 3 s8*/,
                                                 bool>> {};

TEST_P(AvgPoolValues, EqualStockAvgPoolOfTheHandedOverValuesWithoutRounding) {
  const auto& [c, kind, count_include_pad] = GetParam();
  if (kind == 1) IPEX_SKIP_UNLESS_BF16_KERNELS();
  at::manual_seed(11);
  for (bool channels_last : {false, true}) {
    SCOPED_TRACE(channels_last ? "channels-last tensor" : "NCHW tensor");
    Handed handed;
    float scale = 1.f;
    if (kind < 2) {
      handed = kept_convolution(c.input, kind == 0 ? Precision::fp32 : Precision::bf16,
                                channels_last);
      ASSERT_GT(handed.layout.get_size(), 0u) << "the convolution's output was not kept";
    } else {
      at::Tensor x = at::randn(c.input);
      if (kind == 2) x = x.relu();
      if (channels_last) x = x.contiguous(at::MemoryFormat::ChannelsLast);
      scale = (kind == 2 ? 255.f : 127.f) / x.abs().max().item<float>();
      handed.bytes = quantised_like(x, scale, kind == 2, &handed.layout);
    }
    const at::Tensor input_values = from_layout(handed.bytes, handed.layout, scale);
    const at::Tensor expected =
        at::avg_pool2d(input_values, c.kernel, c.stride, c.padding, false, count_include_pad);
    const at::Tensor actual = avg_pool_values(handed.bytes, handed.layout, c.kernel, c.stride,
                                              c.padding, count_include_pad, scale);
    ASSERT_EQ(actual.scalar_type(), at::kFloat);
    EXPECT_EQ(actual.strides(), expected.strides());
    // fp32 summation order only: far below half an INT8 step (~0.2% of the range) or a
    // BF16 rounding (2^-8), either of which an average rounded to the bytes' type shows.
    const float largest = input_values.abs().max().item<float>();
    EXPECT_LE((actual - expected).abs().max().item<float>(), 2e-6f * largest);
    // Asked to keep oneDNN's fp32 layout (an average a convolution reads next): either the
    // values in stock's strides (no layout given back) or fp32 bytes in the given layout
    // whose values are the same average.
    dnnl::memory::desc kept;
    const at::Tensor bytes = avg_pool_values(handed.bytes, handed.layout, c.kernel, c.stride,
                                             c.padding, count_include_pad, scale, &kept);
    const at::Tensor kept_values = kept.get_size() > 0 ? from_layout(bytes, kept) : bytes;
    // A window smaller than the image over an NCHW tensor is pooled in channel blocks: kept.
    const bool whole_image = c.kernel[0] == c.input[2] && c.kernel[1] == c.input[3];
    if (!channels_last && !whole_image) EXPECT_GT(kept.get_size(), 0u);
    if (kept.get_size() > 0) {
      EXPECT_EQ(onednn::data_type_of(kept), dnnl::memory::data_type::f32);
      EXPECT_LE(kept.get_size(), bytes.nbytes());
    }
    ASSERT_EQ(kept_values.sizes(), expected.sizes());
    EXPECT_LE((kept_values - expected).abs().max().item<float>(), 2e-6f * largest);
  }
}

// Bytes in a layout padded beyond the program's channels (24 channels in blocks of 16, as
// oneDNN 3 lays out a convolution's result): the average would not fit the result's fp32
// bytes in that layout; it is computed from the values instead, equal to stock's, INT8 and
// fp32 alike, and never handed on in a layout.
TEST(AvgPoolValuesPadded, ChannelsBeyondTheBlocksAverageFromTheValues) {
  at::manual_seed(12);
  const std::vector<int64_t> sizes = {2, 24, 9, 7};
  const at::Tensor x = at::randn(sizes).relu();
  for (auto type : {dnnl::memory::data_type::f32, dnnl::memory::data_type::u8}) {
    SCOPED_TRACE(type == dnnl::memory::data_type::u8 ? "u8" : "fp32");
    const bool u8 = type == dnnl::memory::data_type::u8;
    const float scale = u8 ? 255.f / x.max().item<float>() : 1.f;
    const dnnl::memory::desc layout(to_dims(x.sizes()), type,
                                    dnnl::memory::format_tag::aBcd16b);
    // Storage for the padded bytes (32 channels), as a tensor of the program's sizes.
    at::Tensor bytes = at::empty({2, 32, 9, 7}).narrow(1, 0, 24);
    ASSERT_LE(layout.get_size(), static_cast<size_t>(2 * 32 * 9 * 7 * 4));
    dnnl::memory from = wrap(x, strided_desc(x));
    dnnl::memory to = wrap(bytes, layout);
    cached_scaled_reorder(from.get_desc(), layout, scale)->execute(thread_stream(), from, to);
    thread_stream().wait();
    const std::vector<int64_t> k = {3, 3}, st = {1, 1}, pad = {1, 1};
    dnnl::memory::desc kept;
    const at::Tensor got = avg_pool_values(bytes, layout, k, st, pad, true, scale, &kept);
    EXPECT_EQ(kept.get_size(), 0u) << "a padded layout was handed on";
    const at::Tensor expected = at::avg_pool2d(from_layout(bytes, layout, scale), k, st, pad);
    ASSERT_EQ(got.sizes(), expected.sizes());
    EXPECT_LE((got - expected).abs().max().item<float>(), 1e-5f);
    // And those values are the input's, to the bytes' precision.
    const float step = u8 ? 1.f / scale : 1e-6f;
    EXPECT_LE((from_layout(bytes, layout, scale) - x).abs().max().item<float>(), step);
  }
}

std::string values_kind_name(int kind) {
  return kind == 0 ? "_fp32" : kind == 1 ? "_bf16" : kind == 2 ? "_u8" : "_s8";
}

INSTANTIATE_TEST_SUITE_P(Cases, AvgPoolValues,
                         ::testing::Combine(::testing::ValuesIn(kAvgPoolCases),
                                            ::testing::Values(0, 1, 2, 3), ::testing::Bool()),
                         [](const auto& info) {
                           return std::string(std::get<0>(info.param).name) +
                                  values_kind_name(std::get<1>(info.param)) +
                                  (std::get<2>(info.param) ? "_include_pad" : "_exclude_pad");
                         });

const AvgPoolCase kInt8AvgPoolCases[] = {
    {"padded_3x3_stride2", {2, 8, 14, 14}, {3, 3}, {2, 2}, {1, 1}},
    {"odd_sizes", {3, 5, 13, 11}, {3, 3}, {2, 2}, {1, 1}},
    {"rectangular_padded", {1, 16, 9, 15}, {3, 5}, {1, 2}, {1, 2}},
    {"stride_not_kernel_padded", {2, 7, 10, 13}, {2, 4}, {3, 1}, {1, 2}},
    {"stride_over_kernel", {2, 8, 12, 9}, {2, 2}, {3, 3}, {0, 0}},
};

INSTANTIATE_TEST_SUITE_P(Cases, Int8AvgPool,
                         ::testing::Combine(::testing::ValuesIn(kInt8AvgPoolCases),
                                            ::testing::Bool(), ::testing::Bool()),
                         [](const auto& info) {
                           return std::string(std::get<0>(info.param).name) +
                                  (std::get<1>(info.param) ? "_u8" : "_s8") +
                                  (std::get<2>(info.param) ? "_include_pad" : "_exclude_pad");
                         });

// The channel sums of INT8 bytes kept channels-last (the global average pool of a quantised
// convolution's result), against the mean of the same bytes: uint8 and int8 (whose negative
// bytes a sum read as unsigned would get wrong), channels that fill the AVX2 loop's vectors
// and ones that leave a remainder, one position, and sums that pass 2^16 (a 16-bit
// accumulator would wrap), in the AVX2 loops and the portable ones.
TEST(ChannelAverage, EqualsTheMeanOfTheDequantisedBytes) {
  struct Case { int64_t batch, positions, channels; };
  for (const Case& c : {Case{1, 49, 2048}, Case{3, 7, 70}, Case{2, 1, 64}, Case{1, 4096, 5}}) {
    for (bool is_unsigned : {true, false}) {
      for (bool avx2 : {true, false}) {
        SCOPED_TRACE(::testing::Message() << c.batch << "x" << c.positions << "x" << c.channels
                                          << (is_unsigned ? " u8" : " s8")
                                          << (avx2 ? "" : " portable"));
        at::Tensor bytes = is_unsigned ? at::randint(0, 256, {c.batch, c.positions, c.channels},
                                                     at::kByte)
                                       : at::randint(-128, 128, {c.batch, c.positions, c.channels},
                                                     at::kChar);
        const auto type = is_unsigned ? dnnl::memory::data_type::u8 : dnnl::memory::data_type::s8;
        ChannelRuns runs;
        ASSERT_TRUE(channel_runs_of(dnnl::memory::desc({c.batch, c.channels, c.positions, 1},
                                                       type, dnnl::memory::format_tag::acdb),
                                    &runs));
        const float scale = 37.5f;
        at::Tensor averages = at::empty({c.batch, c.channels});
        allow_channel_avx2(avx2);
        average_channel_runs(bytes.data_ptr(), type, scale, runs, averages.data_ptr<float>());
        allow_channel_avx2(true);
        at::Tensor expected = bytes.to(at::kDouble).mean(1).div(scale).to(at::kFloat);
        EXPECT_TRUE(at::allclose(averages, expected, 1e-6, 1e-7))
            << "max error " << (averages - expected).abs().max().item<float>();
      }
    }
  }
}

TEST(AvgPoolSupport, RefusesWhatTheKernelCannotCompute) {
  at::Tensor x = at::zeros({1, 2, 8, 8});
  EXPECT_EQ(avg_pool_support(x, {3, 3}, {2, 2}, {1, 1}, false, false), Fallback::none);
  EXPECT_NE(avg_pool_support(x, {3, 3}, {2, 2}, {1, 1}, true, false), Fallback::none);
  EXPECT_NE(avg_pool_support(x, {3, 3}, {2, 2}, {1, 1}, false, true), Fallback::none);
  EXPECT_NE(avg_pool_support(x, {3, 3}, {2, 2}, {2, 2}, false, false), Fallback::none);
  EXPECT_NE(avg_pool_support(x, {3, 4}, {2, 2}, {1, 3}, false, false), Fallback::none);
  EXPECT_EQ(avg_pool_support(x, {2, 4}, {2, 2}, {1, 2}, false, false), Fallback::none);
  EXPECT_NE(avg_pool_support(at::zeros({2, 8, 8}), {3, 3}, {2, 2}, {1, 1}, false, false),
            Fallback::none);  // 3-D input
}

TEST(AvgPoolAdaptiveAsAverage, DivisibleSizesOnly) {
  std::vector<int64_t> kernel;
  EXPECT_TRUE(adaptive_as_average(at::zeros({2, 16, 7, 7}), {1, 1}, &kernel));
  EXPECT_EQ(kernel, (std::vector<int64_t>{7, 7}));
  EXPECT_TRUE(adaptive_as_average(at::zeros({2, 16, 8, 6}), {2, 3}, &kernel));
  EXPECT_EQ(kernel, (std::vector<int64_t>{4, 2}));
  EXPECT_TRUE(adaptive_as_average(at::zeros({1, 3, 5, 5}), {5, 5}, &kernel));
  EXPECT_EQ(kernel, (std::vector<int64_t>{1, 1}));
  EXPECT_FALSE(adaptive_as_average(at::zeros({2, 16, 7, 7}), {2, 2}, &kernel));
  EXPECT_FALSE(adaptive_as_average(at::zeros({2, 16, 8, 7}), {2, 2}, &kernel));
  EXPECT_FALSE(adaptive_as_average(at::zeros({2, 16, 7, 7}), {14, 14}, &kernel));
  EXPECT_FALSE(adaptive_as_average(at::zeros({2, 16, 7, 7}), {1, 14}, &kernel));
  EXPECT_FALSE(adaptive_as_average(at::zeros({2, 16, 7, 7}), {0, 0}, &kernel));
  EXPECT_FALSE(adaptive_as_average(at::zeros({2, 16, 7, 7}), {0, 1}, &kernel));
  EXPECT_FALSE(adaptive_as_average(at::zeros({16, 7, 7}), {1, 1}, &kernel));
  EXPECT_FALSE(adaptive_as_average(at::zeros({2, 16, 7, 7}), {1}, &kernel));
}

struct AdaptiveCase {
  const char* name;
  std::vector<int64_t> input, output_size;
};

const AdaptiveCase kAdaptiveCases[] = {
    {"resnet_head_7x7_to_1x1", {2, 32, 7, 7}, {1, 1}},
    {"8x6_to_2x3", {3, 16, 8, 6}, {2, 3}},
};

// adaptive_avg_pool2d as a plain average pool (kernel = stride = in/out, no padding) of fp32
// bytes kept by a convolution and of u8 bytes equals stock adaptive_avg_pool2d.
TEST(HandedOverAdaptiveAvgPool, EqualsStockAdaptiveAvgPool) {
  at::manual_seed(10);
  const std::vector<int64_t> zeros = {0, 0};
  for (const AdaptiveCase& c : kAdaptiveCases) {
    for (bool channels_last : {false, true}) {
      SCOPED_TRACE(::testing::Message() << c.name << (channels_last ? " channels-last" : " NCHW"));
      // fp32 bytes kept by a convolution.
      {
        Handed handed = kept_convolution(c.input, Precision::fp32, channels_last);
        ASSERT_GT(handed.layout.get_size(), 0u);
        std::vector<int64_t> kernel;
        ASSERT_TRUE(adaptive_as_average(handed.bytes, c.output_size, &kernel));
        ASSERT_EQ(avg_pool_support(handed.bytes, kernel, kernel, zeros, false, false),
                  Fallback::none);
        dnnl::memory::desc pooled_layout;
        at::Tensor pooled = avg_pool_handed_over(handed.bytes, handed.layout, kernel, kernel,
                                                 zeros, false, &pooled_layout);
        at::Tensor values = from_layout(pooled, pooled_layout);
        at::Tensor input_values = from_layout(handed.bytes, handed.layout);
        at::Tensor expected = at::adaptive_avg_pool2d(input_values, c.output_size);
        ASSERT_EQ(values.sizes(), expected.sizes());
        const float absolute = 1e-6f * input_values.abs().max().item<float>();
        at::Tensor error = (values - expected).abs();
        EXPECT_TRUE(error.le(expected.abs() * 1e-6f + absolute).all().item<bool>())
            << "fp32 max error " << error.max().item<float>();
        EXPECT_EQ(pooled.is_contiguous(at::MemoryFormat::ChannelsLast),
                  expected.is_contiguous(at::MemoryFormat::ChannelsLast));
        EXPECT_EQ(pooled.is_contiguous(), expected.is_contiguous());
      }
      // u8 bytes.
      {
        at::Tensor x = at::randn(c.input).relu();
        if (channels_last) x = x.contiguous(at::MemoryFormat::ChannelsLast);
        const float scale = 255.f / x.abs().max().item<float>();
        dnnl::memory::desc layout;
        at::Tensor bytes = quantised_like(x, scale, true, &layout);
        std::vector<int64_t> kernel;
        ASSERT_TRUE(adaptive_as_average(bytes, c.output_size, &kernel));
        dnnl::memory::desc pooled_layout;
        at::Tensor pooled = avg_pool_handed_over(bytes, layout, kernel, kernel, zeros, true,
                                                 &pooled_layout);
        EXPECT_EQ(onednn::data_type_of(pooled_layout), dnnl::memory::data_type::u8);
        at::Tensor values = from_layout(pooled, pooled_layout, scale);
        at::Tensor expected =
            at::adaptive_avg_pool2d(from_layout(bytes, layout, scale), c.output_size);
        ASSERT_EQ(values.sizes(), expected.sizes());
        at::Tensor error = (values - expected).abs();
        EXPECT_LE(error.max().item<float>(), 0.5f / scale + 1e-6f);
        EXPECT_LT(error.mean().item<float>(), 0.35f / scale);
      }
    }
  }
}

}  // namespace
}  // namespace ipex_shim
