#include "kernels/channel_scale.h"

#include <immintrin.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

#include "kernels/buffer_pool.h"
#include "kernels/onednn_compat.h"
#include "kernels/parallel.h"

namespace ipex_shim {

namespace {

using dt = dnnl::memory::data_type;

// Element loads and stores, for the portable loops and the tails of the AVX2 ones. INT8
// stores round without calling libm: adding and subtracting 1.5 * 2^23 leaves a float of
// magnitude below 2^22 rounded to an integer in the FPU's rounding mode (ties to even, as
// oneDNN's reorders and the AVX2 conversion round).
struct F32 {
  using Byte = float;
  static float load(Byte b) { return b; }
  static Byte store(float v) { return v; }
};

struct BF16 {
  using Byte = uint16_t;
  static float load(Byte b) {
    const uint32_t bits = static_cast<uint32_t>(b) << 16;
    float v;
    std::memcpy(&v, &bits, sizeof v);
    return v;
  }
  static Byte store(float v) {
    uint32_t bits;
    std::memcpy(&bits, &v, sizeof bits);
    const bool nan = (bits & 0x7fffffffu) > 0x7f800000u;
    const uint32_t rounded = (bits + 0x7fffu + ((bits >> 16) & 1u)) >> 16;
    return static_cast<Byte>(nan ? 0x7fc0u : rounded);
  }
};

template <class T, int kLow, int kHigh>
struct Int8Of {
  using Byte = T;
  static constexpr float kLowValue = kLow, kHighValue = kHigh;
  static float load(Byte b) { return static_cast<float>(b); }
  static Byte store(float v) {
    // NaN fails both comparisons and lands on kLow; the clamp keeps the magic add exact.
    v = v >= static_cast<float>(kLow) ? v : static_cast<float>(kLow);
    v = v <= static_cast<float>(kHigh) ? v : static_cast<float>(kHigh);
    constexpr float kMagic = 12582912.f;  // 1.5 * 2^23
    return static_cast<Byte>(static_cast<int32_t>((v + kMagic) - kMagic));
  }
};
using S8 = Int8Of<int8_t, -128, 127>;
using U8 = Int8Of<uint8_t, 0, 255>;

// Eight elements at a time with AVX2 (every x86 CPU with AVX-512 has it). The compiler left
// the scalar loop above unvectorised for INT8 and BF16 (GCC 12, x86-64 baseline): 7 ns an
// element for s8 -> u8, a hundred times stock's fp32 mul. Same arithmetic: the rounding
// conversion uses the FPU's mode (ties to even), the clamp puts NaN on the low bound (maxps
// returns its second operand when the first is NaN), BF16 rounds to nearest even.
#define SHIM_AVX2 __attribute__((target("avx2")))

SHIM_AVX2 inline __m256 load8(F32, const float* p) { return _mm256_loadu_ps(p); }
SHIM_AVX2 inline __m256 load8(BF16, const uint16_t* p) {
  const __m256i wide = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
  return _mm256_castsi256_ps(_mm256_slli_epi32(wide, 16));
}
SHIM_AVX2 inline __m256 load8(S8, const int8_t* p) {
  const __m128i bytes = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(p));
  return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(bytes));
}
SHIM_AVX2 inline __m256 load8(U8, const uint8_t* p) {
  const __m128i bytes = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(p));
  return _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(bytes));
}

