#include "shim/int8_calibration.h"

#include <ATen/TensorOperators.h>
#include <ATen/ops/aminmax.h>
#include <ATen/ops/convolution.h>
#include <ATen/ops/linear.h>
#include <c10/core/impl/LocalDispatchKeySet.h>
#include <dlfcn.h>
#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <map>
#include <mutex>
#include <numeric>

#include "config/json_file.h"
#include "kernels/matmul.h"
#include "shim/dispatch_key.h"
#include "shim/log.h"

namespace ipex_shim::calibration {
namespace {

// mse: a uniform sample of the magnitudes of every call's values, so that the clip is chosen
// once over all calls (each call's values, sampled as sampled_magnitudes reads them, are
// offered to a reservoir of kSampleSize; a value offered as the n-th is kept with
// probability kSampleSize / n). Clipping each call on its own and keeping the widest clip,
// as this algorithm did before, clipped less and measured lower (README, "mse over all
// calls").
// The generator is seeded alike for every tensor, so a calibration run writes the same
// config each time.
constexpr int64_t kSampleSize = 65536;  // values read from each call, and mse's pool

struct Pool {
  std::vector<float> values;
  uint64_t offered = 0;
  uint64_t random_state = 20261207u;

  // A uniform draw from [0, bound): splitmix64's output, scaled by a 128-bit product (a
  // std::uniform_int_distribution over a 31-bit engine drew three numbers a value and made
  // mse calibration a fifth slower than min_max on resnet50).
  uint64_t below(uint64_t bound) {
    uint64_t z = (random_state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    z ^= z >> 31;
    return static_cast<uint64_t>((static_cast<unsigned __int128>(z) * bound) >> 64);
  }

  void offer(const float* data, int64_t count) {
    for (int64_t i = 0; i < count; ++i, ++offered) {
      if (static_cast<int64_t>(values.size()) < kSampleSize) {
        values.push_back(data[i]);
        continue;
      }
      const uint64_t slot = below(offered + 1);
      if (slot < static_cast<uint64_t>(kSampleSize)) values[slot] = data[i];
    }
  }
};

struct Range {
  double min = std::numeric_limits<double>::infinity();
  double max = -std::numeric_limits<double>::infinity();
  Pool pool;        // mse only
  at::Tensor call;  // the current call's magnitudes (mse), until they join `pool`
  bool seen() const { return min <= max; }
  void widen(double lo, double hi) {
    min = std::min(min, lo);
    max = std::max(max, hi);
  }
};

struct Sample {
  at::Tensor input, weight;
  c10::optional<at::Tensor> bias;
  std::vector<int64_t> stride, padding, dilation;
  int64_t groups = 1;
  bool convolution = false;
  bool transposed = false;
  std::vector<int64_t> output_padding;  // transposed
};

struct Record {
  int64_t calls = 0;
  std::vector<Range> inputs, outputs;
  bool has_sample = false;
  Sample sample;
};

struct State {
  std::mutex mutex;
  std::vector<Record> records;  // by op index (shim/int8_identity.h)
  Settings settings;
  // settings.int8_algorithm, parsed once where the settings are set (read on every call).
  CalibrationAlgorithm algorithm = CalibrationAlgorithm::mse;
  pid_t owner = 0;
  bool active = false;
  bool written = false;
};

State& state() {
  static State* instance = new State();
  return *instance;
}

CalibrationAlgorithm algorithm() { return state().algorithm; }

void set_settings(State& st, const Settings& settings) {
  st.settings = settings;
  st.algorithm = CalibrationAlgorithm::mse;
  parse_algorithm(settings.int8_algorithm, &st.algorithm);
}

// Up to 64K of the tensor's values, evenly strided, as fp32 magnitudes |x|. The stride shares
// no factor with the innermost dimension: one that did would read some of its positions only
// (a stride of 6 over 768 hidden channels reads every sixth channel and never the others).
at::Tensor sampled_magnitudes(const at::Tensor& values) {
  at::Tensor flat = values.reshape({-1});
  const int64_t n = flat.numel();
  const int64_t innermost = values.dim() > 0 ? std::max<int64_t>(1, values.size(-1)) : 1;
  int64_t step = std::max<int64_t>(1, n / kSampleSize);
  while (std::gcd(step, innermost) != 1) ++step;
  at::Tensor sample = flat.slice(0, 0, n, step).to(at::kFloat);
  return sample.abs().contiguous();
}

// The range of one tensor as the algorithm sees it; nothing for a tensor without values.
// (mse: the extremes, and in `call` the sample its clip will be chosen from at the end.)
bool range_of(const at::Tensor& tensor, Range* range) {
  if (!tensor.defined() || !tensor.is_floating_point() || tensor.numel() == 0) return false;
  c10::impl::ExcludeDispatchKeyGuard guard(shim_keys());
  at::Tensor values = tensor.detach();
  auto extremes = at::aminmax(values);
  double lo = std::get<0>(extremes).item<double>();
  double hi = std::get<1>(extremes).item<double>();
  if (!std::isfinite(lo) || !std::isfinite(hi)) return false;
  if (algorithm() == CalibrationAlgorithm::percentile) {
    at::Tensor magnitudes = sampled_magnitudes(values);
    const int64_t m = magnitudes.numel();
    const int64_t k = std::max<int64_t>(1, static_cast<int64_t>(std::ceil(0.9999 * m)));
    const double clip = std::get<0>(magnitudes.kthvalue(k)).item<double>();
    lo = std::max(lo, -clip);
    hi = std::min(hi, clip);
  } else if (algorithm() == CalibrationAlgorithm::mse) {
    range->call = sampled_magnitudes(values);  // clipped over all calls: clipped()
  }
  range->min = lo;
  range->max = hi;
  return true;
}

Record& record_for(State& st, int64_t op) {
  if (static_cast<int64_t>(st.records.size()) <= op) st.records.resize(op + 1);
  return st.records[op];
}

void widen_all(std::vector<Range>* ranges, const std::vector<Range>& seen) {
  if (ranges->size() < seen.size()) ranges->resize(seen.size());
  for (size_t i = 0; i < seen.size(); ++i) {
    if (!seen[i].seen()) continue;
    Range& into = (*ranges)[i];
    into.widen(seen[i].min, seen[i].max);
    if (seen[i].call.defined())
      into.pool.offer(seen[i].call.data_ptr<float>(), seen[i].call.numel());
  }
}

// The range a config gets: the extremes seen, clipped (mse) where quantising the pooled
// sample to the steps this range will get (255 for a tensor never negative, u8; 127 a side
// otherwise) gives the smallest squared error. Without the pool.
Range clipped(const Range& range) {
  Range out;
  out.min = range.min;
  out.max = range.max;
  const std::vector<float>& pool = range.pool.values;
  if (!range.seen() || pool.empty()) return out;
  const double clip = mse_clip_threshold(pool.data(), static_cast<int64_t>(pool.size()),
                                         range.min >= 0.0 ? 255 : 127);
  if (clip > 0.0) {
    out.min = std::max(out.min, -clip);
    out.max = std::min(out.max, clip);
  }
  return out;
}

double sqnr_db(const at::Tensor& reference, const at::Tensor& approximation) {
  const double signal = reference.to(at::kDouble).pow(2).sum().item<double>();
  const double noise = (reference - approximation).to(at::kDouble).pow(2).sum().item<double>();
  if (noise <= 0) return 100.0;
  if (signal <= 0) return 0.0;
  return std::min(100.0, 10.0 * std::log10(signal / noise));
}

// The op's INT8 result on its kept sample, against fp32, with the config's input scale and
// weights quantised as inference will. (The quantisation of its result, when handed to the
// next op, is that op's input quantisation and counts in that op's estimate.)
std::optional<double> sensitivity(const Sample& sample, const Int8Entry& entry, bool per_channel) {
  Int8Spec spec;
  spec.input_scale = static_cast<float>(entry.inputs_scale.at(0));
  spec.input_uint8 = entry.inputs_uint8_used.at(0);
  spec.weight_per_channel = per_channel;
  c10::impl::ExcludeDispatchKeyGuard guard(shim_keys());
  at::Tensor reference, quantised;
  if (sample.convolution) {
    std::vector<int64_t> output_padding = sample.transposed
                                              ? sample.output_padding
                                              : std::vector<int64_t>(sample.stride.size(), 0);
    ConvolutionArgs args{sample.stride,     sample.padding,    sample.dilation,
                         sample.groups,     sample.transposed, output_padding};
    if (convolution_support(sample.input, sample.weight, sample.bias, args) != Fallback::none ||
        int8_convolution_support(sample.input, args) != Fallback::none)
      return std::nullopt;
    reference = at::convolution(sample.input, sample.weight, sample.bias, sample.stride,
                                sample.padding, sample.dilation, sample.transposed,
                                output_padding, sample.groups);
    quantised = convolution_forward(sample.input, sample.weight, sample.bias, args,
                                    Precision::fp32, {}, {}, &spec);
  } else {
    if (linear_support(sample.input, sample.weight, sample.bias) != Fallback::none)
      return std::nullopt;
    reference = at::linear(sample.input, sample.weight, sample.bias);
    quantised = linear_forward(sample.input, sample.weight, sample.bias, Precision::fp32,
                               MatmulActivation::none, &spec);
  }
  return sqnr_db(reference, quantised);
}

void fill_scales(const std::vector<Range>& ranges, std::vector<double>* mins,
                 std::vector<double>* maxs, std::vector<double>* scales,
                 std::vector<bool>* uint8) {
  for (const Range& range : ranges) {
    const double lo = range.seen() ? range.min : 0.0;
    const double hi = range.seen() ? range.max : 0.0;
    bool unsigned_range = false;
    scales->push_back(scale_for(lo, hi, &unsigned_range));
    uint8->push_back(unsigned_range);
    mins->push_back(lo);
    maxs->push_back(hi);
  }
}

// Scales and flags again from an entry's (merged) ranges.
void rescale(Int8Entry* entry) {
  entry->inputs_scale.clear();
  entry->inputs_uint8_used.clear();
  entry->outputs_scale.clear();
  entry->outputs_uint8_used.clear();
  for (size_t i = 0; i < entry->inputs_min.size(); ++i) {
    bool u8 = false;
    entry->inputs_scale.push_back(scale_for(entry->inputs_min[i], entry->inputs_max[i], &u8));
    entry->inputs_uint8_used.push_back(u8);
  }
  for (size_t i = 0; i < entry->outputs_min.size(); ++i) {
    bool u8 = false;
    entry->outputs_scale.push_back(scale_for(entry->outputs_min[i], entry->outputs_max[i], &u8));
    entry->outputs_uint8_used.push_back(u8);
  }
}

// --- writing ---------------------------------------------------------------------------------

const char* env(const char* name) {
  const char* value = std::getenv(name);
  return value && *value ? value : nullptr;
}

// torchrun: every rank leaves its observations in <config>.part.<run>.<rank>; the rank that
// finds all of them present (under a lock) merges them into the config. <run> is torchrun's
// run id and, after a restart, the restart count: a restarted job never merges the parts of
// the attempt that failed. The parts are removed just before the merged config is renamed
// into place, so a kill leaves either the parts and the previous config, or the merged config
// alone (at worst, killed between the two, the previous config and no parts), never the
// merged config beside parts that a later run would merge again.
bool write_as_rank(const std::string& path, const Int8Config& config, int rank, int world,
                   std::string* said) {
  std::string run = env("TORCHELASTIC_RUN_ID") ? env("TORCHELASTIC_RUN_ID") : "run";
  const char* restart = env("TORCHELASTIC_RESTART_COUNT");
  if (restart && std::string(restart) != "0") run += std::string(".restart") + restart;
  auto part_path = [&](int r) { return path + ".part." + run + "." + std::to_string(r); };
  std::string why;
  if (!write_file_atomically(part_path(rank), int8_config_text(config), &why)) {
    *said = "rank " + std::to_string(rank) + ": " + why;
    return false;
  }
  const std::string lock_path = path + ".lock";
  // O_NOFOLLOW: a symbolic link planted at the lock's name is not followed (it would create
  // or open the file it points at).
  const int lock = ::open(lock_path.c_str(), O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0644);
  if (lock < 0 || ::flock(lock, LOCK_EX) != 0) {
    const int error = errno;
    if (lock >= 0) ::close(lock);
    *said = "rank " + std::to_string(rank) + ": observations saved, but cannot lock " +
            lock_path + " to merge them: " +
            (error == ELOOP ? std::string("it is a symbolic link, not followed")
                            : std::string(std::strerror(error)));
    return false;
  }
  std::vector<Int8Config> parts;
  bool all = true;
  for (int r = 0; r < world && all; ++r) {
    if (::access(part_path(r).c_str(), F_OK) != 0) {
      all = false;
      break;
    }
    JsonFile file = read_json_file(part_path(r));
    Int8Config part;
    if (!file.ok || !parse_int8_config(file.value, &part, nullptr)) {
      *said = part_path(r) + " is unreadable; the config was not written";
      ::close(lock);
      return false;
    }
    parts.push_back(std::move(part));
  }
  bool ok = true;  // also when this rank only saved its part
  if (!all) {
    *said = "rank " + std::to_string(rank) + " of " + std::to_string(world) +
            ": observations saved; the last rank to finish writes " + path;
  } else {
    Int8Config merged = merge_configs(parts, state().settings.int8_min_sqnr_db);
    ok = write_file_atomically(path, int8_config_text(merged), &why, [&] {
      for (int r = 0; r < world; ++r) ::unlink(part_path(r).c_str());
    });
    if (ok) {
      // Every rank has saved its part and let go of the lock: nothing waits on it any more.
      ::unlink(lock_path.c_str());
      *said = "wrote " + std::to_string(merged.entries.size()) + " entries to " + path +
              " (merged from " + std::to_string(world) + " ranks)";
    } else {
      *said = why;
    }
  }
  ::close(lock);
  return ok;
}

// Writes the config once; *failed says whether it should have been written and was not.
std::string write_config(bool* failed) {
  *failed = false;
  State& st = state();
  if (!st.active) return "calibration is not active; nothing written";
  if (::getpid() != st.owner) return "a forked child does not write the config";
  {
    std::lock_guard<std::mutex> lock(st.mutex);
    if (st.written) return "the config was already written";
    st.written = true;
  }
  std::string said;
  try {
    Int8Config config = current_config();
    const std::string& path = st.settings.config_path;
    if (config.entries.empty()) {
      // Nothing observed (a launcher such as torchrun's, or a program that never ran a
      // quantisable op): a config from an earlier run stays as it is.
      said = "no quantisable op ran in this process; " + path + " was not written";
      log_line(Severity::info, "calibration: " + said);
      return said;
    }
    bool ok;
    const char* world_text = env("WORLD_SIZE");
    const char* rank_text = env("RANK");
    const int world = world_text ? std::atoi(world_text) : 1;
    if (world > 1 && rank_text) {
      ok = write_as_rank(path, config, std::atoi(rank_text), world, &said);
    } else {
      ok = write_file_atomically(path, int8_config_text(config), &said);
      if (ok) said = "wrote " + std::to_string(config.entries.size()) + " entries to " + path;
    }
    if (ok) {
      log_line(Severity::info, "calibration: " + said);
      return said;
    }
    said = "the config was not written: " + said + " (a previous file at that path is unchanged)";
    *failed = true;
  } catch (const std::exception& error) {
    said = std::string("the config was not written: ") + error.what() +
           " (a previous file is unchanged)";
    *failed = true;
  } catch (...) {
    said = "the config was not written (unknown error)";
    *failed = true;
  }
  log_line(Severity::error, "calibration: " + said);
  return said;
}

// At exit a config that could not be written is the program's failure with IPEX_STRICT=1:
// said, and the exit code becomes 2.
int write_config_at_exit() {
  bool failed = false;
  write_config(&failed);
  if (!failed || !state().settings.strict) return 0;
  log_line(Severity::error, "IPEX_STRICT=1: the config was not written; exit code 2");
  return 2;
}

void write_at_exit() {
  if (write_config_at_exit() == 0) return;
  std::fflush(nullptr);
  std::_Exit(2);
}

// Python's atexit runs before the interpreter is finalised; the callback holds no global name.
// It flushes Python's streams before os._exit, which skips the rest of the finalisation.
void register_with_python() {
  using IsInitialized = int (*)();
  using RunString = int (*)(const char*);
  auto is_initialized = reinterpret_cast<IsInitialized>(::dlsym(RTLD_DEFAULT, "Py_IsInitialized"));
  auto run = reinterpret_cast<RunString>(::dlsym(RTLD_DEFAULT, "PyRun_SimpleString"));
  if (!is_initialized || !run || !is_initialized()) return;
  run("__import__('atexit').register(lambda: (lambda code: code and ("
      "__import__('sys').stdout.flush(), __import__('sys').stderr.flush(), "
      "__import__('os')._exit(code)))("
      "__import__('torch').ops.ipex_shim.write_config_at_exit()))\n");
}

}  // namespace

double scale_for(double min, double max, bool* uint8) {
  *uint8 = min >= 0.0;
  const double magnitude = std::max(std::fabs(min), std::fabs(max));
  if (!(magnitude > 0.0) || !std::isfinite(magnitude)) return 1.0;
  return (*uint8 ? 255.0 : 127.0) / magnitude;
}

bool start(const Settings& settings, std::string* why) {
  if (settings.config_path.empty()) {
    *why = "IPEX_MODE=calibration needs IPEX_CONFIG=<file to write>; nothing would be written";
    return false;
  }
  if (!check_writable(settings.config_path, why)) return false;
  State& st = state();
  set_settings(st, settings);
  st.owner = ::getpid();
  st.active = true;
  std::atexit(&write_at_exit);
  register_with_python();
  return true;
}

std::string write_now() {
  bool failed = false;
  return write_config(&failed);
}

int64_t write_at_exit_now() { return write_config_at_exit(); }

void start_observing(const Settings& settings) {
  State& st = state();
  std::lock_guard<std::mutex> lock(st.mutex);
  if (st.active) return;
  set_settings(st, settings);
  st.owner = ::getpid();
  st.active = true;
}

bool save_to(const std::string& path, std::string* said) {
  try {
    if (!active()) {
      *said = "nothing was observed: no op ran in calibration mode";
      return false;
    }
    Int8Config config = current_config();
    if (config.entries.empty()) {
      *said = "no quantisable op ran in calibration mode; " + path + " was not written";
      return false;
    }
    std::string why;
    if (!write_file_atomically(path, int8_config_text(config), &why)) {
      *said = "the config was not written: " + why + " (a previous file at that path is unchanged)";
      return false;
    }
    *said = "wrote " + std::to_string(config.entries.size()) + " entries to " + path;
    return true;
  } catch (const std::exception& error) {
    *said = std::string("the config was not written: ") + error.what() +
            " (a previous file is unchanged)";
  }
  return false;
}

void reset_observations() {
  State& st = state();
  std::lock_guard<std::mutex> lock(st.mutex);
  st.records.clear();
}

bool active() { return state().active; }

void observe_inputs(int64_t op, const std::vector<const at::Tensor*>& inputs) {
  if (op == int8::kNoOp) return;
  std::vector<Range> seen;
  for (const at::Tensor* tensor : inputs) {
    seen.emplace_back();
    if (tensor) range_of(*tensor, &seen.back());
  }
  State& st = state();
  std::lock_guard<std::mutex> lock(st.mutex);
  widen_all(&record_for(st, op).inputs, seen);
}

void observe_output(int64_t op, const at::Tensor& output) {
  if (op == int8::kNoOp) return;
  std::vector<Range> seen(1);
  range_of(output, &seen[0]);
  State& st = state();
  std::lock_guard<std::mutex> lock(st.mutex);
  Record& record = record_for(st, op);
  ++record.calls;
  widen_all(&record.outputs, seen);
}

namespace {

// Keeps the sample `make` builds as op `op`'s, unless it has one already (made only then).
template <class Make>
void keep_sample(int64_t op, Make make) {
  if (op == int8::kNoOp) return;
  State& st = state();
  {
    std::lock_guard<std::mutex> lock(st.mutex);
    if (record_for(st, op).has_sample) return;
  }
  Sample sample;
  {
    c10::impl::ExcludeDispatchKeyGuard guard(shim_keys());
    sample = make();
  }
  std::lock_guard<std::mutex> lock(st.mutex);
  Record& record = record_for(st, op);
  if (record.has_sample) return;  // another thread was faster
  record.sample = std::move(sample);
  record.has_sample = true;
}

}  // namespace

void keep_convolution_sample(int64_t op, const at::Tensor& input, const at::Tensor& weight,
                             const c10::optional<at::Tensor>& bias, c10::IntArrayRef stride,
                             c10::IntArrayRef padding, c10::IntArrayRef dilation,
                             int64_t groups, bool transposed, c10::IntArrayRef output_padding) {
  keep_sample(op, [&] {
    Sample sample;
    sample.input = input.detach().slice(0, 0, std::min<int64_t>(2, input.size(0))).clone();
    sample.weight = weight.detach();
    if (bias && bias->defined()) sample.bias = bias->detach();
    sample.stride = stride.vec();
    sample.padding = padding.vec();
    sample.dilation = dilation.vec();
    sample.groups = groups;
    sample.convolution = true;
    sample.transposed = transposed;
    sample.output_padding = output_padding.vec();
    return sample;
  });
}

void keep_linear_sample(int64_t op, const at::Tensor& input, const at::Tensor& weight,
                        const c10::optional<at::Tensor>& bias) {
  if (input.dim() < 1) return;
  keep_sample(op, [&] {
    Sample sample;
    at::Tensor rows = input.detach().reshape({-1, input.size(-1)});
    sample.input = rows.slice(0, 0, std::min<int64_t>(256, rows.size(0))).clone();
    sample.weight = weight.detach();
    if (bias && bias->defined()) sample.bias = bias->detach();
    return sample;
  });
}

Int8Config current_config() {
  State& st = state();
  std::vector<Record> records;  // the ranges clipped, without their pools
  {
    std::lock_guard<std::mutex> lock(st.mutex);
    records.reserve(st.records.size());
    for (const Record& kept : st.records) {
      Record& record = records.emplace_back();
      record.calls = kept.calls;
      record.has_sample = kept.has_sample;
      record.sample = kept.sample;
      for (const Range& range : kept.inputs) record.inputs.push_back(clipped(range));
      for (const Range& range : kept.outputs) record.outputs.push_back(clipped(range));
    }
  }
  const CalibrationAlgorithm algorithm = st.algorithm;
  Granularity granularity = Granularity::per_channel;
  parse_granularity(st.settings.int8_granularity, &granularity);

  Int8Config config;
  for (size_t index = 0; index < records.size(); ++index) {
    const Record& record = records[index];
    if (record.calls == 0) continue;
    const int8::OpInfo info = int8::op_info(static_cast<int64_t>(index));
    Int8Entry entry;
    entry.id = static_cast<int64_t>(config.entries.size());
    entry.name = int8::kind_name(info.kind);
    entry.key = info.key;
    entry.algorithm = algorithm;
    entry.weight_granularity = int8::has_weight(info.kind) ? granularity : Granularity::per_tensor;
    fill_scales(record.inputs, &entry.inputs_min, &entry.inputs_max, &entry.inputs_scale,
                &entry.inputs_uint8_used);
    fill_scales(record.outputs, &entry.outputs_min, &entry.outputs_max, &entry.outputs_scale,
                &entry.outputs_uint8_used);
    entry.calls = record.calls;
    if (record.has_sample && !entry.inputs_scale.empty() && !entry.outputs_scale.empty()) {
      try {
        entry.sqnr_db = sensitivity(record.sample, entry, granularity == Granularity::per_channel);
      } catch (const std::exception& error) {
        log_limited("calibration-sensitivity", 3, Severity::warning,
                    "calibration: could not estimate the INT8 error of " + entry.key + ": " +
                        error.what());
      }
    }
    entry.quantized = !entry.sqnr_db || *entry.sqnr_db >= st.settings.int8_min_sqnr_db;
    config.entries.push_back(std::move(entry));
  }
  return config;
}

Int8Config merge_configs(const std::vector<Int8Config>& parts, double min_sqnr_db) {
  Int8Config merged;
  std::map<std::string, size_t> where;
  for (const Int8Config& part : parts) {
    for (const Int8Entry& entry : part.entries) {
      if (!entry.valid || entry.key.empty()) continue;
      auto found = where.find(entry.key);
      if (found == where.end()) {
        where.emplace(entry.key, merged.entries.size());
        merged.entries.push_back(entry);
        continue;
      }
      Int8Entry& into = merged.entries[found->second];
      auto widen = [](std::vector<double>* mins, std::vector<double>* maxs,
                      const std::vector<double>& other_mins, const std::vector<double>& other_maxs) {
        for (size_t i = 0; i < mins->size() && i < other_mins.size(); ++i) {
          (*mins)[i] = std::min((*mins)[i], other_mins[i]);
          (*maxs)[i] = std::max((*maxs)[i], other_maxs[i]);
        }
      };
      widen(&into.inputs_min, &into.inputs_max, entry.inputs_min, entry.inputs_max);
      widen(&into.outputs_min, &into.outputs_max, entry.outputs_min, entry.outputs_max);
      if (entry.calls) into.calls = into.calls.value_or(0) + *entry.calls;
      if (entry.sqnr_db) into.sqnr_db = into.sqnr_db ? std::min(*into.sqnr_db, *entry.sqnr_db) : *entry.sqnr_db;
    }
  }
  for (size_t i = 0; i < merged.entries.size(); ++i) {
    Int8Entry& entry = merged.entries[i];
    entry.id = static_cast<int64_t>(i);
    if (entry.inputs_min.size() == entry.inputs_scale.size() &&
        entry.outputs_min.size() == entry.outputs_scale.size())
      rescale(&entry);
    entry.quantized = !entry.sqnr_db || *entry.sqnr_db >= min_sqnr_db;
  }
  return merged;
}

}  // namespace ipex_shim::calibration
