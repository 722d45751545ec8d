// The average of each channel of INT8 bytes kept channels-last (oneDNN's `acdb`, NHWC) over
// all positions, as fp32 values: a global average pool (adaptive_avg_pool2d to 1x1, the head
// of most CNNs) read straight from the bytes a quantised convolution handed over.
//
// oneDNN pools only within one type (2.6) or with an INT8 destination (3.7), and an average
// rounded back to INT8 loses half a step; the way round it, the bytes reordered to fp32 first
// and then pooled, wrote four times the bytes it read (0.45 ms of a resnet50 batch-16 INT8 pass
// on AMX, for a 16x2048x7x7 input). Here the sums are exact (int32) and each channel is
// written once.
#pragma once

#include <cstdint>

namespace ipex_shim {

// out[n * channels + c] = (sum over p of q[n][p][c]) / (scale * positions), where q is
// `source` read as uint8 (is_unsigned) or int8, laid out [batch][positions][channels].
// `positions` * 255 must fit in an int32 (positions < 8 421 504).
void average_channels_last_int8(const void* source, bool is_unsigned, int64_t batch,
                                int64_t positions, int64_t channels, float scale, float* out);

}  // namespace ipex_shim
