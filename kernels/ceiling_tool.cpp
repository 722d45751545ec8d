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
//        ipex-shim-ceiling --shapes fp32|bf16|int8 SECONDS [--cold] DESCRIPTOR...
// The second form times each convolution or matmul named by its ONEDNN_VERBOSE problem
// descriptor alone, in oneDNN's preferred layouts and without post-ops: what oneDNN reaches
// on a model's own shapes (scripts/bench.py --onednn-profile); --cold flushes the operands
// from the caches before each run.
#include <dnnl.h>
#include <immintrin.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cctype>
#include <functional>
#include <map>
#include <sstream>
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

Tag plain_tag(size_t dims) {
  switch (dims) {
    case 2: return Tag::ab;
    case 3: return Tag::abc;
    case 4: return Tag::abcd;
    default: return Tag::abcde;
  }
}

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

// A matrix product of src x weights -> dst with these dimensions (2-D or batched; the
// weights in oneDNN's preferred layout, as the shim packs a linear layer's).
Prepared matmul(const Precision& precision, const memory::dims& a, const memory::dims& b,
                const memory::dims& c, bool src_any = false) {
  namespace compat = ipex_shim::onednn;
  const memory::desc src(a, precision.src, src_any ? Tag::any : plain_tag(a.size()));
  const memory::desc weights(b, precision.weights, Tag::any);
  const memory::desc dst(c, precision.dst, plain_tag(c.size()));
  dnnl::primitive_attr attr;
  // INT8: per output channel for a 2-D product (a linear layer's weights), one scale for
  // a batched one's B (as the shim's bmm).
  const bool batched = b.size() > 2;
  const compat::ProductScales scales =
      scales_for(precision, batched ? 1 : b.back(), batched ? 0 : 1 << 1);
  if (precision.src == Type::u8) compat::set_product_scales(attr, scales);
  auto pd = compat::matmul_primitive_desc(src, weights, nullptr, dst, attr);
  double flops = 2.0 * a.back();  // the reduced dimension
  for (int64_t extent : c) flops *= static_cast<double>(extent);
  Prepared prepared{dnnl::matmul(pd),
                    {{DNNL_ARG_SRC, zeroed(pd.src_desc())},
                     {DNNL_ARG_WEIGHTS, zeroed(pd.weights_desc())},
                     {DNNL_ARG_DST, zeroed(pd.dst_desc())}},
                    flops, pd.impl_info_str()};
  add_scales(precision, scales, &prepared);
  return prepared;
}

// "16x768:768x768:16x768" (oneDNN 2.x) or "16x768:768x768" (3.x), a matmul's descriptor in
// oneDNN's verbose log.
bool parse_matmul(const std::string& text, std::vector<memory::dims>* operands, std::string* why) {
  operands->clear();
  std::stringstream parts(text);
  std::string part;
  while (std::getline(parts, part, ':')) {
    memory::dims dims;
    std::stringstream extents(part);
    std::string extent;
    while (std::getline(extents, extent, 'x')) {
      if (extent.empty() || extent.find_first_not_of("0123456789") != std::string::npos) {
        *why = "not a matmul descriptor \"" + text + "\"";
        return false;
      }
      dims.push_back(std::stoll(extent));
    }
    operands->push_back(dims);
  }
  // oneDNN 3.x leaves the result out: batch dimensions broadcast, then rows x columns.
  if (operands->size() == 2 && (*operands)[0].size() == (*operands)[1].size() &&
      (*operands)[0].size() >= 2) {
    const memory::dims& a = (*operands)[0];
    const memory::dims& b = (*operands)[1];
    memory::dims c;
    for (size_t i = 0; i + 2 < a.size(); ++i) c.push_back(std::max(a[i], b[i]));
    c.push_back(a[a.size() - 2]);
    c.push_back(b.back());
    operands->push_back(c);
  }
  const bool fits = operands->size() == 3 && (*operands)[0].size() >= 2 &&
                    (*operands)[0].size() == (*operands)[1].size() &&
                    (*operands)[1].size() == (*operands)[2].size();
  if (!fits) *why = "not a matmul descriptor \"" + text + "\"";
  return fits;
}