SHIM_AVX2 inline void store8(F32, float* p, __m256 v) { _mm256_storeu_ps(p, v); }
SHIM_AVX2 inline void store8(BF16, uint16_t* p, __m256 v) {
  const __m256i bits = _mm256_castps_si256(v);
  const __m256i odd = _mm256_and_si256(_mm256_srli_epi32(bits, 16), _mm256_set1_epi32(1));
  __m256i rounded =
      _mm256_srli_epi32(_mm256_add_epi32(bits, _mm256_add_epi32(_mm256_set1_epi32(0x7fff), odd)), 16);
  const __m256i nan = _mm256_castps_si256(_mm256_cmp_ps(v, v, _CMP_UNORD_Q));
  rounded = _mm256_blendv_epi8(rounded, _mm256_set1_epi32(0x7fc0), nan);
  const __m128i packed =
      _mm_packus_epi32(_mm256_castsi256_si128(rounded), _mm256_extracti128_si256(rounded, 1));
  _mm_storeu_si128(reinterpret_cast<__m128i*>(p), packed);
}
template <class Int8>
SHIM_AVX2 inline __m128i rounded_words(__m256 v) {
  v = _mm256_max_ps(v, _mm256_set1_ps(Int8::kLowValue));
  v = _mm256_min_ps(v, _mm256_set1_ps(Int8::kHighValue));
  const __m256i whole = _mm256_cvtps_epi32(v);
  return _mm_packs_epi32(_mm256_castsi256_si128(whole), _mm256_extracti128_si256(whole, 1));
}
SHIM_AVX2 inline void store8(S8, int8_t* p, __m256 v) {
  const __m128i words = rounded_words<S8>(v);
  _mm_storel_epi64(reinterpret_cast<__m128i*>(p), _mm_packs_epi16(words, words));
}
SHIM_AVX2 inline void store8(U8, uint8_t* p, __m256 v) {
  const __m128i words = rounded_words<U8>(v);
  _mm_storel_epi64(reinterpret_cast<__m128i*>(p), _mm_packus_epi16(words, words));
}

// What one thread does: runs [begin, end) of the data, each run `block` elements whose
// factors start at factors[(image * blocks + block index) * block]. The runs of one (image,
// channel block) share their factors. One function per instruction set, so that the AVX2
// loads and stores inline into their loop.
struct RangeArgs {
  const void* src;
  void* dst;
  const float* factors;
  const ChannelRuns* runs;
  int64_t begin, end;
};

template <class In, class Out>
SHIM_AVX2 void scale_range_avx2(const RangeArgs& a) {
  const auto* src = static_cast<const typename In::Byte*>(a.src);
  auto* dst = static_cast<typename Out::Byte*>(a.dst);
  const int64_t block = a.runs->block, positions = a.runs->positions;
  for (int64_t run = a.begin; run < a.end;) {
    const int64_t group = run / positions;
    const int64_t group_end = std::min(a.end, (group + 1) * positions);
    const float* f = a.factors + group * block;
    for (; run < group_end; ++run) {
      const auto* in = src + run * block;
      auto* out = dst + run * block;
      int64_t i = 0;
      for (; i + 8 <= block; i += 8)
        store8(Out{}, out + i, _mm256_mul_ps(load8(In{}, in + i), _mm256_loadu_ps(f + i)));
      for (; i < block; ++i) out[i] = Out::store(In::load(in[i]) * f[i]);
    }
  }
}

template <class In, class Out>
void scale_range_plain(const RangeArgs& a) {
  const auto* src = static_cast<const typename In::Byte*>(a.src);
  auto* dst = static_cast<typename Out::Byte*>(a.dst);
  const int64_t block = a.runs->block, positions = a.runs->positions;
  for (int64_t run = a.begin; run < a.end; ++run) {
    const float* f = a.factors + run / positions * block;
    for (int64_t i = 0; i < block; ++i)
      dst[run * block + i] = Out::store(In::load(src[run * block + i]) * f[i]);
  }
}

std::atomic<bool> g_avx2_allowed{true};

bool has_avx2() {
  static const bool yes = __builtin_cpu_supports("avx2");
  return yes && g_avx2_allowed.load(std::memory_order_relaxed);
}

// Factors per image: block-padded, zero past the last channel.
template <class In, class Out>
void scale_all(const void* source, float src_scale, const float* gate, int64_t gate_stride,
               const ChannelRuns& runs, void* target, float dst_scale) {
  const int64_t padded = runs.blocks * runs.block;
  const float ratio = dst_scale / src_scale;
  std::vector<float> factors(static_cast<size_t>(runs.batch * padded), 0.f);
  for (int64_t n = 0; n < runs.batch; ++n)
    for (int64_t c = 0; c < runs.channels; ++c)
      factors[static_cast<size_t>(n * padded + c)] = gate[n * gate_stride + c] * ratio;
  const int64_t runs_total = runs.batch * runs.blocks * runs.positions;
  const int64_t grain = std::max<int64_t>(1, 32768 / std::max<int64_t>(1, runs.block));
  const bool avx2 = has_avx2();
  parallel_for(0, runs_total, grain, [&](int64_t begin, int64_t end) {
    const RangeArgs range{source, target, factors.data(), &runs, begin, end};
    if (avx2) {
      scale_range_avx2<In, Out>(range);
    } else {
      scale_range_plain<In, Out>(range);
    }
  });
}

