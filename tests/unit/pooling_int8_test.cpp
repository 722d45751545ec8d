// Max pooling of INT8 bytes handed over in oneDNN's layout (kernels/pooling.h): pooling the
// quantised values must give exactly stock max_pool2d of the dequantised input, with
// PyTorch's output sizes (ceil_mode included).
#include <ATen/ATen.h>
#include <gtest/gtest.h>

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

}  // namespace
}  // namespace ipex_shim
