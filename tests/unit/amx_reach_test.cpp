// Where oneDNN reaches AMX, the shim's BF16 convolutions must run on its AMX kernels. The
// layout a kernel asks oneDNN for decides it: with 16-channel blocked activations oneDNN 2.6
// serves BF16 convolutions only with `jit_bf16`, which leaves the tiles unused (resnet50
// batch 16 in bf16 mode ran at 5% of the BF16 ceiling, slower than fp32 mode). Read from
// oneDNN's own verbose lines of the calls. Below AMX (the CTest run with ONEDNN_MAX_CPU_ISA
// capped, or a CPU without it), no AMX kernel may appear either.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cstdio>
#include <dnnl.hpp>
#include <functional>
#include <sstream>
#include <string>
#include <vector>

#include "kernels/convolution.h"
#include "kernels/convolution_training.h"
#include "reference.h"
#include "shim/runtime.h"

namespace ipex_shim {
namespace {

// oneDNN's verbose lines for the primitives `run` executes that are convolutions.
std::vector<std::string> convolution_exec_lines(const std::function<void()>& run) {
  ::testing::internal::CaptureStdout();
  dnnl::set_verbose(1);
  run();
  dnnl::set_verbose(0);
  std::fflush(stdout);
  std::istringstream log(::testing::internal::GetCapturedStdout());
  std::vector<std::string> lines;
  for (std::string line; std::getline(log, line);) {
    if (line.find("exec") != std::string::npos && line.find("convolution") != std::string::npos)
      lines.push_back(line);
  }
  return lines;
}

void expect_amx_as_reached(const std::vector<std::string>& lines, size_t at_least) {
  ASSERT_GE(lines.size(), at_least) << "no convolution in oneDNN's verbose output";
  for (const std::string& line : lines)
    EXPECT_EQ(line.find("amx") != std::string::npos, onednn_reaches_amx()) << line;
}

TEST(AmxReach, Bf16InferenceConvolution) {
  IPEX_SKIP_UNLESS_BF16_KERNELS();
  at::manual_seed(11);
  // Channels in 16s: the shape the blocked layout was chosen for.
  at::Tensor input = at::randn({2, 64, 14, 14});
  at::Tensor weight = at::randn({64, 64, 3, 3});
  const std::vector<int64_t> ones = {1, 1};
  ConvolutionArgs args{ones, ones, ones, 1};
  at::Tensor output;
  const auto lines = convolution_exec_lines(
      [&] { output = convolution_forward(input, weight, c10::nullopt, args, Precision::bf16); });
  expect_amx_as_reached(lines, 1);
  testing::expect_close(output, at::conv2d(input, weight, {}, 1, 1), Precision::bf16);
}

TEST(AmxReach, Bf16TrainingConvolutionForwardAndBackward) {
  IPEX_SKIP_UNLESS_BF16_KERNELS();
  at::manual_seed(12);
  at::Tensor input = at::randn({2, 32, 12, 12});
  at::Tensor weight = at::randn({48, 32, 3, 3});
  at::Tensor bias = at::randn({48});
  const std::vector<int64_t> ones = {1, 1};
  ConvolutionArgs args{ones, ones, ones, 1};
  ASSERT_EQ(convolution_training_support(input, weight, bias, args), Fallback::none);
  at::Tensor output;
  std::array<at::Tensor, 3> grads;
  const auto lines = convolution_exec_lines([&] {
    ConvolutionSaved saved;
    output = convolution_training_forward(input, weight, bias, args, &saved);
    grads = convolution_training_backward(at::ones_like(output), input, weight, true, args,
                                          saved, {true, true, true});
  });
  // Forward, backward data, backward weights.
  expect_amx_as_reached(lines, 3);
  testing::expect_close(output, at::conv2d(input, weight, bias, 1, 1), Precision::bf16);
  ASSERT_TRUE(grads[0].defined() && grads[1].defined() && grads[2].defined());
}

}  // namespace
}  // namespace ipex_shim
