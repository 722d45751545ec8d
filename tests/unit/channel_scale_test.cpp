// A per-channel gate applied to bytes handed over in oneDNN's layout
// (kernels/channel_scale.h, squeeze-excitation's `x * gate`): in every layout a convolution
// keeps (channels-last, 8- and 16-channel blocks with the last block padded) and every pair
// of types the shim writes, the product must be the double-precision product of the bytes'
// values and the gate, rounded once into the result's type (INT8: in the result's scale,
// saturated), and the padding must stay zero.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

#include "kernels/channel_scale.h"
#include "kernels/convolution.h"
#include "kernels/int8.h"
#include "kernels/onednn_context.h"

namespace ipex_shim {
namespace {

using dt = dnnl::memory::data_type;
using tag = dnnl::memory::format_tag;

bool is_int8(dt type) { return type == dt::s8 || type == dt::u8; }

struct ScaleCase {
  const char* name;
  tag format;
  dt in, out;
  int64_t gate_batch;  // N or 1
  int64_t channels = 40;  // 40: the last 8- or 16-block is padded
};
void PrintTo(const ScaleCase& c, std::ostream* os) { *os << c.name; }

class ChannelScale : public ::testing::TestWithParam<ScaleCase> {};

// `values` written into `layout` (INT8: quantised with `scale`) inside a tensor of their own
// size, as a fused convolution leaves its result.
at::Tensor into_layout(const at::Tensor& values, const dnnl::memory::desc& layout, float scale) {
  at::Tensor bytes = at::zeros(values.sizes(), values.options());
  // (A blocked fp32 layout with padding would not fit: the shim never keeps one.)
  if (static_cast<int64_t>(layout.get_size()) > bytes.numel() * 4)
    throw std::runtime_error("test case: the layout does not fit the tensor");
  dnnl::memory from = wrap(values, strided_desc(values));
  dnnl::memory to = wrap(bytes, layout);
  cached_scaled_reorder(from.get_desc(), layout, scale)->execute(thread_stream(), from, to);
  thread_stream().wait();
  return bytes;
}

// Rounded to nearest, ties to even, as the FPU's default mode does.
double round_even(double v) { return std::nearbyint(v); }

double bf16_of(double v) {
  const float f = static_cast<float>(v);
  return at::BFloat16(f);  // PyTorch's round-to-nearest-even conversion
}

TEST_P(ChannelScale, EqualsTheDoubleProductRoundedOnce) {
  const ScaleCase& c = GetParam();
  at::manual_seed(11);
  const int64_t n = 3, channels = c.channels, h = 5, w = 7;
  at::Tensor x = at::randn({n, channels, h, w}) * 3;
  if (c.in == dt::u8) x = x.relu();
  at::Tensor gate = at::rand({c.gate_batch, channels, 1, 1});
  gate.select(1, 0).zero_();  // a closed gate
  gate.select(1, 1).fill_(1.f);  // a gate fully open
  const dnnl::memory::dims dims = {n, channels, h, w};
  const dnnl::memory::desc layout(dims, c.in, c.format);
  const float in_scale = c.in == dt::u8 ? 255.f / x.max().item<float>()
                         : c.in == dt::s8 ? 127.f / x.abs().max().item<float>()
                                          : 1.f;
  at::Tensor bytes = into_layout(x, layout, in_scale);
  // What the bytes hold, as values (BF16 and INT8 are rounded already).
  at::Tensor held = from_layout(bytes, layout, in_scale).to(at::kDouble);

  // The result's scale: a range the product mostly fits, with some of it saturating.
  at::Tensor exact = held * gate.to(at::kDouble);
  const double top = exact.abs().max().item<double>() * 0.8;
  const float out_scale = c.out == dt::u8 ? static_cast<float>(255.0 / top)
                          : c.out == dt::s8 ? static_cast<float>(127.0 / top)
                                            : 1.f;
  dnnl::memory::desc product_layout;
  at::Tensor product = scale_channels_handed_over(bytes, layout, in_scale, gate, c.out,
                                                  out_scale, &product_layout);
  ASSERT_EQ(product_layout, dnnl::memory::desc(dims, c.out, c.format));
  ASSERT_EQ(product.sizes(), x.sizes());
  at::Tensor got = from_layout(product, product_layout, out_scale).to(at::kDouble);

  auto e = exact.accessor<double, 4>();
  auto g = got.accessor<double, 4>();
  int64_t off_by_rounding = 0;
  for (int64_t i = 0; i < n; ++i)
    for (int64_t ch = 0; ch < channels; ++ch)
      for (int64_t y = 0; y < h; ++y)
        for (int64_t z = 0; z < w; ++z) {
          const double want_value = e[i][ch][y][z];
          if (is_int8(c.out)) {
            // In quantised steps: the product's step, saturated at the type's bounds.
            const double low = c.out == dt::u8 ? 0 : -128, high = c.out == dt::u8 ? 255 : 127;
            const double want = std::min(high, std::max(low, round_even(want_value * out_scale)));
            const double got_step = std::nearbyint(g[i][ch][y][z] * out_scale);
            // The product is formed in float (the gate and both scales folded into one
            // factor): a value within float's rounding of a tie may land one step away.
            ASSERT_LE(std::abs(got_step - want), 1.0)
                << "at " << i << "," << ch << "," << y << "," << z << ": got step " << got_step
                << ", want " << want;
            if (got_step != want) ++off_by_rounding;
            continue;
          }
          const double want = c.out == dt::bf16 ? bf16_of(want_value) : want_value;
          // BF16: the float product rounded once (one step of 8 bits where it sits on a tie
          // in float); fp32: float's own rounding.
          const double step = c.out == dt::bf16 ? std::abs(want) / 128 : std::abs(want) * 1e-6;
          const double diff = std::abs(g[i][ch][y][z] - want);
          ASSERT_LE(diff, step + 1e-12) << "at " << i << "," << ch << "," << y << "," << z
                                        << ": got " << g[i][ch][y][z] << ", want " << want;
          if (c.out == dt::bf16 && diff > 0) ++off_by_rounding;
        }
  EXPECT_LE(off_by_rounding, exact.numel() / 200) << "one-step differences: " << off_by_rounding;
  // A closed gate gives zeros, an open one the bytes' values.
  EXPECT_EQ(got.select(1, 0).abs().max().item<double>(), 0.0);
  if (!is_int8(c.out)) EXPECT_TRUE(got.select(1, 1).equal(held.select(1, 1)));

  // The padded channels of the last block stay zero.
  ChannelRuns runs;
  ASSERT_TRUE(channel_runs_of(product_layout, &runs));
  const size_t element = c.out == dt::f32 ? 4 : c.out == dt::bf16 ? 2 : 1;
  const auto* raw = static_cast<const unsigned char*>(product.data_ptr());
  for (int64_t run = 0; run < runs.batch * runs.blocks * runs.positions; ++run) {
    const int64_t first = (run / runs.positions) % runs.blocks * runs.block;
    for (int64_t k = 0; k < runs.block; ++k) {
      if (first + k < channels) continue;
      for (size_t b = 0; b < element; ++b)
        ASSERT_EQ(raw[(run * runs.block + k) * element + b], 0)
            << "padded channel " << first + k << " of run " << run;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(
    LayoutsAndTypes, ChannelScale,
    ::testing::Values(ScaleCase{"f32_nhwc", tag::acdb, dt::f32, dt::f32, 3},
                      ScaleCase{"f32_blocked16", tag::aBcd16b, dt::f32, dt::f32, 3, 48},
                      ScaleCase{"bf16_blocked16", tag::aBcd16b, dt::bf16, dt::bf16, 3},
                      ScaleCase{"bf16_nhwc_one_gate", tag::acdb, dt::bf16, dt::bf16, 1},
                      ScaleCase{"s8_to_u8_nhwc", tag::acdb, dt::s8, dt::u8, 3},
                      ScaleCase{"s8_to_s8_blocked8", tag::aBcd8b, dt::s8, dt::s8, 3},
                      ScaleCase{"u8_to_s8_blocked16", tag::aBcd16b, dt::u8, dt::s8, 3},
                      ScaleCase{"s8_to_f32_nhwc", tag::acdb, dt::s8, dt::f32, 3},
                      ScaleCase{"u8_to_u8_nhwc_one_gate", tag::acdb, dt::u8, dt::u8, 1}),
    [](const ::testing::TestParamInfo<ScaleCase>& info) { return std::string(info.param.name); });

TEST(ChannelScaleLayouts, OnlyChannelsLastAndChannelBlocksAreTaken) {
  ChannelRuns runs;
  const dnnl::memory::dims dims = {2, 24, 3, 3};
  EXPECT_TRUE(channel_runs_of(dnnl::memory::desc(dims, dt::s8, tag::acdb), &runs));
  EXPECT_EQ(runs.block, 24);
  EXPECT_EQ(runs.blocks, 1);
  EXPECT_TRUE(channel_runs_of(dnnl::memory::desc(dims, dt::bf16, tag::aBcd16b), &runs));
  EXPECT_EQ(runs.block, 16);
  EXPECT_EQ(runs.blocks, 2);
  EXPECT_EQ(runs.positions, 9);
  // NCHW, another blocking, and 5-D data are not.
  EXPECT_FALSE(channel_runs_of(dnnl::memory::desc(dims, dt::f32, tag::abcd), &runs));
  EXPECT_FALSE(channel_runs_of(dnnl::memory::desc(dims, dt::f32, tag::aBcd4b), &runs));
  EXPECT_FALSE(
      channel_runs_of(dnnl::memory::desc({2, 24, 3, 3, 3}, dt::f32, tag::acdeb), &runs));
  at::Tensor x = at::zeros({2, 24, 3, 3});
  dnnl::memory::desc out;
  EXPECT_THROW(scale_channels_handed_over(x, dnnl::memory::desc(dims, dt::f32, tag::abcd), 1.f,
                                          at::ones({2, 24, 1, 1}), dt::f32, 1.f, &out),
               std::runtime_error);
  // A gate of other channels is refused, not read past its end.
  EXPECT_THROW(scale_channels_handed_over(x, dnnl::memory::desc(dims, dt::f32, tag::acdb), 1.f,
                                          at::ones({2, 12, 1, 1}), dt::f32, 1.f, &out),
               std::runtime_error);
}


TEST_P(ChannelScale, PortableLoopsWriteTheSameBytesAsAvx2) {
  const ScaleCase& c = GetParam();
  at::manual_seed(12);
  const int64_t channels = c.channels;
  at::Tensor x = at::randn({2, channels, 9, 3}) * 3;
  at::Tensor gate = at::rand({c.gate_batch == 1 ? 1 : 2, channels, 1, 1});
  gate.select(1, 2).fill_(std::nanf(""));
  gate.select(1, 3).fill_(1e30f);  // saturates INT8, overflows BF16 to infinity
  const dnnl::memory::desc layout({2, channels, 9, 3}, c.in, c.format);
  at::Tensor bytes = into_layout(x, layout, 20.f);
  dnnl::memory::desc first_layout, second_layout;
  at::Tensor first = scale_channels_handed_over(bytes, layout, 20.f, gate, c.out, 7.f, &first_layout);
  allow_channel_avx2(false);
  at::Tensor second =
      scale_channels_handed_over(bytes, layout, 20.f, gate, c.out, 7.f, &second_layout);
  at::Tensor averages_plain = at::empty({2, channels});
  ChannelRuns runs;
  ASSERT_TRUE(channel_runs_of(layout, &runs));
  average_channel_runs(bytes.data_ptr(), c.in, 20.f, runs, averages_plain.data_ptr<float>());
  allow_channel_avx2(true);
  at::Tensor averages = at::empty({2, channels});
  average_channel_runs(bytes.data_ptr(), c.in, 20.f, runs, averages.data_ptr<float>());
  ASSERT_EQ(first_layout, second_layout);
  EXPECT_EQ(std::memcmp(first.data_ptr(), second.data_ptr(), first_layout.get_size()), 0);
  EXPECT_TRUE(averages.equal(averages_plain));
}

TEST_P(ChannelScale, AverageEqualsTheDoubleMeanOfTheBytesValues) {
  const ScaleCase& c = GetParam();
  at::manual_seed(13);
  // 300 positions: more than one 64-position partial sum.
  const int64_t channels = c.channels;
  at::Tensor x = at::randn({3, channels, 15, 20}) + 0.5;
  if (c.in == dt::u8) x = x.relu();
  const float scale = is_int8(c.in) ? 100.f / x.abs().max().item<float>() : 1.f;
  const dnnl::memory::desc layout({3, channels, 15, 20}, c.in, c.format);
  at::Tensor bytes = into_layout(x, layout, scale);
  at::Tensor held = from_layout(bytes, layout, scale).to(at::kDouble);
  ChannelRuns runs;
  ASSERT_TRUE(channel_runs_of(layout, &runs));
  at::Tensor averages = at::empty({3, channels});
  average_channel_runs(bytes.data_ptr(), c.in, scale, runs, averages.data_ptr<float>());
  at::Tensor want = held.mean({2, 3});
  const double error = (averages.to(at::kDouble) - want).abs().max().item<double>();
  // INT8 sums are exact: the double mean of the steps (the held values are the steps times
  // a float reciprocal) rounded to float. Others: float partial sums of 64 positions.
  EXPECT_LE(error, 1e-5 * want.abs().max().item<double>()) << "max error " << error;
}
}  // namespace
}  // namespace ipex_shim