// A convolution's problem as oneDNN's verbose log writes it, e.g.
// "g2mb16_ic64oc64_ih56oh56kh3sh1dh0ph1_iw56ow56kw3sw1dw0pw1" (depth as id/od/kd/... too).
struct ConvolutionShape {
  int64_t groups = 1, batch = 0, in = 0, out = 0;
  // Per spatial dimension (depth, height, width; those present): input, output, kernel,
  // stride, dilation (oneDNN's: 0 for none), left padding.
  struct Axis {
    int64_t input = 0, output = 0, kernel = 1, stride = 1, dilation = 0, padding = 0;
  };
  std::vector<Axis> axes;
};

ConvolutionShape square_convolution(int64_t batch, int64_t in, int64_t out, int64_t size,
                                    int64_t kernel) {
  ConvolutionShape shape;
  shape.batch = batch;
  shape.in = in;
  shape.out = out;
  for (int i = 0; i < 2; ++i) shape.axes.push_back({size, size, kernel, 1, 0, kernel / 2});
  return shape;
}

// Reads a verbose problem descriptor; false (with `why`) for anything else.
bool parse_convolution(const std::string& text, ConvolutionShape* shape, std::string* why) {
  std::map<std::string, int64_t> fields;
  size_t at = 0;
  while (at < text.size()) {
    if (text[at] == '_') {
      ++at;
      continue;
    }
    size_t key_end = at;
    while (key_end < text.size() && std::isalpha(static_cast<unsigned char>(text[key_end])))
      ++key_end;
    size_t value_end = key_end;
    while (value_end < text.size() && std::isdigit(static_cast<unsigned char>(text[value_end])))
      ++value_end;
    if (key_end == at || value_end == key_end) {
      *why = "not a convolution descriptor (at \"" + text.substr(at) + "\")";
      return false;
    }
    fields[text.substr(at, key_end - at)] = std::stoll(text.substr(key_end, value_end - key_end));
    at = value_end;
  }
  auto get = [&](const std::string& key, int64_t fallback) {
    auto found = fields.find(key);
    return found == fields.end() ? fallback : found->second;
  };
  shape->groups = get("g", 1);
  shape->batch = get("mb", 0);
  shape->in = get("ic", 0);
  shape->out = get("oc", 0);
  shape->axes.clear();
  for (const char* axis : {"d", "h", "w"}) {
    const std::string a(axis);
    if (!fields.count("i" + a)) continue;
    ConvolutionShape::Axis x;
    x.input = get("i" + a, 0);
    x.output = get("o" + a, 0);
    x.kernel = get("k" + a, 1);
    x.stride = get("s" + a, 1);
    x.dilation = get("d" + a, 0);
    x.padding = get("p" + a, 0);
    shape->axes.push_back(x);
  }
  if (shape->batch <= 0 || shape->in <= 0 || shape->out <= 0 || shape->axes.empty() ||
      shape->groups <= 0 || shape->in % shape->groups || shape->out % shape->groups) {
    *why = "incomplete convolution descriptor \"" + text + "\"";
    return false;
  }
  return true;
}

