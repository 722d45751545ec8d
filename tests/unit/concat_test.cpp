// torch.cat of bytes handed over in oneDNN's layout (kernels/concat.h): joining u8 or s8
// NHWC bytes (INT8 chains' results), BF16 NHWC bytes and fp32 channel-blocked bytes along
// the channels must give exactly stock at::cat of their values, with stock's sizes and the
// requested memory format; inputs whose layouts oneDNN cannot join are refused by a throw
// (the caller then settles them and runs stock), never joined wrongly. INT8 inputs in
// different scales are joined in one scale, the others rescaled into it (rounded once).
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <stdexcept>
#include <string>
#include <vector>

#include "kernels/concat.h"
#include "kernels/convolution.h"
#include "kernels/onednn_context.h"
#include "kernels/primitive_cache.h"

namespace ipex_shim {
namespace {

using Tag = dnnl::memory::format_tag;
using Type = dnnl::memory::data_type;

// `values` reordered into `type` and `tag` inside a tensor of the program's fp32 size (as a
// fused convolution leaves it), and that layout.
at::Tensor in_layout(const at::Tensor& values, Type type, Tag tag, dnnl::memory::desc* layout) {
  *layout = dnnl::memory::desc(to_dims(values.sizes()), type, tag);
  at::Tensor bytes = at::empty(values.sizes(), values.options());
  EXPECT_LE(layout->get_size(), bytes.nbytes());
  dnnl::memory from = wrap(values, strided_desc(values));
  dnnl::memory to = wrap(bytes, *layout);
  cached_reorder(from.get_desc(), *layout)->execute(thread_stream(), from, to);
  thread_stream().wait();
  return bytes;
}

struct ConcatCase {
  const char* name;
  std::vector<int64_t> channels;  // of each input; N=2, H=5, W=7
  Type type;
  Tag tag;
  bool channels_last;  // the program's memory format
};
void PrintTo(const ConcatCase& c, std::ostream* os) { *os << c.name; }

class ConcatHandedOver : public ::testing::TestWithParam<ConcatCase> {};

// Whole numbers in [0, 100]: exact in u8, s8, BF16 and fp32, so the join must be exact.
TEST_P(ConcatHandedOver, EqualsStockCatOfTheValues) {
  const ConcatCase& c = GetParam();
  at::manual_seed(31);
  const auto format = c.channels_last ? at::MemoryFormat::ChannelsLast
                                      : at::MemoryFormat::Contiguous;
  std::vector<at::Tensor> values, bytes;
  std::vector<dnnl::memory::desc> layouts;
  for (int64_t channels : c.channels) {
    values.push_back(at::randint(0, 101, {2, channels, 5, 7}).to(at::kFloat).contiguous(format));
    layouts.emplace_back();
    bytes.push_back(in_layout(values.back(), c.type, c.tag, &layouts.back()));
  }
  dnnl::memory::desc joined_layout;
  const at::Tensor joined = concat_handed_over(bytes, layouts, format, &joined_layout);
  const at::Tensor expected = at::cat(values, 1);
  ASSERT_EQ(joined.sizes(), expected.sizes());
  EXPECT_EQ(joined.strides(), expected.strides());
  EXPECT_EQ(onednn::data_type_of(joined_layout), c.type);
  const at::Tensor got = from_layout(joined, joined_layout);
  EXPECT_TRUE(at::equal(got, expected)) << (got - expected).abs().max().item<float>();
}

const ConcatCase kCases[] = {
    {"squeezenet_u8_nhwc", {64, 64}, Type::u8, Tag::acdb, false},
    {"inception_four_u8_nhwc", {64, 64, 96, 32}, Type::u8, Tag::acdb, false},
    {"odd_channels_s8_nhwc", {3, 5, 7}, Type::s8, Tag::acdb, false},
    {"bf16_nhwc_channels_last", {16, 24}, Type::bf16, Tag::acdb, true},
    {"fp32_blocked", {16, 32, 8}, Type::f32, Tag::aBcd8b, false},
};

INSTANTIATE_TEST_SUITE_P(Cases, ConcatHandedOver, ::testing::ValuesIn(kCases),
                         [](const auto& info) { return std::string(info.param.name); });

// Inception's InceptionB/D: two chains' results written in the next op's scale and a max
// pool's result in its input's. The joined bytes are all in `joined_scale`: bytes q of
// scale s become round(q * joined / s), saturated to the type; inputs already in the joined
// scale are copied exactly.
TEST(ConcatHandedOverScales, OtherScalesAreRescaledIntoTheJoinedOne) {
  at::manual_seed(33);
  const float joined_scale = 12.5f;
  const std::vector<float> scales = {joined_scale, joined_scale, 13.0f};
  std::vector<at::Tensor> bytes, expected;
  std::vector<dnnl::memory::desc> layouts;
  for (size_t i = 0; i < scales.size(); ++i) {
    // Whole numbers: the u8 bytes themselves (values q / s).
    const at::Tensor q = at::randint(0, 256, {2, 16 * static_cast<int64_t>(i + 1), 3, 5})
                             .to(at::kFloat);
    layouts.emplace_back();
    bytes.push_back(in_layout(q, Type::u8, Tag::acdb, &layouts.back()));
    expected.push_back(i == 2 ? at::clamp(at::round(q * (joined_scale / scales[i])), 0, 255)
                              : q);
  }
  dnnl::memory::desc joined_layout;
  const at::Tensor joined = concat_handed_over(bytes, layouts, at::MemoryFormat::Contiguous,
                                               &joined_layout, scales, joined_scale);
  EXPECT_EQ(onednn::data_type_of(joined_layout), Type::u8);
  const at::Tensor got = from_layout(joined, joined_layout);  // the bytes, as numbers
  const at::Tensor want = at::cat(expected, 1);
  ASSERT_EQ(got.sizes(), want.sizes());
  // The rescaled part may round a half either way; the rest is exact.
  EXPECT_TRUE(at::equal(got.narrow(1, 0, 48), want.narrow(1, 0, 48)));
  EXPECT_LE((got.narrow(1, 48, 48) - want.narrow(1, 48, 48)).abs().max().item<float>(), 1.f);
  // Not left in its own scale: at least some bytes moved.
  EXPECT_FALSE(at::equal(got.narrow(1, 48, 48), from_layout(bytes[2], layouts[2])));
}

// Channel-blocked inputs whose channels end inside a block (5 and 6 channels in blocks of
// 8): oneDNN cannot put the second input at a block boundary. The join is either refused
// (a throw: the caller settles and runs stock) or exact; never wrong.
TEST(ConcatHandedOverPartialBlocks, JoinedExactlyOrRefused) {
  at::manual_seed(32);
  std::vector<at::Tensor> values, bytes;
  std::vector<dnnl::memory::desc> layouts;
  for (int64_t channels : {5, 6}) {
    values.push_back(at::randint(0, 101, {1, channels, 4, 4}).to(at::kFloat));
    // The program's tensor of `channels`, over storage that holds the padded block.
    bytes.push_back(at::zeros({1, 8, 4, 4}).narrow(1, 0, channels));
    layouts.emplace_back(to_dims(values.back().sizes()), Type::f32, Tag::aBcd8b);
    dnnl::memory from = wrap(values.back(), strided_desc(values.back()));
    dnnl::memory to = wrap(bytes.back(), layouts.back());
    cached_reorder(from.get_desc(), layouts.back())->execute(thread_stream(), from, to);
    thread_stream().wait();
  }
  dnnl::memory::desc joined_layout;
  at::Tensor joined;
  try {
    joined = concat_handed_over(bytes, layouts, at::MemoryFormat::Contiguous, &joined_layout);
  } catch (const std::exception& refused) {
    SUCCEED() << "refused: " << refused.what();
    return;
  }
  const at::Tensor got = from_layout(joined, joined_layout);
  EXPECT_TRUE(at::equal(got, at::cat(values, 1)));
}

}  // namespace
}  // namespace ipex_shim
