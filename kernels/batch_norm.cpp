#include "kernels/batch_norm.h"

#include <ATen/ops/empty.h>

#include <cmath>

#include "kernels/buffer_pool.h"
#include "kernels/onednn_context.h"
#include "kernels/parallel.h"

namespace ipex_shim {
namespace {

// Sums in kLanes independent float accumulators (which the compiler keeps in vector
// registers), combined in double at the end of each run of values.
constexpr int kLanes = 16;

// The loops over a run are compiled for AVX-512, AVX2 and the baseline, and the loader picks
// the CPU's best (with SSE2 alone the kernel took twice stock's channels-last time).
#define IPEX_SHIM_VECTOR_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))

// The (N, C, inner) geometry of a contiguous input: channel c's values are the N runs
// data + (n * C + c) * inner, each `inner` long.
struct Geometry {
  int64_t batch, channels, inner;
  int64_t count() const { return batch * inner; }
};

Geometry geometry_of(const at::Tensor& input) {
  return {input.size(0), input.size(1), input.numel() / (input.size(0) * input.size(1))};
}

// Σ x over one run.
IPEX_SHIM_VECTOR_CLONES double sum_run(const float* x, int64_t n) {
  float lanes[kLanes] = {};
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes)
    for (int l = 0; l < kLanes; ++l) lanes[l] += x[i + l];
  double total = 0;
  for (; i < n; ++i) total += x[i];
  for (int l = 0; l < kLanes; ++l) total += lanes[l];
  return total;
}

// Σ (x - mean)^2 over one run.
IPEX_SHIM_VECTOR_CLONES double squares_run(const float* x, int64_t n, float mean) {
  float lanes[kLanes] = {};
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes)
    for (int l = 0; l < kLanes; ++l) {
      const float d = x[i + l] - mean;
      lanes[l] += d * d;
    }
  double total = 0;
  for (; i < n; ++i) total += double(x[i] - mean) * double(x[i] - mean);
  for (int l = 0; l < kLanes; ++l) total += lanes[l];
  return total;
}

// y = x * scale + shift over one run.
IPEX_SHIM_VECTOR_CLONES void scale_shift_run(const float* x, float* y, int64_t n, float scale,
                                             float shift) {
  for (int64_t i = 0; i < n; ++i) y[i] = x[i] * scale + shift;
}

const float* data_or_null(const at::Tensor& t) {
  return t.defined() ? t.data_ptr<float>() : nullptr;
}

// Fallback::none for an undefined tensor or a contiguous fp32 vector of `channels` values.
Fallback vector_support(const at::Tensor& t, int64_t channels) {
  if (!t.defined()) return Fallback::none;
  if (!plain_float_cpu(t)) return Fallback::unsupported_dtype;
  if (t.dim() != 1 || t.size(0) != channels || !t.is_contiguous())
    return Fallback::unsupported_shape;
  return Fallback::none;
}

}  // namespace

Fallback batch_norm_training_support(const at::Tensor& input, const at::Tensor& weight,
                                     const at::Tensor& bias, const at::Tensor& running_mean,
                                     const at::Tensor& running_var) {
  if (!plain_float_cpu(input)) return Fallback::unsupported_dtype;
  if (input.dim() < 2 || input.dim() > 5 || !input.is_contiguous() || input.numel() == 0)
    return Fallback::unsupported_shape;
  const int64_t channels = input.size(1);
  // Runs of fewer than 16 values (BatchNorm1d on (N, C)) gain nothing from the kernel;
  // stock also gives its error for a single value per channel.
  if (geometry_of(input).inner < 16 || geometry_of(input).count() < 2)
    return Fallback::unsupported_shape;
  for (const at::Tensor* t : {&weight, &bias, &running_mean, &running_var})
    if (const Fallback why = vector_support(*t, channels); why != Fallback::none) return why;
  if (running_mean.defined() != running_var.defined()) return Fallback::unsupported_shape;
  return Fallback::none;
}

BatchNormForward batch_norm_training(const at::Tensor& input, const at::Tensor& weight,
                                     const at::Tensor& bias, const at::Tensor& running_mean,
                                     const at::Tensor& running_var, double momentum,
                                     double eps) {
  const Geometry g = geometry_of(input);
  BatchNormForward out;
  out.output = pooled_empty(input.sizes(), at::kFloat);
  out.mean = at::empty({g.channels}, input.options());
  out.invstd = at::empty({g.channels}, input.options());
  const float* x = input.data_ptr<float>();
  float* y = out.output.data_ptr<float>();
  float* mean_out = out.mean.data_ptr<float>();
  float* invstd_out = out.invstd.data_ptr<float>();
  const float* w = data_or_null(weight);
  const float* b = data_or_null(bias);
  float* rm = running_mean.defined() ? running_mean.data_ptr<float>() : nullptr;
  float* rv = running_var.defined() ? running_var.data_ptr<float>() : nullptr;
  const double count = static_cast<double>(g.count());
  parallel_for(0, g.channels, 1, [&](int64_t begin, int64_t end) {
    for (int64_t c = begin; c < end; ++c) {
      double total = 0;
      for (int64_t n = 0; n < g.batch; ++n)
        total += sum_run(x + (n * g.channels + c) * g.inner, g.inner);
      const float mean = static_cast<float>(total / count);
      double squares = 0;
      for (int64_t n = 0; n < g.batch; ++n)
        squares += squares_run(x + (n * g.channels + c) * g.inner, g.inner, mean);
      const double variance = squares / count;
      const float invstd = static_cast<float>(1.0 / std::sqrt(variance + eps));
      mean_out[c] = mean;
      invstd_out[c] = invstd;
      if (rm) {
        rm[c] = static_cast<float>((1 - momentum) * rm[c] + momentum * mean);
        rv[c] = static_cast<float>((1 - momentum) * rv[c] +
                                   momentum * squares / (count - 1));
      }
      // y = x * scale + shift
      const float scale = invstd * (w ? w[c] : 1.f);
      const float shift = (b ? b[c] : 0.f) - mean * scale;
      for (int64_t n = 0; n < g.batch; ++n) {
        const int64_t at = (n * g.channels + c) * g.inner;
        scale_shift_run(x + at, y + at, g.inner, scale, shift);
      }
    }
  });
  return out;
}

}  // namespace ipex_shim
