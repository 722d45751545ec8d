// INT8 convolution and linear (u8/s8 activations, s8 weights) against a plain integer
// reference: x and W are quantised as kernels/int8.h says (round half to even, saturate),
// multiplied in double (exact for these integers), the bias added in the accumulator's units
// and the sum divided by s_x * s_w. Agreement to ~1e-5 shows the kernel does exactly that
// arithmetic; a signal-to-noise ratio above 30 dB against stock fp32 shows the scales are
// applied the right way round. Ties (x * s exactly on .5) need no care: ATen and oneDNN both
// round half to even. Exactness needs VNNI or AMX (the README's target): without them oneDNN
// 2.6 keeps 7-bit weights in convolutions and its int8 GEMM can saturate 16-bit partial sums.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <ostream>
#include <stdexcept>
#include <vector>

#include "kernels/convolution.h"
#include "kernels/int8.h"
#include "kernels/matmul.h"
#include "reference.h"

namespace ipex_shim {
namespace {

using testing::conv_double;
using testing::in_double;

constexpr double kReferenceTolerance = 1e-5;  // fp32 rounding of the final scale and bias
constexpr double kMinimumSnrDb = 30.0;

// `values` shaped to broadcast along dimension `axis` of a `dims`-D tensor.
at::Tensor along(const at::Tensor& values, int64_t dims, int64_t axis) {
  std::vector<int64_t> shape(dims, 1);
  shape[axis] = -1;
  return values.reshape(shape);
}

// q = saturate(round_half_even(scaled)), as integer-valued doubles.
at::Tensor saturate_round(const at::Tensor& scaled, bool uint8) {
  return at::clamp(at::round(scaled), uint8 ? 0 : -128, uint8 ? 255 : 127).to(at::kDouble);
}

// The integer operands and the accumulator's unit s_x * s_w[oc].
struct Quantised {
  at::Tensor input, weight, units;
};

Quantised quantise_operands(const at::Tensor& input, const at::Tensor& weight,
                            const Int8Spec& spec) {
  at::Tensor scales = weight_scales(weight, spec.weight_per_channel);
  return {saturate_round(input * spec.input_scale, spec.input_uint8),
          saturate_round(weight * along(scales, weight.dim(), 0), false),
          scales.to(at::kDouble) * static_cast<double>(spec.input_scale)};
}

// y = (acc + bias * s_x * s_w) / (s_x * s_w), output channels along `axis` of acc.
at::Tensor dequantise(at::Tensor acc, const c10::optional<at::Tensor>& bias,
                      const at::Tensor& units, int64_t axis) {
  at::Tensor unit = along(units, acc.dim(), axis);
  if (bias && bias->defined()) acc = acc + along(bias->to(at::kDouble), acc.dim(), axis) * unit;
  return acc / unit;
}


at::Tensor conv_reference(const at::Tensor& input, const at::Tensor& weight,
                          const c10::optional<at::Tensor>& bias, const ConvolutionArgs& args,
                          const Int8Spec& spec) {
  Quantised q = quantise_operands(input, weight, spec);
  return dequantise(conv_double(q.input, q.weight, c10::nullopt, args), bias, q.units, 1);
}

at::Tensor linear_reference(const at::Tensor& input, const at::Tensor& weight,
                            const c10::optional<at::Tensor>& bias, const Int8Spec& spec) {
  Quantised q = quantise_operands(input, weight, spec);
  return dequantise(at::linear(q.input, q.weight), bias, q.units, input.dim() - 1);
}

double snr_db(const at::Tensor& actual, const at::Tensor& exact) {
  at::Tensor signal = exact.to(at::kDouble);
  at::Tensor noise = actual.to(at::kDouble) - signal;
  return 10.0 *
         std::log10(signal.square().sum().item<double>() / noise.square().sum().item<double>());
}

void expect_int8_result(const at::Tensor& actual, const at::Tensor& reference,
                        const at::Tensor& stock) {
  ASSERT_EQ(actual.sizes(), reference.sizes());
  ASSERT_EQ(actual.scalar_type(), at::kFloat);
  EXPECT_LE(testing::relative_error(actual, reference), kReferenceTolerance);
  EXPECT_GT(snr_db(actual, stock), kMinimumSnrDb);
}

// Signed data for s8, non-negative data for u8.
at::Tensor activations(c10::IntArrayRef sizes, bool uint8) {
  return uint8 ? at::rand(sizes) * 3 : at::randn(sizes);
}

// The calibrated scale: the largest magnitude lands on the top of the integer range.
Int8Spec spec_for(const at::Tensor& input, bool uint8, bool per_channel) {
  Int8Spec spec;
  spec.input_uint8 = uint8;
  spec.weight_per_channel = per_channel;
  spec.input_scale = (uint8 ? 255.f : 127.f) / input.abs().max().item<float>();
  return spec;
}

at::Tensor int8_conv(const at::Tensor& input, const at::Tensor& weight,
                     const c10::optional<at::Tensor>& bias, const ConvolutionArgs& args,
                     const Int8Spec& spec, const ConvolutionPostOps& post_ops = {},
                     const ConvolutionHandoff& handoff = {}) {
  return convolution_forward(input, weight, bias, args, Precision::fp32, post_ops, handoff, &spec);
}

at::Tensor int8_linear(const at::Tensor& input, const at::Tensor& weight,
                       const c10::optional<at::Tensor>& bias, const Int8Spec& spec,
                       MatmulActivation activation = MatmulActivation::none) {
  return linear_forward(input, weight, bias, Precision::fp32, activation, &spec);
}

using Int8ConvCase = testing::ConvCase;

class Int8Convolution : public ::testing::TestWithParam<
                            std::tuple<Int8ConvCase, bool /*uint8*/, bool /*per_channel*/>> {};

TEST_P(Int8Convolution, MatchesIntegerReferenceAndStockFp32) {
  const auto& [c, uint8, per_channel] = GetParam();
  at::manual_seed(41);
  at::Tensor input = activations(c.input, uint8);
  at::Tensor weight = at::randn(c.weight);
  c10::optional<at::Tensor> bias;
  if (c.bias) bias = at::randn({c.weight[0]});
  ConvolutionArgs args{c.stride, c.padding, c.dilation, c.groups};
  ASSERT_EQ(convolution_support(input, weight, bias, args), Fallback::none);
  ASSERT_EQ(int8_convolution_support(input, args), Fallback::none);
  Int8Spec spec = spec_for(input, uint8, per_channel);
  at::Tensor stock = conv_double(input, weight, bias, args);
  at::Tensor actual = int8_conv(input, weight, bias, args, spec);
  EXPECT_TRUE(actual.is_contiguous());
  expect_int8_result(actual, conv_reference(input, weight, bias, args, spec), stock);
  // Cached primitive and packed weight: the same answer again.
  EXPECT_TRUE(at::equal(actual, int8_conv(input, weight, bias, args, spec)));
  // Another input scale on the same weight: the bias in accumulator units must follow it.
  Int8Spec finer = spec;
  finer.input_scale = spec.input_scale * 0.75f;
  expect_int8_result(int8_conv(input, weight, bias, args, finer),
                     conv_reference(input, weight, bias, args, finer), stock);
}

const Int8ConvCase kInt8Cases[] = {
    {"odd_stride2_pad1", {3, 5, 13, 11}, {7, 5, 3, 3}, {2, 2}, {1, 1}, {1, 1}, 1, true},
    {"odd_pad0_nobias", {3, 5, 13, 11}, {7, 5, 3, 3}, {1, 1}, {0, 0}, {1, 1}, 1, false},
    {"dilation2", {2, 4, 15, 12}, {6, 4, 3, 3}, {1, 1}, {2, 2}, {2, 2}, 1, true},
    {"groups3_strided_dilated", {2, 6, 12, 11}, {9, 2, 3, 3}, {2, 2}, {1, 1}, {2, 2}, 3, true},
    {"depthwise", {2, 8, 9, 10}, {8, 1, 3, 3}, {1, 1}, {1, 1}, {1, 1}, 8, false},
    {"conv3d", {2, 3, 6, 7, 5}, {5, 3, 3, 3, 3}, {1, 2, 1}, {1, 0, 1}, {1, 1, 1}, 1, true},
    {"conv1d_strided", {3, 5, 17}, {7, 5, 3}, {2}, {1}, {1}, 1, true},
    {"conv1d_groups3_dilated", {2, 6, 19}, {9, 2, 3}, {1}, {2}, {2}, 3, false},
};

INSTANTIATE_TEST_SUITE_P(Int8, Int8Convolution,
                         ::testing::Combine(::testing::ValuesIn(kInt8Cases), ::testing::Bool(),
                                            ::testing::Bool()),
                         [](const auto& info) {
                           return std::string(std::get<0>(info.param).name) +
                                  (std::get<1>(info.param) ? "_u8" : "_s8") +
                                  (std::get<2>(info.param) ? "_per_channel" : "_per_tensor");
                         });

const std::vector<int64_t> kOnes = {1, 1}, kTwos = {2, 2};

TEST(Int8ConvolutionPostOps, ReluAppliesToTheDequantisedResult) {
  at::manual_seed(42);
  at::Tensor input = at::randn({3, 5, 13, 11});
  at::Tensor weight = at::randn({7, 5, 3, 3});
  at::Tensor bias = at::randn({7});
  ConvolutionArgs args{kTwos, kOnes, kOnes, 1};
  Int8Spec spec = spec_for(input, false, true);
  at::Tensor actual = int8_conv(input, weight, bias, args, spec, {nullptr, true});
  at::Tensor reference = conv_reference(input, weight, bias, args, spec);
  ASSERT_LT(reference.min().item<double>(), 0.0);  // the relu has work to do
  expect_int8_result(actual, at::relu(reference), at::relu(conv_double(input, weight, bias, args)));
}

// relu6 in INT8: oneDNN applies the output scales before the post-ops, so the clamp's bound
// must be in the result's units. A u8 result in the next op's scale (the handoff's case) and
// an fp32 one both clamp at the bound in values.
TEST(Int8ConvolutionPostOps, ClampAppliesAtItsBoundInValuesForEveryResultType) {
  at::manual_seed(43);
  at::Tensor input = at::randn({3, 5, 13, 11});
  at::Tensor weight = at::randn({7, 5, 3, 3});
  at::Tensor bias = at::randn({7});
  ConvolutionArgs args{kOnes, kOnes, kOnes, 1};
  Int8Spec spec = spec_for(input, false, true);
  at::Tensor reference = conv_reference(input, weight, bias, args, spec);
  const float upper = 0.4f * reference.max().item<float>();
  at::Tensor expected = at::clamp(reference, 0.0, upper);
  at::Tensor stock = at::clamp(conv_double(input, weight, bias, args), 0.0, upper);
  ConvolutionPostOps clamp;
  clamp.relu = true;
  clamp.relu_upper = upper;
  // fp32 result.
  expect_int8_result(int8_conv(input, weight, bias, args, spec, clamp), expected, stock);
  // u8 result, scaled so that the bound is 255 * 3/4 steps (a bound applied in steps, not
  // values, would cut at `upper` steps, i.e. almost everything).
  Int8Spec quantised = spec;
  quantised.output_uint8 = true;
  quantised.output_scale = 0.75f * 255.f / upper;
  dnnl::memory::desc layout;
  ConvolutionHandoff keep;
  keep.keep_output_layout = true;
  keep.output_layout = &layout;
  at::Tensor bytes = int8_conv(input, weight, bias, args, quantised, clamp, keep);
  ASSERT_GT(layout.get_size(), 0u);
  at::Tensor values = from_layout(bytes, layout, quantised.output_scale);
  EXPECT_LE(values.max().item<float>(), upper + 0.5f / quantised.output_scale);
  EXPECT_GE(values.max().item<float>(), upper - 0.5f / quantised.output_scale);
  EXPECT_LE((values - expected).abs().max().item<float>(),
            0.5f / quantised.output_scale + kReferenceTolerance * upper);
}

// silu and hardswish in INT8: they do not commute with the result's scale (silu(s x) is not
// s silu(x)), so oneDNN 2, which runs post-ops in the result's units, needs the scale taken
// out and put back around them, while oneDNN 3 runs them on values. Checked for an fp32
// result and for an s8 result kept in oneDNN's layout in the next op's scale (the handoff of
// EfficientNet's and MobileNetV3's blocks), whose scale is far from 1 so that an activation
// applied in steps instead of values is off by many steps.
// Depthwise too: oneDNN serves it with kernels of its own (MobileNetV3's and EfficientNet's
// depthwise chains end in these activations).
class Int8ActivationPostOps : public ::testing::TestWithParam<bool /*depthwise*/> {};

TEST_P(Int8ActivationPostOps, SiluAndHardswishApplyToValuesForEveryResultType) {
  const bool depthwise = GetParam();
  at::manual_seed(45);
  const int64_t channels = depthwise ? 16 : 5, outputs = depthwise ? 16 : 7;
  at::Tensor input = at::randn({3, channels, 13, 11});
  at::Tensor weight = at::randn({outputs, depthwise ? 1 : channels, 3, 3}) *
                      (depthwise ? 1.5 : 0.3);
  at::Tensor bias = at::randn({outputs});
  ConvolutionArgs args{kOnes, kOnes, kOnes, depthwise ? channels : 1};
  Int8Spec spec = spec_for(input, false, true);
  at::Tensor reference = conv_reference(input, weight, bias, args, spec);
  at::Tensor plain = conv_double(input, weight, bias, args);
  ASSERT_LT(reference.min().item<double>(), -3.0);  // hardswish's and silu's tails reached
  ASSERT_GT(reference.max().item<double>(), 3.0);
  using Activation = ConvolutionPostOps::Activation;
  for (Activation activation : {Activation::silu, Activation::hardswish}) {
    SCOPED_TRACE(activation == Activation::silu ? "silu" : "hardswish");
    auto apply = [&](const at::Tensor& x) {
      return activation == Activation::silu ? at::silu(x) : at::hardswish(x);
    };
    ConvolutionPostOps post_ops;
    post_ops.activation = activation;
    at::Tensor expected = apply(reference);
    expect_int8_result(int8_conv(input, weight, bias, args, spec, post_ops), expected,
                       apply(plain));
    // s8 result: the largest magnitude on 127 steps.
    Int8Spec quantised = spec;
    quantised.output_uint8 = false;
    quantised.output_scale = 127.f / expected.abs().max().item<float>();
    dnnl::memory::desc layout;
    ConvolutionHandoff keep;
    keep.keep_output_layout = true;
    keep.output_layout = &layout;
    at::Tensor bytes = int8_conv(input, weight, bias, args, quantised, post_ops, keep);
    ASSERT_GT(layout.get_size(), 0u);
    at::Tensor values = from_layout(bytes, layout, quantised.output_scale);
    EXPECT_LT(values.min().item<float>(), 0.f);  // s8: the negative tail survives
    EXPECT_LE((values - expected).abs().max().item<double>(),
              0.5 / quantised.output_scale + kReferenceTolerance * expected.abs().max().item<double>());
  }
}

INSTANTIATE_TEST_SUITE_P(Int8, Int8ActivationPostOps, ::testing::Bool(),
                         [](const auto& info) { return info.param ? "depthwise" : "dense"; });

// Two convolution sites of one shape share a primitive where oneDNN takes the scales at
// execution; each call brings its own: its weights' (made once with its packed weights), its
// input's and its result's (kept per value). Interleaved calls must not trade them. The
// weights differ tenfold in magnitude and the scales differ, so any traded scale is off by
// far more than a quantisation step.
TEST(Int8ConvolutionScales, SitesSharingAShapeKeepTheirOwnScalesCallAfterCall) {
  at::manual_seed(44);
  const ConvolutionArgs args{kOnes, kOnes, kOnes, 1};
  struct Site {
    at::Tensor input, weight, bias;
    Int8Spec spec;
    at::Tensor expected;  // the u8 result's values: the reference quantised with its scale
  };
  std::vector<Site> sites;
  for (float magnitude : {1.f, 10.f}) {
    Site site;
    site.input = at::rand({2, 16, 9, 9}) * 3 / magnitude;
    site.weight = at::randn({32, 16, 3, 3}) * magnitude;
    site.bias = at::randn({32});
    site.spec = spec_for(site.input, true, true);
    site.spec.output_uint8 = true;
    const at::Tensor reference =
        conv_reference(site.input, site.weight, site.bias, args, site.spec);
    site.spec.output_scale = 255.f / reference.max().item<float>();
    site.expected = saturate_round(reference * site.spec.output_scale, true) /
                    site.spec.output_scale;
    sites.push_back(site);
  }
  for (int round = 0; round < 3; ++round) {
    for (size_t i = 0; i < sites.size(); ++i) {
      SCOPED_TRACE(::testing::Message() << "round " << round << " site " << i);
      const Site& site = sites[i];
      // Not kept: the u8 result comes back as values (dequantised with its scale).
      at::Tensor values = int8_conv(site.input, site.weight, site.bias, args, site.spec);
      // Within one step: the kernel's rounding of a value near a half step may differ from
      // the double reference's.
      EXPECT_LE((values - site.expected).abs().max().item<double>(),
                1.0 / site.spec.output_scale + 1e-6);
      EXPECT_GT(values.max().item<float>(), 0.5f * site.expected.max().item<float>());
    }
  }
}

// W' = W * gamma / sqrt(var + eps), b' = (b - mean) * scale + beta, in fp32 as the kernel
// folds them before it computes the weight scales.
std::pair<at::Tensor, at::Tensor> fold_batch_norm(const at::Tensor& weight,
                                                  const c10::optional<at::Tensor>& bias,
                                                  const BatchNormFold& fold) {
  at::Tensor scale = (fold.var + fold.eps).rsqrt() * fold.gamma;
  at::Tensor folded_bias = ((bias ? *bias : at::zeros_like(fold.mean)) - fold.mean) * scale;
  return {weight * along(scale, weight.dim(), 0), folded_bias + fold.beta};
}

TEST(Int8ConvolutionPostOps, FoldedBatchNormIsFoldedBeforeTheWeightsAreQuantised) {
  at::manual_seed(43);
  at::Tensor input = at::randn({2, 6, 12, 11});
  at::Tensor weight = at::randn({9, 2, 3, 3});
  ConvolutionArgs args{kOnes, kOnes, kOnes, 3};
  // gamma spread over 0.2..3 so that scales on W and on W' differ a lot.
  BatchNormFold fold{at::rand({9}) * 2.8 + 0.2, at::randn({9}), at::randn({9}), at::rand({9}) + 0.1,
                     1e-3};
  for (bool with_bias : {true, false}) {
    for (bool per_channel : {true, false}) {
      for (bool relu : {false, true}) {
        SCOPED_TRACE(::testing::Message()
                     << "bias " << with_bias << " per_channel " << per_channel << " relu " << relu);
        c10::optional<at::Tensor> bias;
        if (with_bias) bias = at::randn({9});
        Int8Spec spec = spec_for(input, false, per_channel);
        auto [folded_weight, folded_bias] = fold_batch_norm(weight, bias, fold);
        at::Tensor reference = conv_reference(input, folded_weight, folded_bias, args, spec);
        at::Tensor stock =
            at::batch_norm(conv_double(input, weight, bias, args), fold.gamma.to(at::kDouble),
                           fold.beta.to(at::kDouble), fold.mean.to(at::kDouble),
                           fold.var.to(at::kDouble), false, 0.1, fold.eps, false);
        at::Tensor actual = int8_conv(input, weight, bias, args, spec, {&fold, relu});
        if (relu) {
          reference = at::relu(reference);
          stock = at::relu(stock);
        }
        expect_int8_result(actual, reference, stock);
      }
    }
  }
}

// A channels-last input: the result's strides are stock's, its values the integer reference's.
void expect_stock_memory_format(std::vector<int64_t> sizes, std::vector<int64_t> kernel,
                                at::MemoryFormat format) {
  const size_t spatial = sizes.size() - 2;
  at::Tensor input = at::randn(sizes).contiguous(format);
  at::Tensor weight = at::randn(kernel), bias = at::randn({kernel[0]});
  const std::vector<int64_t> stride(spatial, 2), padding(spatial, 1), dilation(spatial, 1);
  ConvolutionArgs args{stride, padding, dilation, 1};
  Int8Spec spec = spec_for(input, false, true);
  at::Tensor actual = int8_conv(input, weight, bias, args, spec);
  at::Tensor stock = at::convolution(input, weight, bias, stride, padding, dilation, false,
                                     std::vector<int64_t>(spatial, 0), 1);
  EXPECT_EQ(actual.suggest_memory_format(), stock.suggest_memory_format());
  EXPECT_EQ(actual.strides(), stock.strides());
  expect_int8_result(actual, conv_reference(input, weight, bias, args, spec),
                     conv_double(input, weight, bias, args));
}

TEST(Int8ConvolutionFormat, ChannelsLastInputKeepsStockMemoryFormat) {
  at::manual_seed(44);
  expect_stock_memory_format({3, 5, 13, 11}, {7, 5, 3, 3}, at::MemoryFormat::ChannelsLast);
}

// torch 1.13 returns a contiguous result for a channels_last_3d input (its
// mkldnn_conv_use_channels_last ignores 3-D); the kernel follows it.
TEST(Int8ConvolutionFormat, ChannelsLast3dInputKeepsStockMemoryFormat) {
  at::manual_seed(44);
  expect_stock_memory_format({2, 5, 6, 7, 5}, {7, 5, 3, 3, 3}, at::MemoryFormat::ChannelsLast3d);
}

TEST(Int8ConvolutionHandoff, KeptU8OutputFeedsTheNextConvolutionLikeItsValues) {
  at::manual_seed(45);
  at::Tensor input = at::randn({2, 6, 12, 11});
  at::Tensor weight = at::randn({8, 6, 3, 3}), bias = at::randn({8});
  at::Tensor next_weight = at::randn({5, 8, 3, 3}), next_bias = at::randn({5});
  ConvolutionArgs args{kOnes, kOnes, kOnes, 1};
  const ConvolutionPostOps relu{nullptr, true};
  Int8Spec spec = spec_for(input, false, true);
  at::Tensor values = int8_conv(input, weight, bias, args, spec, relu);
  const float output_scale = 255.f / values.max().item<float>();

  Int8Spec quantised_output = spec;
  quantised_output.output_scale = output_scale;
  quantised_output.output_uint8 = true;
  ConvolutionHandoff keep;
  keep.keep_output_layout = true;
  dnnl::memory::desc kept;
  keep.output_layout = &kept;
  at::Tensor kept_output = int8_conv(input, weight, bias, args, quantised_output, relu, keep);
  ASSERT_GT(kept.get_size(), 0u) << "the output was not kept";
  EXPECT_EQ(onednn::data_type_of(kept), dnnl::memory::data_type::u8);

  // The kept bytes are round(y * s_o) saturated to u8: within one step of the fp32 result
  // quantised here (the kernel rounds its own fp32 value, which may sit an ulp away), and
  // exactly equal almost everywhere.
  at::Tensor restored = from_layout(kept_output, kept, output_scale);
  at::Tensor expected_steps = saturate_round(values * output_scale, true);
  at::Tensor step_error = (restored.to(at::kDouble) * output_scale - expected_steps).abs();
  EXPECT_LE(step_error.max().item<double>(), 1.001);
  EXPECT_LE((step_error > 0.5).sum().item<int64_t>(), values.numel() / 100);
  // Not kept, the same quantised result comes back as values.
  at::Tensor returned = int8_conv(input, weight, bias, args, quantised_output, relu);
  EXPECT_LE(testing::relative_error(returned, restored), 1e-6);

  Int8Spec next;
  next.input_scale = output_scale;
  next.input_uint8 = true;
  ConvolutionHandoff handed;
  handed.input_layout = &kept;
  handed.input_scale = output_scale;
  at::Tensor from_kept = int8_conv(kept_output, next_weight, next_bias, args, next, {}, handed);
  at::Tensor from_values = int8_conv(restored, next_weight, next_bias, args, next);
  EXPECT_LE(testing::relative_error(from_kept, from_values), 1e-6);
  expect_int8_result(from_kept, conv_reference(restored, next_weight, next_bias, args, next),
                     conv_double(restored, next_weight, next_bias, args));
}

// int8 mode runs an op its config leaves out of INT8 in BF16 (IPEX_INT8_FALLBACK), between
// INT8 ones: a BF16 convolution's kept bytes feed an INT8 convolution (quantised in the
// reorder it makes anyway), and a BF16 convolution adds a handed-over INT8 addend (a
// residual block's identity) through its sum. Each must equal the same call on the values.
TEST(Int8ConvolutionHandoff, Bf16AndInt8ResultsCrossInBothDirectionsLikeTheirValues) {
  IPEX_SKIP_UNLESS_BF16_KERNELS();
  at::manual_seed(46);
  at::Tensor input = at::randn({2, 24, 10, 9});
  at::Tensor weight = at::randn({32, 24, 3, 3}) * 0.2, bias = at::randn({32});
  at::Tensor next_weight = at::randn({16, 32, 1, 1}) * 0.2, next_bias = at::randn({16});
  ConvolutionArgs args{kOnes, kOnes, kOnes, 1};
  const std::vector<int64_t> no_padding = {0, 0};
  ConvolutionArgs pointwise{kOnes, no_padding, kOnes, 1};

  // BF16 -> INT8.
  ConvolutionHandoff keep;
  keep.keep_output_layout = true;
  dnnl::memory::desc kept;
  keep.output_layout = &kept;
  at::Tensor kept_bf16 =
      convolution_forward(input, weight, bias, args, Precision::bf16, {}, keep, nullptr);
  ASSERT_GT(kept.get_size(), 0u) << "the BF16 output was not kept";
  ASSERT_EQ(onednn::data_type_of(kept), dnnl::memory::data_type::bf16);
  at::Tensor values = from_layout(kept_bf16, kept, 1.f);
  EXPECT_LE(testing::relative_error(values,
                                    convolution_forward(input, weight, bias, args,
                                                        Precision::bf16, {}, {}, nullptr)),
            1e-6);
  Int8Spec next = spec_for(values, false, true);
  ConvolutionHandoff handed;
  handed.input_layout = &kept;
  handed.input_scale = 1.f;
  at::Tensor from_kept =
      int8_conv(kept_bf16, next_weight, next_bias, pointwise, next, {}, handed);
  at::Tensor from_values = int8_conv(values, next_weight, next_bias, pointwise, next);
  EXPECT_LE(testing::relative_error(from_kept, from_values), 1e-6);
  expect_int8_result(from_kept, conv_reference(values, next_weight, next_bias, pointwise, next),
                     conv_double(values, next_weight, next_bias, pointwise));

  // INT8 -> BF16, as a residual addend: the identity kept as s8 bytes with its scale.
  at::Tensor identity_input = at::randn({2, 24, 10, 9});
  Int8Spec identity_spec = spec_for(identity_input, false, true);
  const at::Tensor identity_values =
      int8_conv(identity_input, weight, bias, args, identity_spec);
  identity_spec.output_scale = 127.f / identity_values.abs().max().item<float>();
  identity_spec.output_uint8 = false;
  dnnl::memory::desc identity_layout;
  ConvolutionHandoff keep_identity;
  keep_identity.keep_output_layout = true;
  keep_identity.output_layout = &identity_layout;
  at::Tensor identity_bytes =
      int8_conv(identity_input, weight, bias, args, identity_spec, {}, keep_identity);
  ASSERT_GT(identity_layout.get_size(), 0u) << "the INT8 identity was not kept";
  ASSERT_EQ(onednn::data_type_of(identity_layout), dnnl::memory::data_type::s8);
  at::Tensor identity = from_layout(identity_bytes, identity_layout, identity_spec.output_scale);

  at::Tensor second_weight = at::randn({32, 32, 3, 3}) * 0.2;
  ConvolutionPostOps sum_bytes;
  sum_bytes.sum = &identity_bytes;
  sum_bytes.sum_layout = &identity_layout;
  sum_bytes.sum_scale = identity_spec.output_scale;
  ConvolutionPostOps sum_values;
  sum_values.sum = &identity;
  at::Tensor summed = convolution_forward(values, second_weight, c10::nullopt, args,
                                          Precision::bf16, sum_bytes, {}, nullptr);
  at::Tensor expected = convolution_forward(values, second_weight, c10::nullopt, args,
                                            Precision::bf16, sum_values, {}, nullptr);
  // The s8 addend is rescaled into BF16 (one rounding more than the values' own addend).
  EXPECT_LE(testing::relative_error(summed, expected), 1e-2);
  EXPECT_LE(testing::relative_error(summed, conv_double(values, second_weight, c10::nullopt,
                                                        args) + identity.to(at::kDouble)),
            2e-2);
}

// 8-bit weights with VNNI or AMX; below them 7-bit ones, so that oneDNN's 16-bit pair sums of
// u8 x s8 products (2 * 255 * 63 = 32130) never saturate.
TEST(Int8WeightBound, Is127WithVnniElse63) {
  EXPECT_EQ(int8_weight_bound(), onednn_reaches_int8() ? 127 : 63) << onednn_isa();
  EXPECT_LE(2 * 255 * (onednn_reaches_int8() ? 0 : int8_weight_bound()), 32767);
  at::Tensor weight = at::randn({3, 4});
  EXPECT_TRUE(at::equal(weight_scales(weight, true),
                        weight_scales(weight, true, int8_weight_bound())));
}

TEST(Int8WeightScales, AreTheBoundOverTheLargestMagnitudePerChannelOrPerTensor) {
  at::manual_seed(46);
  at::Tensor weight = at::randn({4, 3, 2, 2});
  weight[2].zero_();
  weight[1][0][1][0] = -9.f;  // the tensor's largest magnitude, negative
  EXPECT_FLOAT_EQ(weight_scales(weight, true, 63)[1].item<float>(), 63.f / 9.f);
  at::Tensor per_channel = weight_scales(weight, true, 127);
  ASSERT_EQ(per_channel.scalar_type(), at::kFloat);
  ASSERT_EQ(per_channel.sizes(), (std::vector<int64_t>{4}));
  for (int64_t oc : {0, 1, 3})
    EXPECT_FLOAT_EQ(per_channel[oc].item<float>(), 127.f / weight[oc].abs().max().item<float>());
  EXPECT_FLOAT_EQ(per_channel[1].item<float>(), 127.f / 9.f);
  EXPECT_EQ(per_channel[2].item<float>(), 1.f);  // a channel of zeros
  at::Tensor per_tensor = weight_scales(weight, false, 127);
  ASSERT_EQ(per_tensor.sizes(), (std::vector<int64_t>{4}));
  for (int64_t oc = 0; oc < 4; ++oc) EXPECT_FLOAT_EQ(per_tensor[oc].item<float>(), 127.f / 9.f);
  EXPECT_TRUE(at::equal(weight_scales(at::zeros({3, 5}), false), at::ones({3})));
}

TEST(Int8ZeroWeightChannel, OutputIsTheBiasForConvolutionAndLinear) {
  at::manual_seed(47);
  at::Tensor input = at::randn({2, 3, 8, 8});
  at::Tensor weight = at::randn({4, 3, 3, 3}), bias = at::randn({4});
  weight[1].zero_();
  ConvolutionArgs args{kOnes, kOnes, kOnes, 1};
  Int8Spec spec = spec_for(input, false, true);
  at::Tensor conv = int8_conv(input, weight, bias, args, spec);
  EXPECT_TRUE(at::allclose(conv.select(1, 1), bias[1].expand({2, 8, 8}), 1e-6, 1e-6));
  EXPECT_LE(testing::relative_error(conv, conv_reference(input, weight, bias, args, spec)),
            kReferenceTolerance);

  at::Tensor rows = at::randn({6, 10});
  at::Tensor matrix = at::randn({5, 10}), linear_bias = at::randn({5});
  matrix[3].zero_();
  Int8Spec linear_spec = spec_for(rows, false, true);
  at::Tensor linear = int8_linear(rows, matrix, linear_bias, linear_spec);
  EXPECT_TRUE(at::allclose(linear.select(1, 3), linear_bias[3].expand({6}), 1e-6, 1e-6));
}

TEST(Int8Linear, MatchesIntegerReferenceFor2dAnd3dInputsWithAndWithoutBias) {
  at::manual_seed(48);
  at::Tensor weight = at::randn({19, 33});
  at::Tensor bias = at::randn({19});
  for (bool uint8 : {false, true}) {
    for (bool per_channel : {true, false}) {
      for (auto sizes : {std::vector<int64_t>{5, 33}, std::vector<int64_t>{2, 7, 33}}) {
        at::Tensor input = activations(sizes, uint8);
        Int8Spec spec = spec_for(input, uint8, per_channel);
        // Without then with the bias on the same weight and scale: the packed bias follows.
        for (bool with_bias : {false, true}) {
          SCOPED_TRACE(::testing::Message()
                       << (uint8 ? "u8" : "s8") << " per_channel " << per_channel << " rank "
                       << sizes.size() << " bias " << with_bias);
          c10::optional<at::Tensor> b = with_bias ? c10::optional<at::Tensor>(bias) : c10::nullopt;
          ASSERT_EQ(linear_support(input, weight, b), Fallback::none);
          at::Tensor actual = int8_linear(input, weight, b, spec);
          EXPECT_TRUE(actual.is_contiguous());
          expect_int8_result(
              actual, linear_reference(input, weight, b, spec),
              at::linear(input.to(at::kDouble), weight.to(at::kDouble), in_double(b)));
        }
      }
    }
  }
}

// As Int8ConvolutionScales above, for two linear sites of one shape.
TEST(Int8Linear, SitesSharingAShapeKeepTheirOwnScalesCallAfterCall) {
  at::manual_seed(50);
  std::vector<at::Tensor> inputs, weights;
  std::vector<Int8Spec> specs;
  for (float magnitude : {1.f, 10.f}) {
    inputs.push_back(at::randn({6, 40}) / magnitude);
    weights.push_back(at::randn({24, 40}) * magnitude);
    specs.push_back(spec_for(inputs.back(), false, true));
  }
  const at::Tensor bias = at::randn({24});
  for (int round = 0; round < 3; ++round) {
    for (size_t i = 0; i < inputs.size(); ++i) {
      SCOPED_TRACE(::testing::Message() << "round " << round << " site " << i);
      expect_int8_result(
          int8_linear(inputs[i], weights[i], bias, specs[i]),
          linear_reference(inputs[i], weights[i], bias, specs[i]),
          at::linear(inputs[i].to(at::kDouble), weights[i].to(at::kDouble), in_double(bias)));
    }
  }
}

TEST(Int8Linear, ReluAndGeluErfApplyToTheDequantisedResult) {
  at::manual_seed(49);
  at::Tensor input = at::randn({9, 24});
  at::Tensor weight = at::randn({10, 24}), bias = at::randn({10});
  for (bool per_channel : {true, false}) {
    Int8Spec spec = spec_for(input, false, per_channel);
    at::Tensor y = linear_reference(input, weight, bias, spec);
    ASSERT_LT(y.min().item<double>(), 0.0);
    EXPECT_LE(testing::relative_error(
                  int8_linear(input, weight, bias, spec, MatmulActivation::relu), at::relu(y)),
              kReferenceTolerance);
    // oneDNN's erf is an approximation: ~1e-6, well inside 1e-4.
    EXPECT_LE(testing::relative_error(
                  int8_linear(input, weight, bias, spec, MatmulActivation::gelu_erf), at::gelu(y)),
              1e-4);
  }
}

TEST(Int8Linear, TransposedViewsMatchIntegerReference) {
  at::manual_seed(50);
  at::Tensor input = at::randn({33, 7}).t();    // (7, 33), strided
  at::Tensor weight = at::randn({33, 19}).t();  // (19, 33), column-major
  at::Tensor bias = at::randn({19});
  for (bool per_channel : {true, false}) {
    Int8Spec spec = spec_for(input, false, per_channel);
    expect_int8_result(
        int8_linear(input, weight, bias, spec), linear_reference(input, weight, bias, spec),
        at::linear(input.to(at::kDouble), weight.to(at::kDouble), bias.to(at::kDouble)));
  }
}

// With s_x = 1 and an identity weight (s_w = q_w = the weight bound on the diagonal) y = q_x
// (within the float rounding of q_w / s_w): the quantisation of x itself, ties and
// saturation included, shows up in the result.
TEST(Int8Linear, InputRoundsHalfToEvenAndSaturates) {
  at::Tensor identity = at::eye(6);
  Int8Spec spec;
  at::Tensor signed_input = at::tensor({0.5f, 1.5f, 2.5f, -2.5f, 300.f, -300.f}).reshape({1, 6});
  EXPECT_TRUE(at::allclose(int8_linear(signed_input, identity, c10::nullopt, spec),
                           at::tensor({0.f, 2.f, 2.f, -2.f, 127.f, -128.f}).reshape({1, 6}), 0,
                           1e-4));
  spec.input_uint8 = true;  // negatives clamp to 0
  at::Tensor unsigned_input = at::tensor({0.5f, 3.5f, 254.5f, 253.5f, -7.f, 300.f}).reshape({1, 6});
  EXPECT_TRUE(at::allclose(int8_linear(unsigned_input, identity, c10::nullopt, spec),
                           at::tensor({0.f, 4.f, 254.f, 254.f, 0.f, 255.f}).reshape({1, 6}), 0,
                           1e-4));
  // Saturation in a real product: three times the calibrated scale clips the tails.
  at::manual_seed(51);
  at::Tensor input = at::randn({6, 40}), weight = at::randn({8, 40}), bias = at::randn({8});
  for (bool uint8 : {false, true}) {
    Int8Spec clipping = spec_for(input, uint8, true);
    clipping.input_scale = 3.f * 127.f / input.abs().max().item<float>();
    EXPECT_LE(testing::relative_error(int8_linear(input, weight, bias, clipping),
                                      linear_reference(input, weight, bias, clipping)),
              kReferenceTolerance)
        << (uint8 ? "u8" : "s8");
  }
}

// ---- Transposed convolutions -------------------------------------------------------------
// The weight is (in, out / groups, k...): output channel g * (out / groups) + j is column j
// of group g's rows, and its scale s_w[oc] (transposed_weight_scales) multiplies that column.

// `per_output` (one value per output channel) shaped to broadcast over a transposed weight.
at::Tensor over_transposed_weight(const at::Tensor& weight, const at::Tensor& per_output,
                                  int64_t groups) {
  const int64_t in_per_group = weight.size(0) / groups, out_per_group = weight.size(1);
  std::vector<int64_t> grouped = {groups, in_per_group, out_per_group};
  std::vector<int64_t> shape = {groups, 1, out_per_group};
  for (int64_t d = 2; d < weight.dim(); ++d) {
    grouped.push_back(weight.size(d));
    shape.push_back(1);
  }
  return (weight.reshape(grouped) * per_output.reshape(shape)).reshape(weight.sizes());
}

at::Tensor conv_transpose_double(const at::Tensor& input, const at::Tensor& weight,
                                 const c10::optional<at::Tensor>& bias,
                                 const ConvolutionArgs& args) {
  return at::convolution(input.to(at::kDouble), weight.to(at::kDouble), in_double(bias),
                         args.stride, args.padding, args.dilation, true, args.output_padding,
                         args.groups);
}

// q_x = sat(round(x * s_x)), q_w = round(w * s_w[oc]) with the given per-output-channel
// weight scales, acc = conv_transpose(q_x, q_w) in double (exact), y = (acc + b s_x s_w) /
// (s_x s_w) along dim 1.
at::Tensor conv_transpose_reference_with(const at::Tensor& input, const at::Tensor& weight,
                                         const c10::optional<at::Tensor>& bias,
                                         const ConvolutionArgs& args, const Int8Spec& spec,
                                         const at::Tensor& scales) {
  at::Tensor q_input = saturate_round(input * spec.input_scale, spec.input_uint8);
  // w * s_w in fp32, as the kernel's quantising reorder computes it (and quantise_operands).
  at::Tensor q_weight =
      saturate_round(over_transposed_weight(weight, scales.to(at::kFloat), args.groups), false);
  at::Tensor units = scales.to(at::kDouble) * static_cast<double>(spec.input_scale);
  return dequantise(conv_transpose_double(q_input, q_weight, c10::nullopt, args), bias, units, 1);
}

at::Tensor conv_transpose_reference(const at::Tensor& input, const at::Tensor& weight,
                                    const c10::optional<at::Tensor>& bias,
                                    const ConvolutionArgs& args, const Int8Spec& spec) {
  return conv_transpose_reference_with(
      input, weight, bias, args, spec,
      transposed_weight_scales(weight, args.groups, spec.weight_per_channel));
}

// relative_error of each output channel (dim 1) on its own: max |a - e| / max |e| over it.
std::vector<double> per_channel_relative_error(const at::Tensor& actual,
                                               const at::Tensor& expected) {
  std::vector<double> errors;
  for (int64_t c = 0; c < expected.size(1); ++c)
    errors.push_back(testing::relative_error(actual.select(1, c), expected.select(1, c)));
  return errors;
}

struct Int8TransposedCase {
  const char* name;
  std::vector<int64_t> input;   // N, C_in, spatial...
  std::vector<int64_t> weight;  // C_in, C_out / groups, kernel...
  std::vector<int64_t> stride, padding, output_padding, dilation;
  int64_t groups;
  bool bias;
};
void PrintTo(const Int8TransposedCase& c, std::ostream* os) { *os << c.name; }

class Int8TransposedConvolution
    : public ::testing::TestWithParam<
          std::tuple<Int8TransposedCase, bool /*uint8*/, bool /*per_channel*/>> {};

TEST_P(Int8TransposedConvolution, MatchesIntegerReferenceAndStockFp32) {
  const auto& [c, uint8, per_channel] = GetParam();
  at::manual_seed(52);
  at::Tensor input = activations(c.input, uint8);
  at::Tensor weight = at::randn(c.weight);
  c10::optional<at::Tensor> bias;
  if (c.bias) bias = at::randn({c.weight[1] * c.groups});
  ConvolutionArgs args{c.stride, c.padding, c.dilation, c.groups, true, c.output_padding};
  ASSERT_EQ(convolution_support(input, weight, bias, args), Fallback::none);
  ASSERT_EQ(int8_convolution_support(input, args), Fallback::none);
  Int8Spec spec = spec_for(input, uint8, per_channel);
  at::Tensor stock = conv_transpose_double(input, weight, bias, args);
  at::Tensor actual = int8_conv(input, weight, bias, args, spec);
  EXPECT_TRUE(actual.is_contiguous());  // stock 1.13's transposed results are contiguous
  ASSERT_EQ(actual.sizes(), stock.sizes());
  expect_int8_result(actual, conv_transpose_reference(input, weight, bias, args, spec), stock);
  // Cached primitive and packed weight: the same answer again.
  EXPECT_TRUE(at::equal(actual, int8_conv(input, weight, bias, args, spec)));
  // Another input scale on the same weight: the bias in accumulator units must follow it.
  Int8Spec finer = spec;
  finer.input_scale = spec.input_scale * 0.75f;
  expect_int8_result(int8_conv(input, weight, bias, args, finer),
                     conv_transpose_reference(input, weight, bias, args, finer), stock);
}

const Int8TransposedCase kInt8TransposedCases[] = {
    {"stride2_pad1_outpad1", {2, 5, 7, 6}, {5, 4, 3, 3}, {2, 2}, {1, 1}, {1, 1}, {1, 1}, 1, true},
    {"groups3_dilated", {2, 6, 6, 5}, {6, 3, 3, 3}, {2, 1}, {2, 1}, {1, 0}, {2, 2}, 3, true},
    {"nobias", {3, 4, 6, 7}, {4, 6, 3, 3}, {1, 1}, {0, 0}, {0, 0}, {1, 1}, 1, false},
    {"upsample_k4_s2", {2, 8, 7, 9}, {8, 4, 4, 4}, {2, 2}, {1, 1}, {0, 0}, {1, 1}, 1, true},
    {"depthwise_upsample", {2, 8, 6, 5}, {8, 1, 4, 4}, {2, 2}, {1, 1}, {0, 0}, {1, 1}, 8, false},
    {"transpose1d", {3, 4, 11}, {4, 5, 3}, {3}, {2}, {2}, {1}, 1, true},
    {"transpose1d_groups2", {2, 6, 9}, {6, 2, 4}, {2}, {1}, {1}, {1}, 2, false},
    {"transpose3d", {2, 3, 4, 5, 3}, {3, 2, 3, 3, 3}, {2, 1, 2}, {1, 1, 1}, {1, 0, 1}, {1, 1, 1},
     1, true},
};

INSTANTIATE_TEST_SUITE_P(Int8, Int8TransposedConvolution,
                         ::testing::Combine(::testing::ValuesIn(kInt8TransposedCases),
                                            ::testing::Bool(), ::testing::Bool()),
                         [](const auto& info) {
                           return std::string(std::get<0>(info.param).name) +
                                  (std::get<1>(info.param) ? "_u8" : "_s8") +
                                  (std::get<2>(info.param) ? "_per_channel" : "_per_tensor");
                         });

TEST(Int8TransposedWeightScales, AreTheBoundOverTheLargestMagnitudeOfEachOutputColumn) {
  at::manual_seed(53);
  // groups 2, 4 input channels, 3 outputs per group: output oc = g * 3 + j.
  at::Tensor weight = at::randn({4, 3, 2, 2});
  weight.select(1, 1).narrow(0, 2, 2).zero_();  // output channel 4 (group 1, column 1)
  weight[1][2][0][1] = -9.f;                    // output channel 2 (group 0, column 2)
  EXPECT_FLOAT_EQ(transposed_weight_scales(weight, 2, true, 63)[2].item<float>(), 63.f / 9.f);
  at::Tensor per_channel = transposed_weight_scales(weight, 2, true, 127);
  ASSERT_EQ(per_channel.scalar_type(), at::kFloat);
  ASSERT_EQ(per_channel.sizes(), (std::vector<int64_t>{6}));
  for (int64_t g = 0; g < 2; ++g) {
    for (int64_t j = 0; j < 3; ++j) {
      const int64_t oc = g * 3 + j;
      if (oc == 4) continue;
      float largest = weight.narrow(0, 2 * g, 2).select(1, j).abs().max().item<float>();
      EXPECT_FLOAT_EQ(per_channel[oc].item<float>(), 127.f / largest) << "oc " << oc;
    }
  }
  EXPECT_FLOAT_EQ(per_channel[2].item<float>(), 127.f / 9.f);
  EXPECT_EQ(per_channel[4].item<float>(), 1.f);  // a channel of zeros
  at::Tensor per_tensor = transposed_weight_scales(weight, 2, false, 127);
  ASSERT_EQ(per_tensor.sizes(), (std::vector<int64_t>{6}));
  for (int64_t oc = 0; oc < 6; ++oc) EXPECT_FLOAT_EQ(per_tensor[oc].item<float>(), 127.f / 9.f);
  // groups 1 with in != out: one scale per output column, not per input row.
  at::Tensor wide = at::randn({2, 5, 3});
  at::Tensor columns = transposed_weight_scales(wide, 1, true, 127);
  ASSERT_EQ(columns.sizes(), (std::vector<int64_t>{5}));
  for (int64_t j = 0; j < 5; ++j)
    EXPECT_FLOAT_EQ(columns[j].item<float>(), 127.f / wide.select(1, j).abs().max().item<float>());
}

// Output channel oc's weights scaled by 10^oc. Per-channel scales over the right dimension
// (each output column) keep every output channel to INT8 precision; scales over dim 0 (input
// channels: weight_scales, as for a direct convolution) would give every output channel the
// scale of its row's largest column and round the small channels to (nearly) nothing.
TEST(Int8TransposedConvolution, PerChannelScalesFollowOutputChannelsNotInputChannels) {
  struct Shape {
    int64_t groups, in_per_group, out_per_group;
  };
  // in == out so that the wrong scales (one per input row) can be read as per-output ones.
  for (Shape shape : {Shape{1, 4, 4}, Shape{2, 4, 4}}) {
    SCOPED_TRACE(::testing::Message() << "groups " << shape.groups);
    at::manual_seed(54);
    const int64_t in = shape.groups * shape.in_per_group;
    const int64_t out = shape.groups * shape.out_per_group;
    ASSERT_EQ(in, out);
    at::Tensor magnitudes = at::pow(10.0, at::arange(out, at::kDouble)).to(at::kFloat);
    at::Tensor weight =
        over_transposed_weight(at::randn({in, shape.out_per_group, 3, 3}), magnitudes,
                               shape.groups)
            .contiguous();
    at::Tensor input = at::randn({2, in, 6, 5});
    at::Tensor bias = at::randn({out}) * magnitudes;
    const std::vector<int64_t> two = {2, 2}, one = {1, 1};
    ConvolutionArgs args{two, one, one, shape.groups, true, one};
    ASSERT_EQ(convolution_support(input, weight, bias, args), Fallback::none);
    Int8Spec spec = spec_for(input, false, true);

    at::Tensor stock = conv_transpose_double(input, weight, bias, args);
    at::Tensor actual = int8_conv(input, weight, bias, args, spec);
    ASSERT_EQ(actual.sizes(), stock.sizes());
    at::Tensor reference = conv_transpose_reference(input, weight, bias, args, spec);
    at::Tensor wrong_scales = weight_scales(weight, true);  // over dim 0: input channels
    ASSERT_EQ(wrong_scales.size(0), out);
    at::Tensor wrong =
        conv_transpose_reference_with(input, weight, bias, args, spec, wrong_scales);

    std::vector<double> to_reference = per_channel_relative_error(actual, reference);
    std::vector<double> to_stock = per_channel_relative_error(actual, stock);
    std::vector<double> wrong_to_stock = per_channel_relative_error(wrong, stock);
    std::vector<double> to_wrong = per_channel_relative_error(actual, wrong);
    double worst_to_stock = 0, worst_wrong_to_stock = 0, worst_to_wrong = 0;
    for (int64_t oc = 0; oc < out; ++oc) {
      SCOPED_TRACE(::testing::Message() << "output channel " << oc);
      // Exact arithmetic channel by channel (a global relative error would hide the small
      // channels under the 10^(out-1) one).
      EXPECT_LE(to_reference[oc], kReferenceTolerance);
      // INT8 precision on every channel: 8-bit x and w give ~1% of the channel's range.
      EXPECT_LE(to_stock[oc], 0.05);
      EXPECT_GT(snr_db(actual.select(1, oc), stock.select(1, oc)), kMinimumSnrDb);
      worst_to_stock = std::max(worst_to_stock, to_stock[oc]);
      worst_wrong_to_stock = std::max(worst_wrong_to_stock, wrong_to_stock[oc]);
      worst_to_wrong = std::max(worst_to_wrong, to_wrong[oc]);
    }
    // The wrong scales lose at least one channel (its weights round to a few steps or zero),
    // and the kernel is nowhere near that result.
    EXPECT_GT(worst_wrong_to_stock, 0.5);
    EXPECT_GT(worst_wrong_to_stock, 10 * worst_to_stock);
    EXPECT_GT(worst_to_wrong, 0.5);
    // Per tensor, the same weight loses its small channels too: the test can tell.
    Int8Spec per_tensor = spec;
    per_tensor.weight_per_channel = false;
    std::vector<double> per_tensor_to_stock =
        per_channel_relative_error(int8_conv(input, weight, bias, args, per_tensor), stock);
    EXPECT_GT(per_tensor_to_stock[0], 0.5);
  }
}

// A product of two activations: A quantised as calibrated (u8 or s8), B as s8 within the
// weights' bound (127 / max|B| calibrated becomes bound / max|B|), values beyond B's calibrated
// range clipped at the bound. The result is the integer product, exactly, over both scales.
TEST(Int8BatchedMatmul, MatchesIntegerReferenceWithBClippedAtTheWeightBound) {
  at::manual_seed(57);
  at::Tensor a = at::randn({2, 5, 16}), b = at::randn({2, 16, 7});
  const int bound = int8_weight_bound();
  for (bool a_uint8 : {false, true}) {
    for (double calibrated_part : {1.0, 0.5}) {  // 0.5: B's tails beyond its calibrated range
      at::Tensor a_values = a_uint8 ? a.abs() : a;
      Int8MatmulSpec spec;
      spec.a_uint8 = a_uint8;
      spec.a_scale = (a_uint8 ? 255.f : 127.f) / a_values.abs().max().item<float>();
      spec.b_scale = 127.f / (b.abs().max().item<float>() * static_cast<float>(calibrated_part));
      const float b_scale = spec.b_scale * static_cast<float>(bound) / 127.f;
      at::Tensor q_a = saturate_round(a_values * spec.a_scale, a_uint8);
      at::Tensor q_b = at::clamp(at::round(b * b_scale), -bound, bound).to(at::kDouble);
      at::Tensor expected = at::matmul(q_a, q_b) / (static_cast<double>(spec.a_scale) * b_scale);
      at::Tensor actual = batched_matmul_int8(a_values, b, spec);
      EXPECT_LE(testing::relative_error(actual, expected), 1e-6)
          << (a_uint8 ? "u8" : "s8") << " A, calibrated part " << calibrated_part;
      if (calibrated_part < 1.0) EXPECT_EQ(q_b.abs().max().item<double>(), bound);
    }
  }
}


// The two ways the composed attention hands A over: with a factor folded into its
// quantisation ((f A) B, the spec's A scale being f A's), and as bytes already quantised in the
// spec's A scale and type. Both give the product of the integers the unfolded call quantises,
// over the same scales; bytes of the other type are refused rather than misread.
TEST(Int8BatchedMatmul, FoldedFactorAndQuantisedAAreTheUnfoldedProduct) {
  at::manual_seed(58);
  at::Tensor a = at::randn({2, 5, 16}), b = at::randn({2, 16, 7});
  const float factor = 0.125f;
  Int8MatmulSpec spec;
  spec.a_scale = 127.f / (a * factor).abs().max().item<float>();
  spec.b_scale = 127.f / b.abs().max().item<float>();
  const float b_scale = spec.b_scale * static_cast<float>(int8_weight_bound()) / 127.f;
  at::Tensor q_b = at::clamp(at::round(b * b_scale), -int8_weight_bound(), int8_weight_bound())
                       .to(at::kDouble);
  at::Tensor q_a = saturate_round(a * (spec.a_scale * factor), false);
  at::Tensor expected = at::matmul(q_a, q_b) / (static_cast<double>(spec.a_scale) * b_scale);
  EXPECT_LE(testing::relative_error(batched_matmul_int8(a, b, spec, factor), expected), 1e-6);
  EXPECT_LE(testing::relative_error(batched_matmul_int8(a * factor, b, spec), expected), 1e-6);
  // A handed over as s8 bytes: read as they are.
  at::Tensor bytes = q_a.to(at::kChar);
  EXPECT_LE(testing::relative_error(batched_matmul_int8(bytes, b, spec), expected), 1e-6);
  spec.a_uint8 = true;  // u8 expected, s8 given
  EXPECT_THROW(batched_matmul_int8(bytes, b, spec), std::invalid_argument);
  spec.a_uint8 = false;
  EXPECT_THROW(batched_matmul_int8(bytes, b, spec, factor), std::invalid_argument);
}

// The factor oneDNN applies as it reorders weights into a layout it chose: 1 for a plain
// layout and for a u8-input convolution's; for an s8-input 3x3 convolution's, 0.5 below VNNI
// (its jit kernels halve the weights there) and 1 with VNNI.
TEST(Int8WeightsReorderFactor, IsHalfOnlyWhereOneDnnHalvesTheWeights) {
  using dt = dnnl::memory::data_type;
  using tag = dnnl::memory::format_tag;
  EXPECT_EQ(weights_reorder_factor(dnnl::memory::desc({64, 64, 3, 3}, dt::s8, tag::oihw)), 1.f);
  for (bool uint8 : {true, false}) {
    const dnnl::memory::desc src({2, 64, 14, 14}, uint8 ? dt::u8 : dt::s8, tag::any);
    const dnnl::memory::desc weights({64, 64, 3, 3}, dt::s8, tag::any);
    const dnnl::memory::desc dst({2, 64, 14, 14}, dt::f32, tag::any);
    const onednn::ConvolutionWindow window{{1, 1}, {0, 0}, {1, 1}, {1, 1}};
    auto pd = onednn::convolution_forward_primitive_desc(dnnl::prop_kind::forward_inference, src,
                                                         weights, nullptr, dst, window,
                                                         dnnl::primitive_attr());
    const float expected = uint8 || onednn_reaches_int8() ? 1.f : 0.5f;
    EXPECT_EQ(weights_reorder_factor(pd.weights_desc()), expected)
        << (uint8 ? "u8" : "s8") << " input, " << pd.impl_info_str() << " on " << onednn_isa();
  }
}

// A feed-forward block's first linear keeps its result for the second (kernels/matmul.h
// LinearHandoff): the kept bytes are the second linear's quantised input (the activation
// applied to the result's values, then rounded in that input's scale), and the second linear
// reading them where they lie gives what it gives on their values.
TEST(Int8LinearHandoff, KeptResultIsTheNextInputQuantisedAndReadsLikeItsValues) {
  at::manual_seed(52);
  const at::Tensor input = at::randn({3, 6, 24});
  const at::Tensor first = at::randn({40, 24}) / 4, first_bias = at::randn({40});
  const at::Tensor second = at::randn({12, 40}) / 6, second_bias = at::randn({12});
  for (MatmulActivation activation :
       {MatmulActivation::none, MatmulActivation::relu, MatmulActivation::gelu_erf,
        MatmulActivation::gelu_tanh}) {
    SCOPED_TRACE(::testing::Message() << "activation " << static_cast<int>(activation));
    Int8Spec spec = spec_for(input, false, true);
    at::Tensor values = linear_reference(input, first, first_bias, spec);
    if (activation == MatmulActivation::relu) values = at::relu(values);
    if (activation == MatmulActivation::gelu_erf) values = at::gelu(values);
    if (activation == MatmulActivation::gelu_tanh) values = at::gelu(values, "tanh");
    // The second linear's calibrated input: u8 after relu (never negative), s8 otherwise.
    const bool uint8 = activation == MatmulActivation::relu;
    const Int8Spec next = spec_for(values, uint8, true);
    spec.output_scale = next.input_scale;
    spec.output_uint8 = next.input_uint8;

    dnnl::memory::desc kept;
    LinearHandoff keep;
    keep.keep_result = true;
    keep.kept = &kept;
    at::Tensor handed = linear_forward(input, first, first_bias, Precision::fp32, activation,
                                       &spec, false, keep);
    ASSERT_EQ(handed.scalar_type(), at::kFloat);
    ASSERT_EQ(handed.sizes(), values.sizes());
    ASSERT_EQ(onednn::dims_of(kept), (dnnl::memory::dims{18, 40}));
    ASSERT_EQ(onednn::data_type_of(kept), activation_type(uint8));
    const at::Tensor bytes =
        at::from_blob(handed.data_ptr(), {18, 40}, uint8 ? at::kByte : at::kChar).to(at::kFloat);
    const at::Tensor expected =
        (values.reshape({18, 40}) * next.input_scale).round().clamp(uint8 ? 0 : -128, uint8 ? 255 : 127);
    // One step at most where a value lies on a rounding boundary (float against double).
    const at::Tensor steps = (bytes - expected).abs();
    EXPECT_LE(steps.max().item<float>(), 1.f);
    EXPECT_LT(steps.mean().item<float>(), 0.02f);
    EXPECT_GT(expected.abs().max().item<float>(), 100.f);  // the scale spans the range

    LinearHandoff read;
    read.input_layout = &kept;
    read.input_scale = next.input_scale;
    const at::Tensor as_kept = linear_forward(handed, second, second_bias, Precision::fp32,
                                              MatmulActivation::none, &next, false, read);
    const at::Tensor as_values =
        linear_forward((bytes / next.input_scale).reshape({3, 6, 40}), second, second_bias,
                       Precision::fp32, MatmulActivation::none, &next);
    EXPECT_LE(testing::relative_error(as_kept, as_values), kReferenceTolerance);
    // Bytes in another scale than the reader's are refused, not misread.
    read.input_scale = next.input_scale * 2;
    EXPECT_THROW(linear_forward(handed, second, second_bias, Precision::fp32,
                                MatmulActivation::none, &next, false, read),
                 std::invalid_argument);
  }
}

}  // namespace
}  // namespace ipex_shim