// Calls body(Element{}) for the element type of `type` (f32, bf16, s8, u8).
template <class Body>
void with_element(dt type, const char* what, Body body) {
  switch (type) {
    case dt::f32: return body(F32{});
    case dt::bf16: return body(BF16{});
    case dt::s8: return body(S8{});
    case dt::u8: return body(U8{});
    default: throw std::runtime_error(std::string(what) + ": unsupported data type");
  }
}

bool is_int8(dt type) { return type == dt::s8 || type == dt::u8; }

// Channel sums over positions: `count` (at most kAverageChunk) channels of one (image,
// channel block) from `in` (the first run's first channel; runs `block` elements apart),
// added to `totals` 64 positions at a time.
constexpr int64_t kAverageChunk = 64;
constexpr int64_t kPositionsInFloat = 64;  // 64 * 255 is exact in float

template <class In>
SHIM_AVX2 void sum_runs_avx2(const typename In::Byte* in, int64_t block, int64_t positions,
                             int64_t count, double* totals) {
  float part[kAverageChunk];
  for (int64_t first = 0; first < positions; first += kPositionsInFloat) {
    std::fill(part, part + count, 0.f);
    const int64_t last = std::min(positions, first + kPositionsInFloat);
    for (int64_t p = first; p < last; ++p) {
      const auto* row = in + p * block;
      int64_t i = 0;
      for (; i + 8 <= count; i += 8)
        _mm256_storeu_ps(part + i, _mm256_add_ps(_mm256_loadu_ps(part + i), load8(In{}, row + i)));
      for (; i < count; ++i) part[i] += In::load(row[i]);
    }
    for (int64_t i = 0; i < count; ++i) totals[i] += part[i];
  }
}

template <class In>
void sum_runs_plain(const typename In::Byte* in, int64_t block, int64_t positions,
                    int64_t count, double* totals) {
  float part[kAverageChunk];
  for (int64_t first = 0; first < positions; first += kPositionsInFloat) {
    std::fill(part, part + count, 0.f);
    const int64_t last = std::min(positions, first + kPositionsInFloat);
    for (int64_t p = first; p < last; ++p)
      for (int64_t i = 0; i < count; ++i) part[i] += In::load(in[p * block + i]);
    for (int64_t i = 0; i < count; ++i) totals[i] += part[i];
  }
}

template <class In>
void average_all(const void* source, float scale, const ChannelRuns& runs, float* out) {
  const auto* src = static_cast<const typename In::Byte*>(source);
  const int64_t chunks = (runs.block + kAverageChunk - 1) / kAverageChunk;
  const int64_t tasks = runs.batch * runs.blocks * chunks;
  const double divisor = static_cast<double>(runs.positions) * scale;
  const bool avx2 = has_avx2();
  const int64_t grain =
      std::max<int64_t>(1, 16384 / std::max<int64_t>(1, runs.positions * kAverageChunk));
  parallel_for(0, tasks, grain, [&](int64_t begin, int64_t end) {
    for (int64_t task = begin; task < end; ++task) {
      const int64_t group = task / chunks;  // (image, channel block)
      const int64_t image = group / runs.blocks;
      const int64_t in_block = task % chunks * kAverageChunk;
      const int64_t channel = group % runs.blocks * runs.block + in_block;
      const int64_t count =
          std::min({kAverageChunk, runs.block - in_block, runs.channels - channel});
      if (count <= 0) continue;  // a block's padding
      const auto* in = src + group * runs.positions * runs.block + in_block;
      double totals[kAverageChunk] = {};
      if (avx2) {
        sum_runs_avx2<In>(in, runs.block, runs.positions, count, totals);
      } else {
        sum_runs_plain<In>(in, runs.block, runs.positions, count, totals);
      }
      for (int64_t i = 0; i < count; ++i)
        out[image * runs.channels + channel + i] = static_cast<float>(totals[i] / divisor);
    }
  });
}

}  // namespace

