// ipex-shim-ceiling: what oneDNN's own primitives reach on this machine, per precision.
//
// Runs large products (a square matmul and ResNet-50's stage-3 convolutions) in fp32, BF16
// and INT8 (u8 x s8 with per-channel weight scales, as the shim's kernels), each with the
// layouts oneDNN prefers, on oneDNN's threads (OMP_NUM_THREADS), and prints one JSON object:
// the GFLOP/s of each case, the implementation oneDNN chose, and per precision the best of
// them, the "ceiling" scripts/bench.py --ceiling divides a model's GFLOP/s by. A precision
// oneDNN has no kernel for here is reported unavailable, with oneDNN's reason.
//
// usage: ipex-shim-ceiling [SECONDS_PER_CASE]   (default 2)
#include <dnnl.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "kernels/onednn_compat.h"
#include "kernels/onednn_context.h"
#include "shim/runtime.h"

namespace {

using dnnl::memory;
using Tag = memory::format_tag;
using Type = memory::data_type;

struct Precision {
  const char* name;
  Type src, weights, dst;
};

const Precision kPrecisions[] = {
    {"fp32", Type::f32, Type::f32, Type::f32},
    {"bf16", Type::bf16, Type::bf16, Type::bf16},
    {"int8", Type::u8, Type::s8, Type::u8},
};

// A primitive ready to run, with what one run computes.
struct Prepared {
  dnnl::primitive primitive;
  ipex_shim::onednn::Arguments arguments;
  double flops = 0;
  std::string implementation;
};

memory zeroed(const memory::desc& desc) {
  memory mem(desc, ipex_shim::cpu_engine());
  std::fill_n(static_cast<char*>(mem.get_data_handle()), desc.get_size(), 0);
  return mem;
}

ipex_shim::onednn::ProductScales scales_for(const Precision& precision, int64_t channels,
                                            int weights_mask) {
  ipex_shim::onednn::ProductScales scales;
  if (precision.src != Type::u8) return scales;
  scales.src = 32.f;
  scales.weights.assign(channels, 64.f);
  scales.weights_mask = weights_mask;
  scales.dst = 16.f;
  return scales;
}

void add_scales(const Precision& precision, const ipex_shim::onednn::ProductScales& scales,
                Prepared* prepared) {
  if (precision.src != Type::u8) return;
  for (auto& [argument, mem] : ipex_shim::onednn::product_scale_arguments(scales))
    prepared->arguments[argument] = mem;
}

Prepared matmul(const Precision& precision, int64_t m, int64_t n, int64_t k) {
  namespace compat = ipex_shim::onednn;
  const memory::desc src({m, k}, precision.src, Tag::any);
  const memory::desc weights({k, n}, precision.weights, Tag::any);
  const memory::desc dst({m, n}, precision.dst, Tag::ab);
  dnnl::primitive_attr attr;
  const compat::ProductScales scales = scales_for(precision, n, 1 << 1);
  if (precision.src == Type::u8) compat::set_product_scales(attr, scales);
  auto pd = compat::matmul_primitive_desc(src, weights, nullptr, dst, attr);
  Prepared prepared{dnnl::matmul(pd),
                    {{DNNL_ARG_SRC, zeroed(pd.src_desc())},
                     {DNNL_ARG_WEIGHTS, zeroed(pd.weights_desc())},
                     {DNNL_ARG_DST, zeroed(pd.dst_desc())}},
                    2.0 * m * n * k, pd.impl_info_str()};
  add_scales(precision, scales, &prepared);
  return prepared;
}

Prepared convolution(const Precision& precision, int64_t batch, int64_t in, int64_t out,
                     int64_t size, int64_t kernel) {
  namespace compat = ipex_shim::onednn;
  const int64_t pad = kernel / 2;
  const memory::desc src({batch, in, size, size}, precision.src, Tag::any);
  const memory::desc weights({out, in, kernel, kernel}, precision.weights, Tag::any);
  const memory::desc dst({batch, out, size, size}, precision.dst, Tag::any);
  dnnl::primitive_attr attr;
  const compat::ProductScales scales = scales_for(precision, out, 1 << 0);
  if (precision.src == Type::u8) compat::set_product_scales(attr, scales);
  compat::ConvolutionWindow window{{1, 1}, {0, 0}, {pad, pad}, {pad, pad}};
  auto pd = compat::convolution_forward_primitive_desc(dnnl::prop_kind::forward_inference, src,
                                                       weights, nullptr, dst, window, attr);
  Prepared prepared{dnnl::convolution_forward(pd),
                    {{DNNL_ARG_SRC, zeroed(pd.src_desc())},
                     {DNNL_ARG_WEIGHTS, zeroed(pd.weights_desc())},
                     {DNNL_ARG_DST, zeroed(pd.dst_desc())}},
                    2.0 * batch * out * size * size * in * kernel * kernel,
                    pd.impl_info_str()};
  add_scales(precision, scales, &prepared);
  return prepared;
}

// The best time of repeated runs within `seconds` (at least 3 runs after one warm-up).
double best_seconds(Prepared& prepared, double seconds) {
  dnnl::stream& stream = ipex_shim::thread_stream();
  using Clock = std::chrono::steady_clock;
  prepared.primitive.execute(stream, prepared.arguments);
  stream.wait();
  double best = 1e30;
  const auto start = Clock::now();
  for (int run = 0; run < 3 || std::chrono::duration<double>(Clock::now() - start).count() < seconds;
       ++run) {
    const auto begin = Clock::now();
    prepared.primitive.execute(stream, prepared.arguments);
    stream.wait();
    best = std::min(best, std::chrono::duration<double>(Clock::now() - begin).count());
  }
  return best;
}

struct Case {
  const char* name;
  std::function<Prepared(const Precision&)> make;
};

}  // namespace