Prepared convolution(const Precision& precision, const ConvolutionShape& shape) {
  namespace compat = ipex_shim::onednn;
  memory::dims src_dims{shape.batch, shape.in}, dst_dims{shape.batch, shape.out};
  memory::dims weight_dims{shape.out / shape.groups, shape.in / shape.groups};
  if (shape.groups > 1) weight_dims.insert(weight_dims.begin(), shape.groups);
  compat::ConvolutionWindow window;
  double flops = 2.0 * shape.batch * shape.out * (shape.in / shape.groups);
  for (const ConvolutionShape::Axis& axis : shape.axes) {
    src_dims.push_back(axis.input);
    dst_dims.push_back(axis.output);
    weight_dims.push_back(axis.kernel);
    window.strides.push_back(axis.stride);
    window.dilates.push_back(axis.dilation);
    window.padding_l.push_back(axis.padding);
    // The right padding that gives this output size.
    const int64_t extent = (axis.kernel - 1) * (axis.dilation + 1) + 1;
    window.padding_r.push_back((axis.output - 1) * axis.stride + extent - axis.input -
                               axis.padding);
    flops *= static_cast<double>(axis.output) * axis.kernel;
  }
  const memory::desc src(src_dims, precision.src, Tag::any);
  const memory::desc weights(weight_dims, precision.weights, Tag::any);
  const memory::desc dst(dst_dims, precision.dst, Tag::any);
  dnnl::primitive_attr attr;
  const int weights_mask = shape.groups > 1 ? (1 << 0) | (1 << 1) : (1 << 0);
  const compat::ProductScales scales = scales_for(precision, shape.out, weights_mask);
  if (precision.src == Type::u8) compat::set_product_scales(attr, scales);
  auto pd = compat::convolution_forward_primitive_desc(dnnl::prop_kind::forward_inference, src,
                                                       weights, nullptr, dst, window, attr);
  Prepared prepared{dnnl::convolution_forward(pd),
                    {{DNNL_ARG_SRC, zeroed(pd.src_desc())},
                     {DNNL_ARG_WEIGHTS, zeroed(pd.weights_desc())},
                     {DNNL_ARG_DST, zeroed(pd.dst_desc())}},
                    flops, pd.impl_info_str()};
  add_scales(precision, scales, &prepared);
  return prepared;
}

// Evicts a primitive's operands from every cache level (clflush by cache line).
void flush_operands(const Prepared& prepared) {
  for (const auto& [argument, mem] : prepared.arguments) {
    const char* data = static_cast<const char*>(mem.get_data_handle());
    const size_t size = mem.get_desc().get_size();
    if (!data) continue;
    for (size_t offset = 0; offset < size; offset += 64) _mm_clflush(data + offset);
  }
  _mm_mfence();
}