bool channel_runs_of(const dnnl::memory::desc& layout, ChannelRuns* runs) {
  const dnnl::memory::dims dims = onednn::dims_of(layout);
  if (dims.size() != 4) return false;
  const dt type = onednn::data_type_of(layout);
  using tag = dnnl::memory::format_tag;
  const std::pair<tag, int64_t> known[] = {{tag::acdb, dims[1]}, {tag::aBcd16b, 16},
                                           {tag::aBcd8b, 8}};
  for (const auto& [format, block] : known) {
    if (block <= 0 || layout != dnnl::memory::desc(dims, type, format)) continue;
    runs->batch = dims[0];
    runs->channels = dims[1];
    runs->positions = dims[2] * dims[3];
    runs->block = block;
    runs->blocks = (dims[1] + block - 1) / block;
    return true;
  }
  return false;
}

void scale_channels(const void* src, dt src_type, float src_scale, const float* gate,
                    int64_t gate_batch_stride, const ChannelRuns& runs, void* dst, dt dst_type,
                    float dst_scale) {
  if (!is_int8(src_type)) src_scale = 1.f;
  if (!is_int8(dst_type)) dst_scale = 1.f;
  if (!(src_scale > 0.f) || !(dst_scale > 0.f))
    throw std::runtime_error("channel scale: INT8 scales must be positive");
  with_element(src_type, "channel scale", [&](auto in) {
    with_element(dst_type, "channel scale", [&](auto out) {
      scale_all<decltype(in), decltype(out)>(src, src_scale, gate, gate_batch_stride, runs, dst,
                                             dst_scale);
    });
  });
}

void allow_channel_avx2(bool allowed) { g_avx2_allowed = allowed; }

void average_channel_runs(const void* src, dt type, float scale, const ChannelRuns& runs,
                          float* out) {
  if (!is_int8(type)) scale = 1.f;
  if (!(scale > 0.f)) throw std::runtime_error("channel average: INT8 scale must be positive");
  with_element(type, "channel average",
               [&](auto in) { average_all<decltype(in)>(src, scale, runs, out); });
}

at::Tensor scale_channels_handed_over(const at::Tensor& input, const dnnl::memory::desc& layout,
                                      float input_scale, const at::Tensor& gate, dt output_type,
                                      float output_scale, dnnl::memory::desc* output_layout) {
  ChannelRuns runs;
  if (!channel_runs_of(layout, &runs))
    throw std::runtime_error("channel scale: the handed-over layout is not channels-last or "
                             "8/16-channel blocks");
  if (input.dim() != 4 || input.size(0) != runs.batch || input.size(1) != runs.channels ||
      input.size(2) * input.size(3) != runs.positions)
    throw std::runtime_error("channel scale: the layout does not describe the input");
  if (gate.scalar_type() != at::kFloat || !gate.is_contiguous() || gate.dim() != 4 ||
      gate.size(1) != runs.channels || gate.size(2) != 1 || gate.size(3) != 1 ||
      (gate.size(0) != runs.batch && gate.size(0) != 1))
    throw std::runtime_error("channel scale: the gate is not a contiguous fp32 (N|1, C, 1, 1)");
  const dnnl::memory::desc result = onednn::with_data_type(layout, output_type);
  at::Tensor output = pooled_empty(input.sizes(), at::kFloat, input.suggest_memory_format());
  if (static_cast<int64_t>(result.get_size()) > output.numel() * 4)
    throw std::runtime_error("channel scale: the product does not fit the tensor's bytes");
  scale_channels(input.data_ptr(), onednn::data_type_of(layout), input_scale,
                 gate.data_ptr<float>(), gate.size(0) == 1 ? 0 : runs.channels, runs,
                 output.data_ptr(), output_type, output_scale);
  *output_layout = result;
  return output;
}

}  // namespace ipex_shim