int main(int argc, char** argv) {
  const double seconds = argc > 1 ? std::atof(argv[1]) : 2.0;
  const Case cases[] = {
      {"matmul 2048x2048x2048", [](const Precision& p) { return matmul(p, 2048, 2048, 2048); }},
      {"conv 3x3 256->256 14x14 batch 16",
       [](const Precision& p) { return convolution(p, 16, 256, 256, 14, 3); }},
      {"conv 1x1 1024->256 14x14 batch 16",
       [](const Precision& p) { return convolution(p, 16, 1024, 256, 14, 1); }},
  };
  nlohmann::json report;
  const dnnl_version_t* version = dnnl_version();
  report["onednn"] = std::to_string(version->major) + "." + std::to_string(version->minor) +
                     "." + std::to_string(version->patch);
  report["onednn_isa"] = ipex_shim::onednn_isa();
  report["seconds_per_case"] = seconds;
  nlohmann::json results = nlohmann::json::array();
  nlohmann::json ceiling = nlohmann::json::object();
  for (const Precision& precision : kPrecisions) {
    double best = 0;
    std::string where;
    for (const Case& c : cases) {
      nlohmann::json row = {{"precision", precision.name}, {"case", c.name}};
      try {
        Prepared prepared = c.make(precision);
        const double time = best_seconds(prepared, seconds);
        const double gflops = prepared.flops / time / 1e9;
        row["gflops"] = gflops;
        row["ms"] = time * 1e3;
        row["implementation"] = prepared.implementation;
        if (gflops > best) {
          best = gflops;
          where = c.name;
        }
      } catch (const dnnl::error& error) {
        row["unavailable"] = std::string("oneDNN: ") + error.what();
      }
      results.push_back(row);
    }
    ceiling[precision.name] =
        best > 0 ? nlohmann::json{{"gflops", best}, {"case", where}} : nlohmann::json(nullptr);
  }
  report["results"] = results;
  report["ceiling"] = ceiling;
  std::printf("%s\n", report.dump(2).c_str());
  return 0;
}
