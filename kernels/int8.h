// INT8 arithmetic shared by the quantised kernels. Quantisation is symmetric (zero point 0)
// and a scale is a multiplier, as in the seed's config: q = round(x * scale), saturated to
// [-128, 127] (s8) or [0, 255] (u8). A convolution or linear then computes
//   acc[oc] = sum q_x * q_w            (s32, exactly; |q_w| <= int8_weight_bound())
//   y[oc]   = (acc[oc] + bias[oc] * s_x * s_w[oc]) / (s_x * s_w[oc])
// and, when its result is handed to the next quantised op, requantises y with that op's
// input scale inside the same primitive.
#pragma once

#include <ATen/core/Tensor.h>

#include <dnnl.hpp>
#include <memory>
#include <vector>

#include "kernels/onednn_compat.h"

namespace ipex_shim {

struct Int8Spec {
  float input_scale = 1.f;  // q = round(x * input_scale)
  bool input_uint8 = false;  // the input is never negative: u8 (full 8 bits) instead of s8
  bool weight_per_channel = true;  // a scale per output channel, else one for the tensor
  // The result: 0 -> fp32 values (the program's tensor); > 0 -> quantised with this scale
  // (only for a result handed over in oneDNN's layout to the next quantised op).
  float output_scale = 0.f;
  bool output_uint8 = false;
};

// Both operands of a product of two activations (matmul): A may be u8 when never negative;
// B is always s8 (oneDNN's matmul takes s8 weights): a u8-calibrated B scale is halved, and
// below VNNI B is quantised within int8_weight_bound() like any weight.
struct Int8MatmulSpec {
  float a_scale = 1.f;
  bool a_uint8 = false;
  float b_scale = 1.f;
};

// The largest |q_w| a quantised weight takes. 127 where oneDNN reaches VNNI or AMX. Below
// them (AVX2, AVX-512 without VNNI) oneDNN's INT8 kernels multiply u8 by s8 bytes in pairs
// summed into 16 bits with saturation (vpmaddubsw): exact only while 2 * 255 * |q_w| fits in
// 32767 (an s8 input is shifted into u8 first). 8-bit weights broke that on every output of
// a 3x3 convolution; 63 keeps every sum exact, at the cost of one bit of weight precision.
int int8_weight_bound();

// The factor oneDNN multiplies weights by as it reorders them into `weights`, the layout a
// primitive chose: 0.5 where its INT8 kernel halves them and doubles the result (its direct
// convolutions of an s8 input below VNNI, so that the 16-bit pair sums cannot overflow), else
// 1. oneDNN 3 keeps that factor inside the descriptor, out of its API's reach, so it is read
// the same way on both releases: a plain tensor of 2s reordered into the layout. Once per
// layout.
float weights_reorder_factor(const dnnl::memory::desc& weights);

// int8_weight_bound() / max|w| over each output channel (dim 0 of `weight`), or over the
// whole tensor repeated per channel; a channel of zeros gets 1. A float tensor of size
// weight.size(0). `bound`: for tests of either CPU.
at::Tensor weight_scales(const at::Tensor& weight, bool per_channel,
                         int bound = int8_weight_bound());
// The same for a transposed convolution's weight, (in, out / groups, k...): its output
// channel g * (out / groups) + j is column j of group g's rows.
at::Tensor transposed_weight_scales(const at::Tensor& weight, int64_t groups, bool per_channel,
                                    int bound = int8_weight_bound());

dnnl::memory::data_type activation_type(bool uint8);

// A cached reorder that multiplies by `scale` on the way (quantise: scale = s; dequantise:
// 1 / s; requantise: s_to / s_from). scale 1 is a plain reorder.
std::shared_ptr<const onednn::ScaledReorder> cached_scaled_reorder(
    const dnnl::memory::desc& from, const dnnl::memory::desc& to, float scale);

}  // namespace ipex_shim