// The best time of repeated runs within `seconds` (at least 3 runs after one warm-up);
// `cold`: with the operands flushed from the caches before each run.
double best_seconds(Prepared& prepared, double seconds, bool cold) {
  dnnl::stream& stream = ipex_shim::thread_stream();
  using Clock = std::chrono::steady_clock;
  prepared.primitive.execute(stream, prepared.arguments);
  stream.wait();
  double best = 1e30;
  const auto start = Clock::now();
  for (int run = 0; run < 3 || std::chrono::duration<double>(Clock::now() - start).count() < seconds;
       ++run) {
    if (cold) flush_operands(prepared);
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

// Times one case into `row` (ms, GFLOP/s, oneDNN's implementation), or says why oneDNN
// could not run it.
void time_case(const std::function<Prepared(const Precision&)>& make, const Precision& precision,
               double seconds, bool cold, nlohmann::json* row) {
  try {
    Prepared prepared = make(precision);
    const double time = best_seconds(prepared, seconds, cold);
    (*row)["gflops"] = prepared.flops / time / 1e9;
    (*row)["ms"] = time * 1e3;
    (*row)["implementation"] = prepared.implementation;
  } catch (const dnnl::error& error) {
    (*row)["unavailable"] = std::string("oneDNN: ") + error.what();
  }
}

// The best of `cases` per precision, as the JSON report described above.
nlohmann::json measure_ceiling(double seconds) {
  const Case cases[] = {
      {"matmul 2048x2048x2048",
       [](const Precision& p) { return matmul(p, {2048, 2048}, {2048, 2048}, {2048, 2048}, true); }},
      {"conv 3x3 256->256 14x14 batch 16",
       [](const Precision& p) { return convolution(p, square_convolution(16, 256, 256, 14, 3)); }},
      {"conv 1x1 1024->256 14x14 batch 16",
       [](const Precision& p) { return convolution(p, square_convolution(16, 1024, 256, 14, 1)); }},
  };
  nlohmann::json results = nlohmann::json::array();
  nlohmann::json ceiling = nlohmann::json::object();
  for (const Precision& precision : kPrecisions) {
    double best = 0;
    std::string where;
    for (const Case& c : cases) {
      nlohmann::json row = {{"precision", precision.name}, {"case", c.name}};
      time_case(c.make, precision, seconds, false, &row);
      if (row.contains("gflops") && row["gflops"].get<double>() > best) {
        best = row["gflops"].get<double>();
        where = c.name;
      }
      results.push_back(row);
    }
    ceiling[precision.name] =
        best > 0 ? nlohmann::json{{"gflops", best}, {"case", where}} : nlohmann::json(nullptr);
  }
  return {{"results", results}, {"ceiling", ceiling}};
}

// Each shape alone, as oneDNN's verbose log describes it: what oneDNN's own primitive (its
// preferred layouts, no post-ops) reaches on the convolutions and matmuls of a model, with
// its operands in the caches from the run before or (`cold`) read from memory.
nlohmann::json measure_shapes(const Precision& precision, double seconds, bool cold,
                              const std::vector<std::string>& shapes) {
  nlohmann::json results = nlohmann::json::array();
  for (const std::string& shape : shapes) {
    nlohmann::json row = {{"precision", precision.name}, {"shape", shape}};
    std::string why_not_conv, why_not_matmul;
    ConvolutionShape conv;
    std::vector<memory::dims> operands;
    try {
      if (parse_convolution(shape, &conv, &why_not_conv)) {
        time_case([&](const Precision& p) { return convolution(p, conv); }, precision, seconds,
                  cold, &row);
      } else if (parse_matmul(shape, &operands, &why_not_matmul)) {
        time_case(
            [&](const Precision& p) { return matmul(p, operands[0], operands[1], operands[2]); },
            precision, seconds, cold, &row);
      } else {
        row["unavailable"] = why_not_conv + "; " + why_not_matmul;
      }
    } catch (const std::exception& error) {  // a number out of range, memory for a huge shape
      row["unavailable"] = std::string("cannot run: ") + error.what();
    }
    results.push_back(row);
  }
  return {{"results", results}};
}

int usage() {
  std::fprintf(stderr,
               "usage: ipex-shim-ceiling [SECONDS_PER_CASE]\n"
               "       ipex-shim-ceiling --shapes fp32|bf16|int8 SECONDS_PER_SHAPE [--cold] "
               "DESCRIPTOR...\n"
               "  DESCRIPTOR: a convolution's or matmul's problem as ONEDNN_VERBOSE prints it\n");
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  nlohmann::json report;
  const dnnl_version_t* version = dnnl_version();
  report["onednn"] = std::to_string(version->major) + "." + std::to_string(version->minor) +
                     "." + std::to_string(version->patch);
  report["onednn_isa"] = ipex_shim::onednn_isa();
  if (argc > 1 && std::string(argv[1]) == "--shapes") {
    if (argc < 4) return usage();
    const Precision* precision = nullptr;
    for (const Precision& p : kPrecisions)
      if (argv[2] == std::string(p.name)) precision = &p;
    char* end = nullptr;
    const double seconds = std::strtod(argv[3], &end);
    if (!precision || end == argv[3] || *end || seconds < 0) return usage();
    const bool cold = argc > 4 && std::string(argv[4]) == "--cold";
    report["seconds_per_case"] = seconds;
    report["cold"] = cold;
    report.update(measure_shapes(*precision, seconds, cold, {argv + 4 + cold, argv + argc}));
  } else {
    char* end = nullptr;
    const double seconds = argc > 1 ? std::strtod(argv[1], &end) : 2.0;
    if (argc > 2 || (argc > 1 && (end == argv[1] || *end || seconds < 0))) return usage();
    report["seconds_per_case"] = seconds;
    report.update(measure_ceiling(seconds));
  }
  std::printf("%s\n", report.dump(2).c_str());
  return 0;
}
