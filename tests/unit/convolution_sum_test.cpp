// The convolution's fused residual add (ConvolutionPostOps::sum) against plain ATen:
//   relu?(conv(x) [folded batch norm] + addend)
// computed in double. fp32 and BF16: the addend as a plain tensor (NCHW or channels-last) or
// handed over in oneDNN's layout (kept by another convolution, or NHWC bytes); INT8: u8/s8
// addends whose scale differs from the result's, checked against the fp32 reference (within
// the quantisation error) and against an ideal reference that quantises as int8.h says.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>

#include "kernels/convolution.h"
#include "kernels/int8.h"
#include "reference.h"
#include "shim/runtime.h"

namespace ipex_shim {
namespace {

using testing::conv_double;
using testing::in_double;
using testing::ConvCase;
using testing::relative_error;
using dt = dnnl::memory::data_type;
using tag = dnnl::memory::format_tag;

// ---------------------------------------------------------------------------------------
// References and comparisons.


at::Tensor batch_norm_double(const at::Tensor& conv, const BatchNormFold& fold) {
  return at::batch_norm(conv, fold.gamma.to(at::kDouble), fold.beta.to(at::kDouble),
                        fold.mean.to(at::kDouble), fold.var.to(at::kDouble), false, 0.1, fold.eps,
                        false);
}

double cosine(const at::Tensor& a, const at::Tensor& b) {
  at::Tensor x = a.to(at::kDouble).flatten(), y = b.to(at::kDouble).flatten();
  return (x * y).sum().item<double>() /
         std::sqrt(x.square().sum().item<double>() * y.square().sum().item<double>());
}

// fp32: reference.h's 1e-5 of the largest output (the add is one more fp32 rounding).
// BF16: input, weight and addend are rounded to 8 bits (~0.4% each) and the destination is
// BF16 too (~0.4% of the output) on top of the fp32 accumulation: 2% of the largest output,
// and the result must point the reference's way (cosine 0.999).
constexpr double kBf16Tolerance = 2e-2;
constexpr double kBf16MinimumCosine = 0.999;

void expect_sum_close(const at::Tensor& actual, const at::Tensor& expected, Precision precision) {
  ASSERT_EQ(actual.sizes(), expected.sizes());
  ASSERT_EQ(actual.scalar_type(), at::kFloat);
  if (precision == Precision::fp32) {
    EXPECT_LE(relative_error(actual, expected), testing::tolerance(Precision::fp32));
  } else {
    EXPECT_LE(relative_error(actual, expected), kBf16Tolerance);
    EXPECT_GE(cosine(actual, expected), kBf16MinimumCosine);
  }
}

// The bytes of two dense tensors of one size are the same (handed-over bytes are not fp32
// values, and bf16 pairs read as fp32 may be NaNs, so at::equal will not do).
bool same_bytes(const at::Tensor& a, const at::Tensor& b) {
  return a.nbytes() == b.nbytes() && std::memcmp(a.data_ptr(), b.data_ptr(), a.nbytes()) == 0;
}

// A result handed over in oneDNN's layout: the tensor that holds the bytes and their layout.
struct HandedOver {
  at::Tensor bytes;
  dnnl::memory::desc layout;
};

HandedOver convolution_kept(const at::Tensor& input, const at::Tensor& weight,
                            const c10::optional<at::Tensor>& bias, const ConvolutionArgs& args,
                            Precision precision, const ConvolutionPostOps& post_ops = {},
                            const Int8Spec* int8 = nullptr) {
  HandedOver kept;
  ConvolutionHandoff handoff;
  handoff.keep_output_layout = true;
  handoff.output_layout = &kept.layout;
  kept.bytes = convolution_forward(input, weight, bias, args, precision, post_ops, handoff, int8);
  return kept;
}

// `values` (fp32) converted and scaled by `scale` into a buffer the size of an fp32 tensor of
// their sizes, in NHWC bytes of `type`, as a fused op would hand them over.
HandedOver nhwc_bytes(const at::Tensor& values, dt type, float scale = 1.f) {
  HandedOver made{at::empty(values.sizes(), values.options()),
                  dnnl::memory::desc(to_dims(values.sizes()), type, tag::acdb)};
  dnnl::memory from = wrap(values, strided_desc(values));
  dnnl::memory to = wrap(made.bytes, made.layout);
  cached_scaled_reorder(from.get_desc(), made.layout, scale)->execute(thread_stream(), from, to);
  thread_stream().wait();
  return made;
}

// ---------------------------------------------------------------------------------------
// fp32 and BF16.

enum class Addend { nchw, channels_last, kept_by_convolution, nhwc_bytes };
const char* addend_name(Addend addend) {
  switch (addend) {
    case Addend::nchw: return "plain NCHW fp32";
    case Addend::channels_last: return "plain channels-last fp32";
    case Addend::kept_by_convolution: return "handed over by a convolution";
    case Addend::nhwc_bytes: return "handed over as NHWC bytes";
  }
  return "?";
}

class ConvolutionSum : public ::testing::TestWithParam<std::tuple<ConvCase, Precision>> {};

TEST_P(ConvolutionSum, EqualsReluOfConvolutionPlusAddend) {
  const auto& [c, precision] = GetParam();
  IPEX_SKIP_BF16_UNLESS_SUPPORTED(precision);
  at::manual_seed(71);
  at::Tensor input = at::randn(c.input);
  at::Tensor weight = at::randn(c.weight);
  c10::optional<at::Tensor> bias;
  if (c.bias) bias = at::randn({c.weight[0]});
  // The addend's producer: a convolution of the same shapes (its result has ours).
  at::Tensor other_input = at::randn(c.input), other_weight = at::randn(c.weight);
  const int64_t channels = c.weight[0];
  BatchNormFold fold{at::rand({channels}) + 0.5, at::randn({channels}), at::randn({channels}),
                     at::rand({channels}) + 0.1, 1e-3};
  ConvolutionArgs args{c.stride, c.padding, c.dilation, c.groups};
  ASSERT_EQ(convolution_support(input, weight, bias, args), Fallback::none);

  const at::Tensor conv = conv_double(input, weight, bias, args);
  const at::Tensor conv_bn = batch_norm_double(conv, fold);
  // An addend as large as the convolution's result, so that leaving it out (or scaling it
  // wrongly) is far outside the tolerance.
  const double magnitude = conv.std().item<double>();

  for (bool channels_last_input : {false, true}) {
    const at::Tensor x =
        channels_last_input ? input.contiguous(at::MemoryFormat::ChannelsLast) : input;
    const at::Tensor other_x =
        channels_last_input ? other_input.contiguous(at::MemoryFormat::ChannelsLast) : other_input;
    for (Addend kind :
         {Addend::nchw, Addend::channels_last, Addend::kept_by_convolution, Addend::nhwc_bytes}) {
      // The addend as the kernel gets it, and its values as the program sees them.
      at::Tensor addend, addend_values;
      dnnl::memory::desc layout;
      const dnnl::memory::desc* sum_layout = nullptr;
      if (kind == Addend::nchw || kind == Addend::channels_last) {
        addend = at::randn(conv.sizes()) * magnitude;
        if (kind == Addend::channels_last)
          addend = addend.contiguous(at::MemoryFormat::ChannelsLast);
        addend_values = addend;
      } else if (kind == Addend::kept_by_convolution) {
        HandedOver kept = convolution_kept(other_x, other_weight, c10::nullopt, args, precision);
        ASSERT_GT(kept.layout.get_size(), 0u) << "the producer's output was not kept";
        ASSERT_EQ(onednn::data_type_of(kept.layout), to_dnnl(precision));
        addend = kept.bytes;
        layout = kept.layout;
        sum_layout = &layout;
        addend_values = from_layout(addend, layout);
        // The handed-over bytes are the producer's result.
        expect_sum_close(addend_values, conv_double(other_x, other_weight, c10::nullopt, args),
                         precision);
      } else {
        HandedOver made = nhwc_bytes(at::randn(conv.sizes()) * magnitude, to_dnnl(precision));
        addend = made.bytes;
        layout = made.layout;
        sum_layout = &layout;
        addend_values = from_layout(addend, layout);  // BF16: the rounded values
      }
      const at::Tensor addend_before = addend.clone();

      for (bool batch_norm : {false, true}) {
        for (bool relu : {false, true}) {
          for (bool keep : {false, true}) {
            SCOPED_TRACE(::testing::Message()
                         << addend_name(kind) << ", input "
                         << (channels_last_input ? "channels-last" : "NCHW") << ", batch norm "
                         << batch_norm << ", relu " << relu << ", result kept " << keep);
            ConvolutionPostOps post_ops;
            post_ops.batch_norm = batch_norm ? &fold : nullptr;
            post_ops.relu = relu;
            post_ops.sum = &addend;
            post_ops.sum_layout = sum_layout;
            at::Tensor expected = (batch_norm ? conv_bn : conv) + addend_values.to(at::kDouble);
            if (relu) expected = at::relu(expected);

            at::Tensor actual;
            if (keep) {
              HandedOver result = convolution_kept(x, weight, bias, args, precision, post_ops);
              ASSERT_GT(result.layout.get_size(), 0u) << "the result was not kept";
              actual = from_layout(result.bytes, result.layout);
            } else {
              actual = convolution_forward(x, weight, bias, args, precision, post_ops);
              // Stock's memory format: channels-last in, channels-last out.
              EXPECT_EQ(actual.is_contiguous(at::MemoryFormat::ChannelsLast), channels_last_input);
              EXPECT_EQ(actual.is_contiguous(), !channels_last_input);
            }
            expect_sum_close(actual, expected, precision);
            if (relu) EXPECT_GE(actual.min().item<float>(), 0.f);
            // The addend is read, never written.
            EXPECT_TRUE(same_bytes(addend, addend_before));
          }
        }
      }
    }
  }
}

// Output channels are multiples of 16 so that a blocked fp32/BF16 result fits the fp32
// tensor's storage and can be kept (a padded block cannot: see OddOutputChannels below).
const ConvCase kSumCases[] = {
    {"plain3x3_odd_spatial", {2, 8, 9, 11}, {16, 8, 3, 3}, {1, 1}, {1, 1}, {1, 1}, 1, true},
    {"stride2_nopad_nobias", {3, 5, 13, 7}, {16, 5, 3, 3}, {2, 2}, {0, 0}, {1, 1}, 1, false},
    {"asymmetric_stride_pad", {1, 3, 17, 10}, {32, 3, 5, 2}, {3, 1}, {2, 1}, {1, 1}, 1, true},
    {"dilation2", {2, 4, 15, 13}, {16, 4, 3, 3}, {1, 1}, {2, 2}, {2, 2}, 1, true},
    {"groups3_strided_dilated", {2, 6, 12, 11}, {48, 2, 3, 3}, {2, 2}, {1, 1}, {2, 2}, 3, false},
    {"depthwise_stride2", {2, 16, 9, 9}, {16, 1, 3, 3}, {2, 2}, {1, 1}, {1, 1}, 16, true},
    {"pointwise", {4, 32, 7, 7}, {64, 32, 1, 1}, {1, 1}, {0, 0}, {1, 1}, 1, false},
};

INSTANTIATE_TEST_SUITE_P(Kernels, ConvolutionSum,
                         ::testing::Combine(::testing::ValuesIn(kSumCases),
                                            ::testing::Values(Precision::fp32, Precision::bf16)),
                         [](const auto& info) {
                           return std::string(std::get<0>(info.param).name) + "_" +
                                  precision_name(std::get<1>(info.param));
                         });

// 7 output channels: the result is not kept in a padded blocked layout, but the sum of a
// plain or NHWC handed-over addend must still be right.
TEST(ConvolutionSumOddChannels, PlainAndNhwcAddendsWithSevenOutputChannels) {
  IPEX_SKIP_UNLESS_BF16_KERNELS();
  at::manual_seed(72);
  at::Tensor input = at::randn({3, 5, 11, 9}), weight = at::randn({7, 5, 3, 3});
  at::Tensor bias = at::randn({7});
  const std::vector<int64_t> stride = {2, 1}, padding = {1, 0}, ones = {1, 1};
  ConvolutionArgs args{stride, padding, ones, 1};
  const at::Tensor conv = conv_double(input, weight, bias, args);
  const at::Tensor values = at::randn(conv.sizes()) * conv.std().item<double>();
  for (Precision precision : {Precision::fp32, Precision::bf16}) {
    HandedOver nhwc = nhwc_bytes(values, to_dnnl(precision));
    const at::Tensor nhwc_values = from_layout(nhwc.bytes, nhwc.layout);
    const at::Tensor channels_last = values.contiguous(at::MemoryFormat::ChannelsLast);
    for (int kind = 0; kind < 3; ++kind) {
      SCOPED_TRACE(::testing::Message() << precision_name(precision) << " addend kind " << kind);
      ConvolutionPostOps post_ops;
      post_ops.relu = true;
      post_ops.sum = kind == 0 ? &values : kind == 1 ? &channels_last : &nhwc.bytes;
      post_ops.sum_layout = kind == 2 ? &nhwc.layout : nullptr;
      at::Tensor expected = at::relu(conv + (kind == 2 ? nhwc_values : values).to(at::kDouble));
      expect_sum_close(convolution_forward(input, weight, bias, args, precision, post_ops),
                       expected, precision);
    }
  }
}

// A downsample's add over its addend's own memory (ConvolutionPostOps::sum_in_place): the
// result is right, lies in the addend's memory (nothing copied) under a storage of its own
// (INT8 op identities follow storages), and keeps that memory alive after the addend dies.
// Without a kept result there is no layout to sum in: the addend is copied and untouched.
TEST(ConvolutionSumInPlace, SumsOverTheAddendsBytesOnlyWhenTheResultIsKept) {
  at::manual_seed(73);
  at::Tensor input = at::randn({2, 16, 10, 10}), weight = at::randn({32, 16, 1, 1});
  at::Tensor other_input = at::randn({2, 16, 5, 5}), other_weight = at::randn({32, 16, 3, 3});
  const std::vector<int64_t> two = {2, 2}, one = {1, 1}, none = {0, 0};
  ConvolutionArgs args{two, none, one, 1};       // the downsample: 1x1, stride 2
  ConvolutionArgs other_args{one, one, one, 1};  // the block's last convolution: 3x3
  const at::Tensor conv = conv_double(input, weight, c10::nullopt, args);
  for (Precision precision : {Precision::fp32, Precision::bf16}) {
    if (precision == Precision::bf16 && !onednn_reaches_bf16()) continue;
    SCOPED_TRACE(precision_name(precision));
    for (bool keep : {true, false}) {
      SCOPED_TRACE(::testing::Message() << "result kept " << keep);
      HandedOver addend = convolution_kept(other_input, other_weight, c10::nullopt, other_args,
                                           precision);
      ASSERT_GT(addend.layout.get_size(), 0u);
      const at::Tensor addend_values = from_layout(addend.bytes, addend.layout);
      const at::Tensor addend_before = addend.bytes.clone();
      const void* addend_memory = addend.bytes.data_ptr();
      ConvolutionPostOps post_ops;
      post_ops.relu = true;
      post_ops.sum = &addend.bytes;
      post_ops.sum_layout = &addend.layout;
      post_ops.sum_in_place = true;
      const at::Tensor expected = at::relu(conv + addend_values.to(at::kDouble));
      if (keep) {
        HandedOver result = convolution_kept(input, weight, c10::nullopt, args, precision,
                                             post_ops);
        ASSERT_EQ(result.layout, addend.layout) << "the test needs the addend's layout";
        EXPECT_EQ(result.bytes.data_ptr(), addend_memory) << "not summed in place";
        EXPECT_NE(result.bytes.storage().unsafeGetStorageImpl(),
                  addend.bytes.storage().unsafeGetStorageImpl());
        addend = HandedOver{};  // the result alone keeps the memory now
        expect_sum_close(from_layout(result.bytes, result.layout), expected, precision);
      } else {
        at::Tensor result = convolution_forward(input, weight, c10::nullopt, args, precision,
                                                post_ops);
        EXPECT_NE(result.data_ptr(), addend_memory);
        EXPECT_TRUE(same_bytes(addend.bytes, addend_before)) << "the addend was written";
        expect_sum_close(result, expected, precision);
      }
    }
  }
}

// `conv(x) + x` with x handed over, asked to sum in place: x's bytes are what the
// convolution reads, so the sum must not go over them (a plain residual block whose
// identity is also its convolution's input would otherwise read its own partial result).
TEST(ConvolutionSumInPlace, NeverOverTheMemoryTheConvolutionReads) {
  at::manual_seed(79);
  const std::vector<int64_t> one = {1, 1};
  ConvolutionArgs args{one, one, one, 1};  // 3x3, padding 1: the result has x's shape
  at::Tensor weight = at::randn({16, 16, 3, 3}) * 0.2, first = at::randn({16, 16, 3, 3}) * 0.2;
  at::Tensor source = at::randn({2, 16, 9, 9});
  for (Precision precision : {Precision::fp32, Precision::bf16}) {
    if (precision == Precision::bf16 && !onednn_reaches_bf16()) continue;
    SCOPED_TRACE(precision_name(precision));
    HandedOver x = convolution_kept(source, first, c10::nullopt, args, precision);
    ASSERT_GT(x.layout.get_size(), 0u);
    const at::Tensor x_values = from_layout(x.bytes, x.layout);
    const at::Tensor x_before = x.bytes.clone();
    ConvolutionPostOps post_ops;
    post_ops.sum = &x.bytes;
    post_ops.sum_layout = &x.layout;
    post_ops.sum_in_place = true;
    HandedOver result;
    ConvolutionHandoff handoff;
    handoff.input_layout = &x.layout;
    handoff.keep_output_layout = true;
    handoff.output_layout = &result.layout;
    result.bytes = convolution_forward(x.bytes, weight, c10::nullopt, args, precision, post_ops,
                                       handoff);
    ASSERT_EQ(result.layout, x.layout) << "the test needs the addend's layout";
    EXPECT_NE(result.bytes.data_ptr(), x.bytes.data_ptr()) << "summed over its own input";
    EXPECT_TRUE(same_bytes(x.bytes, x_before)) << "the input was written";
    const at::Tensor expected =
        conv_double(x_values, weight, c10::nullopt, args) + x_values.to(at::kDouble);
    expect_sum_close(from_layout(result.bytes, result.layout), expected, precision);
  }
}

// ---------------------------------------------------------------------------------------
// INT8. The ideal reference quantises as kernels/int8.h says: q_x = sat(round(x s_x)),
// q_w = round(w s_w[oc]), y = (conv(q_x, q_w) + b s_x s_w) / (s_x s_w) in double, then the
// result's bytes q = sat(round(y s_o + A)) for an addend of bytes q_a and scale s_a, where A
// is the addend in the result's steps as the kernel adds it (kernels/convolution.cpp says
// why each): where oneDNN reaches AMX, the handed-over bytes as they are, scaled by the sum
// (A = q_a s_o / s_a, one rounding at the end); elsewhere first requantised into the result's
// type and scale (A = sat(round(q_a s_o / s_a))). Relu before the saturation; a u8 result
// clips at 0 anyway.

// An addend's bytes q_a of scale s_a requantised into a result of scale s_o, as the kernel
// writes them into the destination before the sum where it does not copy them as they are.
at::Tensor requantised_addend(const at::Tensor& q_a, double ratio, bool uint8);

// A handed-over addend's bytes q_a (of the type the sum reads) in the result's steps, as the
// kernel adds them on this CPU (ratio = s_o / s_a).
at::Tensor addend_steps(const at::Tensor& q_a, double ratio, bool uint8);

at::Tensor along(const at::Tensor& values, int64_t dims, int64_t axis) {
  std::vector<int64_t> shape(dims, 1);
  shape[axis] = -1;
  return values.reshape(shape);
}

at::Tensor saturate_round(const at::Tensor& scaled, bool uint8) {
  return at::clamp(at::round(scaled.to(at::kDouble)), uint8 ? 0 : -128, uint8 ? 255 : 127);
}

at::Tensor requantised_addend(const at::Tensor& q_a, double ratio, bool uint8) {
  return saturate_round(q_a.to(at::kDouble) * ratio, uint8);
}

at::Tensor addend_steps(const at::Tensor& q_a, double ratio, bool uint8) {
  return int8_sum_reads_addends_as_they_are() ? q_a.to(at::kDouble) * ratio
                                              : requantised_addend(q_a, ratio, uint8);
}

// y of the ideal INT8 convolution (before any post-op), in double.
at::Tensor int8_conv_reference(const at::Tensor& input, const at::Tensor& weight,
                               const c10::optional<at::Tensor>& bias, const ConvolutionArgs& args,
                               const Int8Spec& spec) {
  at::Tensor scales = weight_scales(weight, spec.weight_per_channel);
  at::Tensor q_x = saturate_round(input * spec.input_scale, spec.input_uint8);
  at::Tensor q_w = saturate_round(weight * along(scales, weight.dim(), 0), false);
  at::Tensor unit = along(scales.to(at::kDouble) * static_cast<double>(spec.input_scale), 4, 1);
  at::Tensor acc = conv_double(q_x, q_w, c10::nullopt, args);
  if (bias && bias->defined()) acc = acc + along(bias->to(at::kDouble), 4, 1) * unit;
  return acc / unit;
}

Int8Spec spec_for(const at::Tensor& input) {
  Int8Spec spec;
  spec.input_scale = 127.f / input.abs().max().item<float>();
  return spec;
}

// An INT8 result with output scale s_o against its ideal bytes: the kernel rounds its own
// fp32 value of y s_o + r q_a, which may sit an ulp on the other side of a .5 from the
// double one, so a step may differ, and rarely.
void expect_within_a_step(const at::Tensor& actual, const at::Tensor& ideal_steps, float s_o) {
  ASSERT_EQ(actual.sizes(), ideal_steps.sizes());
  at::Tensor steps = (actual.to(at::kDouble) * s_o - ideal_steps).abs();
  EXPECT_LE(steps.max().item<double>(), 1.001);
  EXPECT_LE((steps > 0.5).sum().item<int64_t>(), std::max<int64_t>(1, actual.numel() / 100));
}

// Against stock fp32: 8-bit inputs and weights (~0.4% each, on sums of up to 72 products)
// and the result's own rounding (half a step of 1/255 of its range): a few percent of the
// largest output. Measured 1-2%; 5% still fails an addend left out or scaled wrongly (the
// addends here are 20-60% of the result's range).
constexpr double kInt8Tolerance = 5e-2;

const ConvCase kInt8SumCases[] = {
    {"odd_stride2_pad1", {3, 5, 13, 11}, {16, 5, 3, 3}, {2, 2}, {1, 1}, {1, 1}, 1, true},
    {"groups3_dilated", {2, 6, 12, 11}, {24, 2, 3, 3}, {1, 1}, {2, 2}, {2, 2}, 3, true},
    {"pointwise_nobias", {2, 32, 7, 9}, {64, 32, 1, 1}, {1, 1}, {0, 0}, {1, 1}, 1, false},
    {"seven_channels", {2, 5, 9, 10}, {7, 5, 3, 3}, {1, 1}, {1, 1}, {1, 1}, 1, true},
};

struct Int8Problem {
  at::Tensor input, weight, other_weight;
  c10::optional<at::Tensor> bias, other_bias;
  Int8Spec spec;
};

Int8Problem make_problem(const ConvCase& c, uint64_t seed) {
  at::manual_seed(seed);
  Int8Problem p;
  p.input = at::randn(c.input);
  p.weight = at::randn(c.weight);
  p.other_weight = at::randn(c.weight) * 0.5;  // the addend's producer: smaller results
  if (c.bias) {
    p.bias = at::randn({c.weight[0]});
    p.other_bias = at::randn({c.weight[0]});
  }
  p.spec = spec_for(p.input);
  return p;
}

// A u8 addend handed over by an INT8 convolution (relu) with scale s_a; the test's own
// values of it are the bytes read back.
HandedOver u8_addend(const Int8Problem& p, const ConvolutionArgs& args, float s_a) {
  Int8Spec producer = p.spec;
  producer.output_scale = s_a;
  producer.output_uint8 = true;
  ConvolutionPostOps relu;
  relu.relu = true;
  return convolution_kept(p.input, p.other_weight, p.other_bias, args, Precision::fp32, relu,
                          &producer);
}

TEST(Int8ConvolutionSum, U8ResultWithHandedOverU8AddendOfAnotherScale) {
  for (const ConvCase& c : kInt8SumCases) {
    for (bool same_scale : {false, true}) {
      SCOPED_TRACE(::testing::Message()
                   << c.name << (same_scale ? " same" : " other") << " addend scale");
      Int8Problem p = make_problem(c, 73);
      ConvolutionArgs args{c.stride, c.padding, c.dilation, c.groups};
      ASSERT_EQ(int8_convolution_support(p.input, args), Fallback::none);
      // Scales from the fp32 ranges, as calibration would set them.
      const at::Tensor conv = conv_double(p.input, p.weight, p.bias, args);
      const at::Tensor approx_addend =
          at::relu(conv_double(p.input, p.other_weight, p.other_bias, args));
      const float s_o =
          255.f / static_cast<float>(at::relu(conv + approx_addend).max().item<double>());
      const float s_a =
          same_scale ? s_o : 255.f / static_cast<float>(approx_addend.max().item<double>());
      if (!same_scale) ASSERT_GT(std::fabs(s_o / s_a - 1.f), 0.2f) << s_o << " vs " << s_a;

      HandedOver addend = u8_addend(p, args, s_a);
      ASSERT_GT(addend.layout.get_size(), 0u);
      ASSERT_EQ(onednn::data_type_of(addend.layout), dt::u8);
      const at::Tensor addend_values = from_layout(addend.bytes, addend.layout, s_a);
      const at::Tensor q_a = at::round(addend_values.to(at::kDouble) * s_a);
      const at::Tensor addend_before = addend.bytes.clone();

      Int8Spec spec = p.spec;
      spec.output_scale = s_o;
      spec.output_uint8 = true;
      ConvolutionPostOps post_ops;
      post_ops.relu = true;
      post_ops.sum = &addend.bytes;
      post_ops.sum_layout = &addend.layout;
      post_ops.sum_scale = s_a;
      HandedOver result =
          convolution_kept(p.input, p.weight, p.bias, args, Precision::fp32, post_ops, &spec);
      ASSERT_GT(result.layout.get_size(), 0u) << "the u8 result was not kept";
      ASSERT_EQ(onednn::data_type_of(result.layout), dt::u8);
      const at::Tensor actual = from_layout(result.bytes, result.layout, s_o);

      const at::Tensor ideal_steps = saturate_round(
          int8_conv_reference(p.input, p.weight, p.bias, args, p.spec) * s_o +
              addend_steps(q_a, s_o / s_a, true),
          true);
      expect_within_a_step(actual, ideal_steps, s_o);
      const at::Tensor expected = at::relu(conv + addend_values.to(at::kDouble));
      EXPECT_LE(relative_error(actual, expected), kInt8Tolerance);
      // Not kept, the same quantised result comes back as values.
      const at::Tensor returned = convolution_forward(p.input, p.weight, p.bias, args,
                                                      Precision::fp32, post_ops, {}, &spec);
      EXPECT_TRUE(returned.is_contiguous());
      EXPECT_LE(relative_error(returned, actual), 1e-6);
      EXPECT_TRUE(same_bytes(addend.bytes, addend_before));
    }
  }
}

TEST(Int8ConvolutionSum, Fp32ResultWithHandedOverU8Addend) {
  for (const ConvCase& c : kInt8SumCases) {
    for (bool relu : {false, true}) {
      SCOPED_TRACE(::testing::Message() << c.name << " relu " << relu);
      Int8Problem p = make_problem(c, 74);
      ConvolutionArgs args{c.stride, c.padding, c.dilation, c.groups};
      const at::Tensor approx_addend =
          at::relu(conv_double(p.input, p.other_weight, p.other_bias, args));
      const float s_a = 255.f / static_cast<float>(approx_addend.max().item<double>());
      HandedOver addend = u8_addend(p, args, s_a);
      ASSERT_GT(addend.layout.get_size(), 0u);
      const at::Tensor addend_values = from_layout(addend.bytes, addend.layout, s_a);

      ConvolutionPostOps post_ops;
      post_ops.relu = relu;
      post_ops.sum = &addend.bytes;
      post_ops.sum_layout = &addend.layout;
      post_ops.sum_scale = s_a;
      const at::Tensor actual = convolution_forward(p.input, p.weight, p.bias, args,
                                                    Precision::fp32, post_ops, {}, &p.spec);
      at::Tensor ideal = int8_conv_reference(p.input, p.weight, p.bias, args, p.spec) +
                         addend_values.to(at::kDouble);
      at::Tensor expected =
          conv_double(p.input, p.weight, p.bias, args) + addend_values.to(at::kDouble);
      if (relu) {
        ideal = at::relu(ideal);
        expected = at::relu(expected);
      }
      // fp32 result: the ideal's arithmetic up to fp32 rounding of the scales and the add.
      EXPECT_LE(relative_error(actual, ideal), 1e-5);
      EXPECT_LE(relative_error(actual, expected), kInt8Tolerance);
    }
  }
}

// A signed addend (negative values, which a u8 addend would clip to 0) stored as s8 with the
// calibrated scale sum_s8_scale and rescaled by the sum: a plain fp32 addend quantised by the
// kernel, and s8 bytes handed over by another convolution with their own scale.
TEST(Int8ConvolutionSum, SignedAddendThroughSumS8Scale) {
  for (const ConvCase& c : kInt8SumCases) {
    for (bool handed_over : {false, true}) {
      for (bool uint8_result : {true, false}) {
        SCOPED_TRACE(::testing::Message()
                     << c.name << (handed_over ? " handed-over s8" : " fp32") << " addend, "
                     << (uint8_result ? "u8" : "s8") << " result");
        Int8Problem p = make_problem(c, 75);
        ConvolutionArgs args{c.stride, c.padding, c.dilation, c.groups};
        const at::Tensor conv = conv_double(p.input, p.weight, p.bias, args);
        const at::Tensor other = conv_double(p.input, p.other_weight, p.other_bias, args);

        // q_s8: the s8 bytes the sum reads, of scale s8 (as_is: s_a's bytes as they are).
        at::Tensor addend, addend_values, q_s8;
        float as_is = 0.f;
        dnnl::memory::desc layout;
        ConvolutionPostOps post_ops;
        post_ops.relu = uint8_result;
        float s8 = 0.f;
        if (!handed_over) {
          addend = other.to(at::kFloat);
          addend_values = addend;
          s8 = 127.f / addend.abs().max().item<float>();
          q_s8 = saturate_round(addend * s8, false);
        } else {
          Int8Spec producer = p.spec;
          const float s_a = 127.f / static_cast<float>(other.abs().max().item<double>());
          producer.output_scale = s_a;
          producer.output_uint8 = false;
          HandedOver kept = convolution_kept(p.input, p.other_weight, p.other_bias, args,
                                             Precision::fp32, {}, &producer);
          ASSERT_GT(kept.layout.get_size(), 0u);
          ASSERT_EQ(onednn::data_type_of(kept.layout), dt::s8);
          addend = kept.bytes;
          layout = kept.layout;
          post_ops.sum_layout = &layout;
          post_ops.sum_scale = s_a;
          addend_values = from_layout(addend, layout, s_a);
          // A wider calibrated range than the producer's: the bytes are requantised, or
          // (int8_sum_reads_addends_as_they_are) read as they are with their own scale.
          s8 = 0.5f * s_a;
          const at::Tensor q_a = at::round(addend_values.to(at::kDouble) * s_a);
          if (int8_sum_reads_addends_as_they_are()) {
            q_s8 = q_a;
            as_is = s_a;
          } else {
            q_s8 = saturate_round(q_a * (s8 / s_a), false);
          }
        }
        ASSERT_LT(addend_values.min().item<float>(), -0.1f * addend_values.max().item<float>());
        post_ops.sum = &addend;
        post_ops.sum_s8_scale = s8;

        at::Tensor expected = conv + addend_values.to(at::kDouble);
        if (uint8_result) expected = at::relu(expected);
        const float s_o = (uint8_result ? 255.f : 127.f) /
                          static_cast<float>(expected.abs().max().item<double>());
        Int8Spec spec = p.spec;
        spec.output_scale = s_o;
        spec.output_uint8 = uint8_result;
        HandedOver result =
            convolution_kept(p.input, p.weight, p.bias, args, Precision::fp32, post_ops, &spec);
        ASSERT_GT(result.layout.get_size(), 0u);
        ASSERT_EQ(onednn::data_type_of(result.layout), activation_type(uint8_result));
        const at::Tensor actual = from_layout(result.bytes, result.layout, s_o);

        const at::Tensor ideal_steps = saturate_round(
            int8_conv_reference(p.input, p.weight, p.bias, args, p.spec) * s_o +
                q_s8 * (s_o / (as_is > 0.f ? as_is : s8)),
            uint8_result);
        expect_within_a_step(actual, ideal_steps, s_o);
        EXPECT_LE(relative_error(actual, expected), kInt8Tolerance);
        if (!uint8_result) EXPECT_LT(actual.min().item<float>(), 0.f);
      }
    }
  }
}

// The sum's scale is what makes a handed-over addend's bytes mean its values. With the
// addend's scale twice the result's, ignoring the ratio adds the addend twice, applying it
// the wrong way round four times: both far outside the tolerance of the right result.
TEST(Int8ConvolutionSum, WrongSumScaleIsFarFromTheResult) {
  const ConvCase& c = kInt8SumCases[0];
  Int8Problem p = make_problem(c, 76);
  ConvolutionArgs args{c.stride, c.padding, c.dilation, c.groups};
  const at::Tensor conv = conv_double(p.input, p.weight, p.bias, args);
  const at::Tensor approx_addend =
      at::relu(conv_double(p.input, p.other_weight, p.other_bias, args));
  // s_a = 2 s_o, both leaving room so that nothing saturates.
  const float s_o =
      0.5f *
      std::min(255.f / static_cast<float>(at::relu(conv + 2 * approx_addend).max().item<double>()),
               127.f / static_cast<float>(approx_addend.max().item<double>()));
  const float s_a = 2.f * s_o;
  HandedOver addend = u8_addend(p, args, s_a);
  ASSERT_GT(addend.layout.get_size(), 0u);
  const at::Tensor addend_values = from_layout(addend.bytes, addend.layout, s_a).to(at::kDouble);
  ASSERT_LT(addend_values.max().item<double>() * s_a, 254.5);  // no addend byte saturated

  for (bool quantised_result : {true, false}) {
    SCOPED_TRACE(quantised_result ? "u8 result" : "fp32 result");
    Int8Spec spec = p.spec;
    spec.output_scale = quantised_result ? s_o : 0.f;
    spec.output_uint8 = quantised_result;
    ConvolutionPostOps post_ops;
    post_ops.relu = true;
    post_ops.sum = &addend.bytes;
    post_ops.sum_layout = &addend.layout;
    post_ops.sum_scale = s_a;
    const at::Tensor actual =
        convolution_forward(p.input, p.weight, p.bias, args, Precision::fp32, post_ops, {}, &spec);
    const at::Tensor right = at::relu(conv + addend_values);
    // u8 result: ratio ignored -> y + q_a / s_o = y + 2a; inverted (s_a / s_o) -> y + 4a.
    // fp32 result: the bytes taken as values -> y + q_a = y + a s_a.
    const std::vector<at::Tensor> wrong =
        quantised_result ? std::vector<at::Tensor>{at::relu(conv + addend_values * 2),
                                                   at::relu(conv + addend_values * 4)}
                         : std::vector<at::Tensor>{at::relu(conv + addend_values * s_a)};
    EXPECT_LE(relative_error(actual, right), kInt8Tolerance);
    for (const at::Tensor& w : wrong) EXPECT_GE(relative_error(actual, w), 4 * kInt8Tolerance);
    if (quantised_result) {
      // In steps of the result, against the ideal and the ideal that ignores the ratio.
      const at::Tensor y = int8_conv_reference(p.input, p.weight, p.bias, args, p.spec);
      const at::Tensor q_a = at::round(addend_values * s_a);
      expect_within_a_step(actual,
                           saturate_round(y * s_o + addend_steps(q_a, 0.5, true), true), s_o);
      const at::Tensor wrong_steps = saturate_round(y * s_o + q_a, true);
      EXPECT_GE((actual.to(at::kDouble) * s_o - wrong_steps).abs().max().item<double>(), 20.0);
    }
  }
}

// Two calls whose specs differ only by a factor on both the input and the output scale have
// the same oneDNN output multipliers s_o / (s_x s_w), but the s8 addend's sum scale s_o / s8
// differs: the second call must not run with the first one's sum scale.
TEST(Int8ConvolutionSum, S8SumScaleFollowsTheOutputScaleWhenMultipliersCoincide) {
  const ConvCase& c = kInt8SumCases[0];
  Int8Problem p = make_problem(c, 77);
  ConvolutionArgs args{c.stride, c.padding, c.dilation, c.groups};
  const at::Tensor conv = conv_double(p.input, p.weight, p.bias, args);
  const at::Tensor addend = conv_double(p.input, p.other_weight, p.other_bias, args).to(at::kFloat);
  const float s8 = 127.f / addend.abs().max().item<float>();
  const at::Tensor q_s8 = saturate_round(addend * s8, false);
  const at::Tensor expected = at::relu(conv + addend.to(at::kDouble));
  const float calibrated = 255.f / static_cast<float>(expected.max().item<double>());
  ConvolutionPostOps post_ops;
  post_ops.relu = true;
  post_ops.sum = &addend;
  post_ops.sum_s8_scale = s8;
  for (float factor : {0.5f, 1.f}) {  // (s_x/2, s_o/2), then (s_x, s_o)
    SCOPED_TRACE(::testing::Message() << "scales x" << factor);
    Int8Spec spec = p.spec;
    spec.input_scale = p.spec.input_scale * factor;
    spec.output_scale = calibrated * factor;
    spec.output_uint8 = true;
    const float s_o = spec.output_scale;
    const at::Tensor actual =
        convolution_forward(p.input, p.weight, p.bias, args, Precision::fp32, post_ops, {}, &spec);
    const at::Tensor y = int8_conv_reference(p.input, p.weight, p.bias, args, spec);
    expect_within_a_step(actual, saturate_round(y * s_o + q_s8 * (s_o / s8), true), s_o);
    EXPECT_LE(relative_error(actual, expected), kInt8Tolerance);
  }
}

}  // namespace
}  // namespace ipex_shim
