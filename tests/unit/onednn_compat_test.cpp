// The oneDNN 2/3 compatibility layer (kernels/onednn_compat.h) on whichever oneDNN the tests
// are built against: descriptors keep their layout when retyped and their keys tell them
// apart; reorders and INT8 convolutions apply the shim's scales (q = round(x * scale)) as a
// plain reference computes them. The INT8 case uses powers of two and small values, so every
// intermediate is exact and no kernel's s16 pairs can saturate: the results must be equal.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "kernels/onednn_compat.h"
#include "kernels/onednn_context.h"

namespace ipex_shim {
namespace {

using dt = dnnl::memory::data_type;
using tag = dnnl::memory::format_tag;

std::string key_of(const dnnl::memory::desc& desc) {
  std::string key;
  onednn::append_key(&key, desc);
  return key;
}

TEST(OnednnCompat, RetypedDescriptorKeepsItsLayout) {
  const dnnl::memory::dims dims = {2, 32, 3, 5};
  for (tag layout : {tag::aBcd16b, tag::acdb, tag::abcd}) {
    const dnnl::memory::desc bf16(dims, dt::bf16, layout);
    const dnnl::memory::desc f32 = onednn::with_data_type(bf16, dt::f32);
    EXPECT_EQ(f32, dnnl::memory::desc(dims, dt::f32, layout));
    EXPECT_EQ(onednn::data_type_of(f32), dt::f32);
    EXPECT_EQ(onednn::dims_of(f32), dims);
  }
}

TEST(OnednnCompat, KeysAreEqualExactlyForEqualDescriptors) {
  const dnnl::memory::dims dims = {2, 32, 3, 5};
  const dnnl::memory::desc nhwc(dims, dt::u8, tag::acdb);
  EXPECT_EQ(key_of(nhwc), key_of(dnnl::memory::desc(dims, dt::u8, tag::acdb)));
  // The same strides spelt out describe the same layout.
  EXPECT_EQ(key_of(nhwc), key_of(dnnl::memory::desc(dims, dt::u8, {480, 1, 160, 32})));
  for (const dnnl::memory::desc& other :
       {dnnl::memory::desc(dims, dt::s8, tag::acdb), dnnl::memory::desc(dims, dt::u8, tag::abcd),
        dnnl::memory::desc(dims, dt::u8, tag::aBcd16b),
        dnnl::memory::desc({2, 32, 5, 3}, dt::u8, tag::acdb)})
    EXPECT_NE(key_of(nhwc), key_of(other));
}

TEST(OnednnCompat, ScaledReorderMultipliesByOneScaleOrOnePerChannel) {
  const at::Tensor values = at::arange(-12, 12, at::kFloat).reshape({4, 6}) * 0.75;
  const std::vector<float> per_row = {1.f, 2.f, 0.5f, 4.f};
  for (bool per_channel : {false, true}) {
    at::Tensor quantised = at::empty({4, 6}, at::kChar);
    const std::vector<float> scales = per_channel ? per_row : std::vector<float>{2.f};
    onednn::ScaledReorder(strided_desc(values), strided_desc(quantised), scales,
                          per_channel ? 1 << 0 : 0)
        .execute(thread_stream(), wrap(values, strided_desc(values)),
                 wrap(quantised, strided_desc(quantised)));
    thread_stream().wait();
    const at::Tensor multipliers =
        per_channel ? at::tensor(per_row).reshape({4, 1}) : at::full({1}, 2.f);
    EXPECT_TRUE(at::equal(quantised, at::round(values * multipliers).to(at::kChar)))
        << "per channel: " << per_channel;
  }
}

// A 1x1 INT8 convolution through the layer: u8 src and s8 weights (per-channel scales), an
// fp32 bias, and either an fp32 result with a relu or a u8 result (scale 8) that adds an s8
// addend (scale 2) already in the destination and clips at 6, as the fused residual block
// does. The reference dequantises, adds, clips and requantises in plain arithmetic.
TEST(OnednnCompat, Int8ConvolutionAppliesTheShimsScalesBiasSumAndClip) {
  constexpr int64_t kIn = 4, kOut = 3, kSide = 3;
  const float src_scale = 2.f;
  const std::vector<float> weight_scales = {1.f, 2.f, 4.f};
  const at::Tensor src =
      (at::arange(kIn * kSide * kSide) % 11).to(at::kByte).reshape({1, kIn, kSide, kSide});
  const at::Tensor weights =
      (at::arange(kOut * kIn) % 9 - 4).to(at::kChar).reshape({kOut, kIn, 1, 1});
  const at::Tensor bias = at::tensor({0.25f, -0.5f, 1.f});
  const at::Tensor addend =
      (at::arange(kOut * kSide * kSide) % 13 - 6).to(at::kChar).reshape({1, kOut, kSide, kSide});
  const float addend_scale = 2.f, upper = 6.f;

  // acc = sum q_src q_w; y = acc / (s_src s_w[oc]) + bias[oc], in exact float arithmetic.
  const at::Tensor accumulator = at::conv2d(src.to(at::kDouble), weights.to(at::kDouble));
  const at::Tensor per_channel =
      at::tensor(weight_scales).to(at::kDouble).reshape({1, kOut, 1, 1});
  const at::Tensor values =
      accumulator / (src_scale * per_channel) + bias.to(at::kDouble).reshape({1, kOut, 1, 1});

  for (bool quantised_result : {false, true}) {
    SCOPED_TRACE(quantised_result ? "u8 result with sum and clip" : "fp32 result with relu");
    onednn::ProductScales scales;
    scales.src = src_scale;
    scales.weights = weight_scales;
    scales.weights_mask = 1 << 0;
    scales.dst = quantised_result ? 8.f : 0.f;

    dnnl::primitive_attr attr = base_attr();
    onednn::set_product_scales(attr, scales);
    dnnl::post_ops ops;
    if (quantised_result) {
      ops.append_sum(onednn::sum_scale_in_primitive(addend_scale, scales.dst), 0, dt::s8);
      onednn::append_eltwise(ops, dnnl::algorithm::eltwise_clip, 0.f,
                             onednn::clip_bound_in_primitive(upper, scales.dst));
    } else {
      onednn::append_eltwise(ops, dnnl::algorithm::eltwise_relu, 0.f, 0.f);
    }
    attr.set_post_ops(ops);

    const at::Tensor primitive_bias =
        onednn::int8_bias(bias, src_scale, at::tensor(weight_scales));
    const dnnl::memory::desc bias_md({kOut}, dt::f32, tag::a);
    const dnnl::memory::desc dst_md({1, kOut, kSide, kSide}, quantised_result ? dt::u8 : dt::f32,
                                    tag::abcd);
    const auto pd = onednn::convolution_forward_primitive_desc(
        dnnl::prop_kind::forward_inference, strided_desc(src), strided_desc(weights), &bias_md,
        dst_md, {{1, 1}, {0, 0}, {0, 0}, {0, 0}}, attr);

    // The addend's s8 bytes are in the destination before the primitive runs.
    at::Tensor dst = quantised_result ? addend.clone() : at::empty({1, kOut, kSide, kSide});
    onednn::Arguments arguments = onednn::product_scale_arguments(scales);
    arguments.emplace(DNNL_ARG_SRC, wrap(src, strided_desc(src)));
    arguments.emplace(DNNL_ARG_WEIGHTS, wrap(weights, strided_desc(weights)));
    arguments.emplace(DNNL_ARG_BIAS, wrap(primitive_bias, bias_md));
    arguments.emplace(DNNL_ARG_DST, wrap(dst, dst_md));
    execute(dnnl::convolution_forward(pd), pd, std::move(arguments));

    if (quantised_result) {
      const at::Tensor summed =
          at::clamp(values + addend.to(at::kDouble) / addend_scale, 0., upper);
      const at::Tensor expected = at::round(summed * scales.dst).to(at::kByte);
      EXPECT_TRUE(at::equal(dst.view(at::kByte), expected))
          << dst.view(at::kByte) << "\nexpected\n" << expected;
    } else {
      const at::Tensor expected = at::relu(values).to(at::kFloat);
      EXPECT_TRUE(at::equal(dst, expected)) << dst << "\nexpected\n" << expected;
    }
  }
}

}  // namespace
}  // namespace ipex_shim
