// Helpers shared by the kernel tests: the reference is stock ATen in fp32 (computed in
// double where it matters), and the tolerance depends on the precision under test.
#pragma once

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <ostream>
#include <vector>

#include "kernels/convolution.h"
#include "kernels/onednn_context.h"
#include "shim/runtime.h"

// Kernel tests that need an ISA this machine's oneDNN lacks (a CPU without AVX-512 has no
// BF16 kernels in oneDNN 2.6) are skipped, saying why; bf16 mode does not use those kernels
// there (shim/cpu_features.h). The INT8 kernels run everywhere: below VNNI with 7-bit weights
// (kernels/int8.h), which the references below take from the same weight_scales().
#define IPEX_SKIP_UNLESS_BF16_KERNELS()                                                    \
  do {                                                                                     \
    if (!::ipex_shim::onednn_has_bf16_kernels())                                           \
      GTEST_SKIP() << "oneDNN has no BF16 kernels on this CPU (its ISA here: "             \
                   << ::ipex_shim::onednn_isa() << ")";                                    \
  } while (0)
#define IPEX_SKIP_BF16_UNLESS_SUPPORTED(precision)                                         \
  do {                                                                                     \
    if ((precision) == ::ipex_shim::Precision::bf16) IPEX_SKIP_UNLESS_BF16_KERNELS();      \
  } while (0)
namespace ipex_shim::testing {

// A bias in double, if there is one.
inline c10::optional<at::Tensor> in_double(const c10::optional<at::Tensor>& bias) {
  return bias && bias->defined() ? c10::optional<at::Tensor>(bias->to(at::kDouble)) : c10::nullopt;
}

// Stock direct convolution in double.
inline at::Tensor conv_double(const at::Tensor& input, const at::Tensor& weight,
                              const c10::optional<at::Tensor>& bias, const ConvolutionArgs& args) {
  return at::convolution(input.to(at::kDouble), weight.to(at::kDouble), in_double(bias),
                         args.stride, args.padding, args.dilation, false,
                         std::vector<int64_t>(args.stride.size(), 0), args.groups);
}

// Largest absolute error relative to the reference's largest magnitude.
inline double relative_error(const at::Tensor& actual, const at::Tensor& expected) {
  double scale = expected.abs().max().item<double>();
  double error = (actual.to(at::kDouble) - expected.to(at::kDouble)).abs().max().item<double>();
  return scale > 0 ? error / scale : error;
}

// BF16 keeps 8 bits of mantissa: inputs and weights are rounded to ~0.4% each, and the
// accumulation is fp32, so the result is within about 1% of the largest output.
inline double tolerance(Precision precision) { return precision == Precision::bf16 ? 1.5e-2 : 1e-5; }

// A convolution's shapes and arguments, for parameterised kernel tests.
struct ConvCase {
  const char* name;
  std::vector<int64_t> input;   // N, C, spatial...
  std::vector<int64_t> weight;  // O, C/groups, kernel...
  std::vector<int64_t> stride, padding, dilation;
  int64_t groups;
  bool bias;
};
inline void PrintTo(const ConvCase& c, std::ostream* os) { *os << c.name; }

inline void expect_close(const at::Tensor& actual, const at::Tensor& expected, Precision precision) {
  ASSERT_EQ(actual.sizes(), expected.sizes());
  ASSERT_EQ(actual.scalar_type(), at::kFloat);
  EXPECT_LE(relative_error(actual, expected), tolerance(precision))
      << "precision " << precision_name(precision);
}

}  // namespace ipex_shim::testing
