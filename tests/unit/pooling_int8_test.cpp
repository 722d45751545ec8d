// Max pooling of bytes handed over in oneDNN's layout (kernels/pooling.h): pooling INT8
// bytes must give exactly stock max_pool2d of the dequantised input, and pooling fp32 or
// BF16 bytes (blocked, as a convolution keeps them, or NHWC) exactly stock max_pool2d of
// their values, with PyTorch's output sizes (ceil_mode included) and memory format.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "kernels/convolution.h"
#include "kernels/int8.h"
#include "kernels/onednn_context.h"
#include "kernels/pooling.h"

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
  EXPECT_EQ(pooled_layout.data_type(), layout.data_type());
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

// Pools `handed` and checks values, type and memory format against stock max_pool2d.
void expect_stock_max_pool(const Handed& handed, const FloatPoolCase& c, bool channels_last) {
  ASSERT_EQ(max_pool_support(handed.bytes, c.kernel, c.stride, c.padding, c.dilation),
            Fallback::none);
  dnnl::memory::desc pooled_layout;
  at::Tensor pooled = max_pool_handed_over(handed.bytes, handed.layout, c.kernel, c.stride,
                                           c.padding, c.dilation, c.ceil_mode, &pooled_layout);
  ASSERT_GT(pooled_layout.get_size(), 0u);
  EXPECT_EQ(pooled_layout.data_type(), handed.layout.data_type());  // no conversion
  at::Tensor values = from_layout(pooled, pooled_layout);

  at::Tensor input_values = from_layout(handed.bytes, handed.layout);
  at::Tensor expected =
      at::max_pool2d(input_values, c.kernel, c.stride, c.padding, c.dilation, c.ceil_mode);
  ASSERT_EQ(values.sizes(), expected.sizes());
  EXPECT_TRUE(at::equal(values, expected)) << (values - expected).abs().max().item<float>();
  // Stock's strides: channels-last in, channels-last out.
  EXPECT_EQ(pooled.strides(), expected.strides());
  EXPECT_EQ(pooled.is_contiguous(at::MemoryFormat::ChannelsLast), channels_last);
  EXPECT_EQ(pooled.is_contiguous(), !channels_last);
}

class HandedOverMaxPool
    : public ::testing::TestWithParam<std::tuple<FloatPoolCase, Precision>> {};

TEST_P(HandedOverMaxPool, EqualsStockMaxPoolOfTheHandedOverValues) {
  const auto& [c, precision] = GetParam();
  at::manual_seed(5);
  const auto type = to_dnnl(precision);
  for (bool channels_last : {false, true}) {
    for (Source source : {Source::convolution, Source::nhwc, Source::blocked16}) {
      SCOPED_TRACE(::testing::Message() << source_name(source) << ", "
                                        << (channels_last ? "channels-last" : "NCHW")
                                        << " tensor");
      Handed handed;
      if (source == Source::convolution) {
        handed = kept_convolution(c.input, precision, channels_last);
        ASSERT_GT(handed.layout.get_size(), 0u) << "the convolution's output was not kept";
        ASSERT_EQ(handed.layout.data_type(), type);
        ASSERT_EQ(handed.bytes.is_contiguous(at::MemoryFormat::ChannelsLast), channels_last);
      } else {
        handed = reordered(c.input, type,
                           source == Source::nhwc ? dnnl::memory::format_tag::acdb
                                                  : dnnl::memory::format_tag::aBcd16b,
                           channels_last);
      }
      expect_stock_max_pool(handed, c, channels_last);
    }
  }
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

}  // namespace
}  // namespace ipex_shim
