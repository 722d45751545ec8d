// Batch normalisation's training forward (kernels/batch_norm.h): for every input the kernel
// takes, the result, the batch mean and 1/std (biased variance), and the running statistics it
// updates in place (unbiased variance) must match stock at::native_batch_norm(training=true) on
// the same inputs within fp32 rounding (1e-5 relative, tight enough to see the n/(n-1) of a
// biased/unbiased mix-up at n = 3200, and by far at n = 32), also where the mean is large
// against the standard deviation (no one-pass sum of squares); and the support check must
// refuse what it does not compute (a channels-last input, double, fewer than 16 values per
// channel and sample, a parameter of the wrong size).
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cfloat>
#include <string>
#include <tuple>
#include <vector>

#include "kernels/batch_norm.h"

namespace ipex_shim {
namespace {

constexpr double kMomentum = 0.1;
constexpr double kEps = 1e-5;
// Relative tolerance of every comparison: sums over a few thousand fp32 values and 1/sqrt in
// double then fp32 give errors of a few 1e-7 (observed at most 1.5e-7); a variance of the
// wrong kind (biased where unbiased belongs, or the reverse) is off by 1/(n-1) >= 3e-4 in
// running_var (momentum 1; 1/31 in the dedicated test) and 1/(2n) >= 1.5e-4 in invstd.
constexpr double kRelative = 1e-5;

// Largest |actual - expected| relative to the largest |expected|.
double relative_error(const at::Tensor& actual, const at::Tensor& expected) {
  const double scale = expected.abs().max().item<double>();
  const double error =
      (actual.to(at::kDouble) - expected.to(at::kDouble)).abs().max().item<double>();
  return scale > 0 ? error / scale : error;
}

// Largest elementwise |actual - expected| / |expected| (for statistics, each its own scale).
double elementwise_relative_error(const at::Tensor& actual, const at::Tensor& expected) {
  const at::Tensor e = expected.to(at::kDouble);
  return ((actual.to(at::kDouble) - e).abs() / e.abs()).max().item<double>();
}

// Per-channel (C) statistics viewed to broadcast against an (N, C, ...) input.
at::Tensor per_channel(const at::Tensor& statistic, const at::Tensor& input) {
  std::vector<int64_t> sizes(input.dim(), 1);
  sizes[1] = input.size(1);
  return statistic.to(at::kDouble).view(sizes);
}

// The batch mean: within kRelative of a standard deviation (a mean near 0 has no scale of
// its own; an error shifts every normalised value by error * invstd) plus two fp32 ulps of
// the mean itself (a mean of 100 with a deviation of 0.01 is only representable to 7.6e-4
// deviations, and stock's and the kernel's may round to neighbouring floats).
void expect_mean_close(const at::Tensor& actual, const at::Tensor& expected,
                       const at::Tensor& invstd) {
  const at::Tensor e = expected.to(at::kDouble);
  const at::Tensor error = (actual.to(at::kDouble) - e).abs();
  const at::Tensor allowed = kRelative / invstd.to(at::kDouble) + 2 * FLT_EPSILON * e.abs();
  EXPECT_TRUE(error.le(allowed).all().item<bool>())
      << "mean error " << (error * invstd.to(at::kDouble)).max().item<double>()
      << " deviations, max excess " << (error - allowed).max().item<double>();
}

// The result y = x * alpha + beta (alpha = invstd * weight, beta = bias - mean * alpha, as
// stock computes it in fp32): within kRelative of the largest |y|, plus four fp32 roundings
// of the terms |x * alpha| + |beta|, which dominate when the mean is large (for values
// around 100 with deviation 0.01, alpha ~ 100 and both terms ~ 1e4, so an ulp of the mean
// or of a term is ~1e-3 of y, in stock as in the kernel).
void expect_output_close(const at::Tensor& actual, const at::Tensor& expected,
                         const at::Tensor& input, const at::Tensor& weight,
                         const at::Tensor& bias, const at::Tensor& mean,
                         const at::Tensor& invstd) {
  ASSERT_EQ(actual.sizes(), expected.sizes());
  at::Tensor alpha = per_channel(invstd, input);
  if (weight.defined()) alpha = alpha * per_channel(weight, input);
  at::Tensor beta = -per_channel(mean, input) * alpha;
  if (bias.defined()) beta = beta + per_channel(bias, input);
  const at::Tensor terms = (input.to(at::kDouble) * alpha).abs() + beta.abs();
  const at::Tensor e = expected.to(at::kDouble);
  const at::Tensor error = (actual.to(at::kDouble) - e).abs();
  const at::Tensor allowed = kRelative * e.abs().max() + 4 * FLT_EPSILON * terms;
  EXPECT_TRUE(error.le(allowed).all().item<bool>())
      << "output: max error " << error.max().item<double>() << " (relative "
      << relative_error(actual, expected) << "), max excess "
      << (error - allowed).max().item<double>();
}

struct Parameters {
  at::Tensor weight, bias, running_mean, running_var;
};

// Random parameters and running statistics of `channels` values (the variance positive).
Parameters random_parameters(int64_t channels) {
  return {at::randn({channels}), at::randn({channels}), at::randn({channels}),
          at::rand({channels}) + 0.5};
}

// Runs the kernel and stock on the same input and copies of the same running statistics,
// and checks output, mean, invstd and both updated running statistics.
void expect_stock(const at::Tensor& input, const Parameters& p, double momentum) {
  ASSERT_EQ(batch_norm_training_support(input, p.weight, p.bias, p.running_mean, p.running_var),
            Fallback::none);
  at::Tensor running_mean = p.running_mean.clone(), running_var = p.running_var.clone();
  at::Tensor stock_mean = p.running_mean.clone(), stock_var = p.running_var.clone();
  BatchNormForward got =
      batch_norm_training(input, p.weight, p.bias, running_mean, running_var, momentum, kEps);
  auto [output, save_mean, save_invstd] = at::native_batch_norm(
      input, p.weight, p.bias, stock_mean, stock_var, /*training=*/true, momentum, kEps);

  ASSERT_EQ(got.output.sizes(), output.sizes());
  EXPECT_EQ(got.output.strides(), output.strides());
  EXPECT_EQ(got.output.scalar_type(), at::kFloat);
  ASSERT_EQ(got.mean.sizes(), save_mean.sizes());
  ASSERT_EQ(got.invstd.sizes(), save_invstd.sizes());

  expect_output_close(got.output, output, input, p.weight, p.bias, save_mean, save_invstd);
  expect_mean_close(got.mean, save_mean, save_invstd);
  EXPECT_LE(elementwise_relative_error(got.invstd, save_invstd), kRelative) << "invstd";
  EXPECT_LE(relative_error(running_mean, stock_mean), kRelative) << "running_mean";
  EXPECT_LE(elementwise_relative_error(running_var, stock_var), kRelative) << "running_var";
  // Updated in place, as stock does (its update is not a versioned in-place op either).
  EXPECT_EQ(running_mean._version(), stock_mean._version());
  EXPECT_FALSE(running_mean.equal(p.running_mean));
  EXPECT_FALSE(running_var.equal(p.running_var));
}

struct BatchNormCase {
  const char* name;
  std::vector<int64_t> input;  // N, C, spatial...
};
void PrintTo(const BatchNormCase& c, std::ostream* os) { *os << c.name; }

class BatchNormTraining : public ::testing::TestWithParam<BatchNormCase> {};

TEST_P(BatchNormTraining, EqualsStockNativeBatchNormWithItsRunningStatistics) {
  at::manual_seed(11);
  at::Tensor input = at::randn(GetParam().input) * 2 + 0.5;
  const Parameters p = random_parameters(input.size(1));
  expect_stock(input, p, kMomentum);
}

// Values around 100 with a standard deviation of 0.01: a one-pass Σx² / n - mean² in fp32
// (x² ~ 1e4 whose ulp is ~1e-3, against a variance of 1e-4) loses every bit of the
// variance; the kernel's two passes keep it.
TEST_P(BatchNormTraining, LargeMeanAgainstItsStandardDeviationKeepsTheVariance) {
  at::manual_seed(12);
  at::Tensor input = at::randn(GetParam().input) * 0.01 + 100;
  const Parameters p = random_parameters(input.size(1));
  expect_stock(input, p, kMomentum);
  // And the kernel against the exact statistics of the fp32 values, computed in double
  // (stock's agree with these to ~1e-7 as well).
  BatchNormForward got = batch_norm_training(input, p.weight, p.bias, at::Tensor(), at::Tensor(),
                                             kMomentum, kEps);
  std::vector<int64_t> reduced = {0};
  for (int64_t d = 2; d < input.dim(); ++d) reduced.push_back(d);
  const at::Tensor x = input.to(at::kDouble);
  const at::Tensor variance = x.var(at::IntArrayRef(reduced), /*unbiased=*/false);
  EXPECT_LE(elementwise_relative_error(got.invstd, (variance + kEps).rsqrt()), kRelative);
  expect_mean_close(got.mean, x.mean(reduced), (variance + kEps).rsqrt());
}

const BatchNormCase kCases[] = {
    {"rank3", {4, 8, 40}},
    {"rank4", {8, 16, 20, 20}},
    {"rank5", {2, 4, 6, 7, 8}},
    {"rank4_one_sample_odd_inner", {1, 3, 17, 9}},
    {"rank4_long_runs", {2, 4, 128, 128}},  // 16384 values per channel and sample
};

INSTANTIATE_TEST_SUITE_P(Cases, BatchNormTraining, ::testing::ValuesIn(kCases),
                         [](const auto& info) { return std::string(info.param.name); });

// With momentum 1 the running variance is the batch's unbiased variance and invstd comes
// from the biased one; with only 32 values per channel the two differ by 1/31.
TEST(BatchNormTrainingStatistics, RunningVarIsUnbiasedAndInvstdIsBiased) {
  at::manual_seed(13);
  at::Tensor input = at::randn({2, 3, 16});
  Parameters p = random_parameters(3);
  at::Tensor running_mean = p.running_mean.clone(), running_var = p.running_var.clone();
  BatchNormForward got =
      batch_norm_training(input, p.weight, p.bias, running_mean, running_var, 1.0, kEps);
  at::Tensor x = input.to(at::kDouble);
  const int64_t reduced[] = {0, 2};
  at::Tensor mean = x.mean(reduced);
  at::Tensor biased = x.var(at::IntArrayRef(reduced), /*unbiased=*/false);
  at::Tensor unbiased = x.var(at::IntArrayRef(reduced), /*unbiased=*/true);
  const at::Tensor invstd = (biased + kEps).rsqrt();
  expect_mean_close(got.mean, mean, invstd);
  expect_mean_close(running_mean, mean, invstd);
  EXPECT_LE(elementwise_relative_error(got.invstd, (biased + kEps).rsqrt()), kRelative);
  EXPECT_LE(elementwise_relative_error(running_var, unbiased), kRelative);
  // y = (x - mean) * invstd * weight + bias
  at::Tensor expected = (x - mean.view({1, 3, 1})) * (biased + kEps).rsqrt().view({1, 3, 1}) *
                            p.weight.to(at::kDouble).view({1, 3, 1}) +
                        p.bias.to(at::kDouble).view({1, 3, 1});
  EXPECT_LE(relative_error(got.output, expected), kRelative);
}

// Momentum weighs the batch's statistics against the running ones (0.3 batch, 0.7 running).
// A first sample far from the batch's mean (0.5 and 40 standard deviations away) costs the
// variance no precision (a one-pass variance from sums shifted by the first sample's mean,
// tried and dropped for speed, would have to fall back to a second pass for the far one).
TEST(BatchNormTrainingStatistics, AFirstSampleAwayFromTheMeanKeepsTheVarianceExact) {
  for (double away : {0.5, 40.0}) {
    SCOPED_TRACE(away);
    at::manual_seed(17);
    at::Tensor input = at::randn({8, 4, 16, 16});
    input.select(0, 0).add_(away);
    Parameters p = random_parameters(4);
    at::Tensor running_mean = p.running_mean.clone(), running_var = p.running_var.clone();
    BatchNormForward got =
        batch_norm_training(input, p.weight, p.bias, running_mean, running_var, 1.0, kEps);
    at::Tensor x = input.to(at::kDouble);
    const int64_t reduced[] = {0, 2, 3};
    at::Tensor biased = x.var(at::IntArrayRef(reduced), /*unbiased=*/false);
    at::Tensor unbiased = x.var(at::IntArrayRef(reduced), /*unbiased=*/true);
    const at::Tensor invstd = (biased + kEps).rsqrt();
    expect_mean_close(got.mean, x.mean(reduced), invstd);
    EXPECT_LE(elementwise_relative_error(got.invstd, invstd), kRelative);
    EXPECT_LE(elementwise_relative_error(running_var, unbiased), kRelative);
  }
}

TEST(BatchNormTrainingStatistics, MomentumWeighsTheBatchAgainstTheRunningValues) {
  at::manual_seed(14);
  at::Tensor input = at::randn({4, 5, 6, 6}) * 3 - 1;
  expect_stock(input, random_parameters(5), 0.3);
}

// Undefined running statistics: nothing to update, the batch's statistics are still
// returned; undefined weight and bias act as 1 and 0.
TEST(BatchNormTrainingStatistics, NoRunningStatisticsOrParametersIsStockWithNone) {
  at::manual_seed(15);
  at::Tensor input = at::randn({4, 6, 5, 5});
  const Parameters p = random_parameters(6);
  for (bool affine : {true, false}) {
    SCOPED_TRACE(affine ? "weight and bias" : "no weight or bias");
    const at::Tensor weight = affine ? p.weight : at::Tensor();
    const at::Tensor bias = affine ? p.bias : at::Tensor();
    ASSERT_EQ(batch_norm_training_support(input, weight, bias, at::Tensor(), at::Tensor()),
              Fallback::none);
    BatchNormForward got =
        batch_norm_training(input, weight, bias, at::Tensor(), at::Tensor(), kMomentum, kEps);
    auto [output, save_mean, save_invstd] =
        at::native_batch_norm(input, weight, bias, c10::nullopt, c10::nullopt,
                              /*training=*/true, kMomentum, kEps);
    expect_output_close(got.output, output, input, weight, bias, save_mean, save_invstd);
    expect_mean_close(got.mean, save_mean, save_invstd);
    EXPECT_LE(elementwise_relative_error(got.invstd, save_invstd), kRelative);
  }
}

TEST(BatchNormTrainingSupport, TakesContiguousFp32OfRank3To5) {
  const Parameters p = random_parameters(8);
  for (const std::vector<int64_t>& sizes :
       {std::vector<int64_t>{4, 8, 16}, {2, 8, 4, 4}, {2, 8, 2, 2, 4}}) {
    EXPECT_EQ(batch_norm_training_support(at::zeros(sizes), p.weight, p.bias, p.running_mean,
                                          p.running_var),
              Fallback::none)
        << at::IntArrayRef(sizes);
  }
}

TEST(BatchNormTrainingSupport, RefusesChannelsLastDoubleShortRunsAndWrongParameters) {
  const Parameters p = random_parameters(16);
  const at::Tensor input = at::randn({8, 16, 20, 20});
  auto support = [&](const at::Tensor& x, const Parameters& q) {
    return batch_norm_training_support(x, q.weight, q.bias, q.running_mean, q.running_var);
  };
  ASSERT_EQ(support(input, p), Fallback::none);

  // Channels-last (not contiguous): the kernel reads each channel's runs as contiguous.
  EXPECT_NE(support(input.contiguous(at::MemoryFormat::ChannelsLast), p), Fallback::none);
  // Any other non-contiguous input, e.g. a strided slice.
  EXPECT_NE(support(input.slice(3, 0, 20, 2), p), Fallback::none);
  // Double input, or double parameters.
  EXPECT_NE(support(input.to(at::kDouble), p), Fallback::none);
  Parameters doubled = p;
  doubled.weight = p.weight.to(at::kDouble);
  EXPECT_NE(support(input, doubled), Fallback::none);
  // Fewer than 16 values per channel and sample: BatchNorm1d's (N, C), or (N, C, 8).
  EXPECT_NE(support(at::randn({64, 16}), p), Fallback::none);
  EXPECT_NE(support(at::randn({64, 16, 8}), p), Fallback::none);
  EXPECT_NE(support(at::randn({64, 16, 3, 5}), p), Fallback::none);
  // Rank above 5, and an empty input.
  EXPECT_NE(support(at::randn({2, 16, 2, 2, 2, 2}), p), Fallback::none);
  EXPECT_NE(support(at::randn({0, 16, 4, 4}), p), Fallback::none);
  // Parameters or statistics of the wrong size.
  for (int which = 0; which < 4; ++which) {
    SCOPED_TRACE(which);
    Parameters wrong = p;
    at::Tensor* t[] = {&wrong.weight, &wrong.bias, &wrong.running_mean, &wrong.running_var};
    *t[which] = at::ones({17});
    EXPECT_NE(support(input, wrong), Fallback::none);
  }
  // One running statistic without the other.
  Parameters half = p;
  half.running_var = at::Tensor();
  EXPECT_NE(support(input, half), Fallback::none);
}

}  // namespace
}  // namespace ipex_shim
