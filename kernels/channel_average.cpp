#include "kernels/channel_average.h"

#include <algorithm>

#include "kernels/parallel.h"

namespace ipex_shim {

namespace {

// Channels summed together: a fixed count, so that the compiler vectorises the inner loop
// without a remainder loop (the remainder of a row goes through the general one).
constexpr int64_t kBlock = 64;

template <class Byte>
void average_block(const Byte* rows, int64_t positions, int64_t channels, int64_t first,
                   int64_t count, double divisor, float* out) {
  int32_t sums[kBlock] = {};
  if (count == kBlock) {
    for (int64_t p = 0; p < positions; ++p) {
      const Byte* row = rows + p * channels + first;
      for (int64_t c = 0; c < kBlock; ++c) sums[c] += row[c];
    }
  } else {
    for (int64_t p = 0; p < positions; ++p) {
      const Byte* row = rows + p * channels + first;
      for (int64_t c = 0; c < count; ++c) sums[c] += row[c];
    }
  }
  for (int64_t c = 0; c < count; ++c)
    out[first + c] = static_cast<float>(static_cast<double>(sums[c]) / divisor);
}

template <class Byte>
void average_all(const Byte* source, int64_t batch, int64_t positions, int64_t channels,
                 float scale, float* out) {
  const int64_t blocks = (channels + kBlock - 1) / kBlock;
  const double divisor = static_cast<double>(scale) * static_cast<double>(positions);
  // One task per (image, block of channels): batch 1 still splits over the threads.
  const int64_t grain = std::max<int64_t>(1, 16384 / std::max<int64_t>(1, positions * kBlock));
  parallel_for(0, batch * blocks, grain, [&](int64_t begin, int64_t end) {
    for (int64_t task = begin; task < end; ++task) {
      const int64_t n = task / blocks, first = (task % blocks) * kBlock;
      average_block(source + n * positions * channels, positions, channels, first,
                    std::min(kBlock, channels - first), divisor, out + n * channels);
    }
  });
}

}  // namespace

void average_channels_last_int8(const void* source, bool is_unsigned, int64_t batch,
                                int64_t positions, int64_t channels, float scale, float* out) {
  if (is_unsigned) {
    average_all(static_cast<const uint8_t*>(source), batch, positions, channels, scale, out);
  } else {
    average_all(static_cast<const int8_t*>(source), batch, positions, channels, scale, out);
  }
}

}  // namespace ipex_shim
