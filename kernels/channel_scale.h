// Per-channel work on bytes kept in oneDNN's layout. A factor per channel: squeeze-excitation's
// `x * gate` (EfficientNet, MobileNetV3, RegNetY), where x is a convolution chain's result
// handed over (INT8, BF16 or fp32) and gate is (N, C, 1, 1) fp32. The product is written in
// the same layout for the convolution that reads it next, INT8 in that convolution's input
// scale, so x never goes back to the program's layout and the projection quantises nothing.
//
// Stock's mul read and wrote fp32 NCHW, after a reorder of x out of oneDNN's layout and before
// one into it: about 20 ms of an 87 ms efficientnet_v2_s batch-4 INT8 pass (ONEDNN_VERBOSE
// and the profiler, AVX512_BF16 EPYC).
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <dnnl.hpp>

namespace ipex_shim {

// Where element (n, c, p) of an N x C x P tensor lies, p the spatial position (h * W + w):
// at ((n * blocks + c / block) * positions + p) * block + c % block. Channels-last (`acdb`)
// is one block of all channels; oneDNN's `aBcd8b`/`aBcd16b` (nChw8c, nChw16c) blocks of 8 or
// 16 with the last one padded to a whole block.
struct ChannelRuns {
  int64_t batch = 0, channels = 0, positions = 0, block = 0, blocks = 0;
};

// The runs of `layout` when it is one of those three for 4-D data; false otherwise.
bool channel_runs_of(const dnnl::memory::desc& layout, ChannelRuns* runs);

// dst(n, c, p) = src(n, c, p) * gate[n * gate_batch_stride + c], with src's values
// `src_bytes / src_scale` and dst's bytes `value * dst_scale` (1 for floating point types);
// INT8 results rounded to nearest (ties to even) and saturated, BF16 ones rounded to nearest
// even. Padded channels are written as zero. Types: f32, bf16, s8, u8.
void scale_channels(const void* src, dnnl::memory::data_type src_type, float src_scale,
                    const float* gate, int64_t gate_batch_stride, const ChannelRuns& runs,
                    void* dst, dnnl::memory::data_type dst_type, float dst_scale);

// out[n * channels + c] = the mean over positions of (n, c)'s values: a global average pool
// of the bytes (squeeze-excitation's, and most CNN heads'). Summed in float over up to 64
// positions at a time (exact for INT8 bytes) and in double across them; INT8 sums divided
// by `scale` too.
void average_channel_runs(const void* src, dnnl::memory::data_type type, float scale,
                          const ChannelRuns& runs, float* out);

// Both functions above use AVX2 where the CPU has it and portable loops elsewhere, with the
// same results to the bit. For tests: false makes them take the portable loops here too.
void allow_channel_avx2(bool allowed);

// `input` (4-D fp32 whose bytes are in `layout`, INT8 ones with scale `input_scale`) times
// `gate` (contiguous fp32, N x C x 1 x 1 or 1 x C x 1 x 1) into a new tensor of input's sizes
// and memory format whose bytes are the product in `*output_layout`: `layout` with elements
// of `output_type` (scale `output_scale` when INT8). Throws when the layout is not one of
// channel_runs_of's or the product would not fit the tensor's bytes.
at::Tensor scale_channels_handed_over(const at::Tensor& input, const dnnl::memory::desc& layout,
                                      float input_scale, const at::Tensor& gate,
                                      dnnl::memory::data_type output_type, float output_scale,
                                      dnnl::memory::desc* output_layout);

}  // namespace ipex_shim
