#include "config/int8_config.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <functional>
#include <limits>
#include <map>

namespace ipex_shim {

const char* granularity_name(Granularity granularity) {
  switch (granularity) {
    case Granularity::per_channel: return "per_channel";
    case Granularity::per_tensor: return "per_tensor";
  }
  return "unknown";
}

const char* algorithm_name(CalibrationAlgorithm algorithm) {
  switch (algorithm) {
    case CalibrationAlgorithm::min_max: return "min_max";
    case CalibrationAlgorithm::percentile: return "percentile";
    case CalibrationAlgorithm::mse: return "mse";
  }
  return "unknown";
}

bool parse_granularity(const std::string& text, Granularity* granularity) {
  for (Granularity candidate : {Granularity::per_channel, Granularity::per_tensor}) {
    if (text == granularity_name(candidate)) {
      *granularity = candidate;
      return true;
    }
  }
  return false;
}

bool parse_algorithm(const std::string& text, CalibrationAlgorithm* algorithm) {
  for (CalibrationAlgorithm candidate :
       {CalibrationAlgorithm::min_max, CalibrationAlgorithm::percentile,
        CalibrationAlgorithm::mse}) {
    if (text == algorithm_name(candidate)) {
      *algorithm = candidate;
      return true;
    }
  }
  return false;
}

namespace {

// Summed squared error of quantising the magnitudes to multiples of t / levels, clipped at t.
// In float, rounding by adding and taking away 1.5 * 2^23 (round to nearest even, like
// nearbyint, for the values below 2^22 that v * levels / t is here; a value above t becomes
// levels steps, t), over eight partial sums: a loop the compiler vectorises (nearbyint is a
// library call without SSE4.1, and a single float sum may not be reordered).
double clip_error(const float* magnitudes, int64_t count, int levels, double t) {
  constexpr float kRound = 12582912.0f;
  const float inverse = static_cast<float>(levels / t);
  const float step = static_cast<float>(t / levels);
  const float top = static_cast<float>(levels);
  double sum = 0.0;
  constexpr int64_t kBlock = 4096;
  for (int64_t begin = 0; begin < count; begin += kBlock) {
    const int64_t end = std::min(count, begin + kBlock);
    float partial[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    int64_t i = begin;
    for (; i + 8 <= end; i += 8) {
      for (int lane = 0; lane < 8; ++lane) {
        const float v = magnitudes[i + lane];
        const float e = v - std::min((v * inverse + kRound) - kRound, top) * step;
        partial[lane] += e * e;
      }
    }
    for (; i < end; ++i) {
      const float v = magnitudes[i];
      const float e = v - std::min((v * inverse + kRound) - kRound, top) * step;
      partial[0] += e * e;
    }
    for (float p : partial) sum += p;
  }
  return sum;
}

}  // namespace

double mse_clip_threshold(const float* magnitudes, int64_t count, int levels) {
  double largest = 0.0;
  for (int64_t i = 0; i < count; ++i) largest = std::max(largest, double{magnitudes[i]});
  if (!(largest > 0.0) || levels <= 0) return 0.0;
  // Coarse: largest * 2^(-j/4) for j = 0..28 (down to largest / 128).
  constexpr int kCoarse = 28;
  int best_j = 0;
  double best_error = std::numeric_limits<double>::infinity();
  for (int j = 0; j <= kCoarse; ++j) {
    const double error = clip_error(magnitudes, count, levels, largest * std::exp2(-j / 4.0));
    if (error < best_error) {
      best_error = error;
      best_j = j;
    }
  }
  // Then 1/64 octave steps between the coarse neighbours of the best point, and 1/512 octave
  // steps between the neighbours of the best of those (the error is not smooth in t: each
  // value's rounding jumps as t moves).
  int best_k = best_j * 128;  // in 1/512 octaves
  auto refine = [&](int stride, int reach) {
    const int centre = best_k;
    for (int k = std::max(0, centre - reach); k <= std::min(kCoarse * 128, centre + reach);
         k += stride) {
      if (k == centre) continue;
      const double error = clip_error(magnitudes, count, levels, largest * std::exp2(-k / 512.0));
      if (error < best_error) {
        best_error = error;
        best_k = k;
      }
    }
  };
  refine(8, 128);
  refine(1, 8);
  return largest * std::exp2(-best_k / 512.0);
}

const std::vector<std::string>& int8_op_names() {
  static const std::vector<std::string> names = {
      "Convolution", "Linear",     "Matmul",          "BatchNorm", "Relu",
      "MaxPooling",  "AvgPooling", "AdaptivePooling", "Add"};
  return names;
}

namespace {

using nlohmann::json;

constexpr const char* kKnownFields[] = {
    "id",           "name",          "algorithm",         "weight_granularity",
    "inputs_scale", "outputs_scale", "inputs_uint8_used", "outputs_uint8_used",
    "quantized",    "key",           "inputs_min",        "inputs_max",
    "outputs_min",  "outputs_max",   "sqnr_db",           "calls"};

std::string quoted(const std::string& text) {
  constexpr size_t kMaxShown = 60;
  std::string shown = json(text).dump(-1, ' ', false, json::error_handler_t::replace);
  if (shown.size() > kMaxShown) shown = shown.substr(0, kMaxShown) + "...";
  return shown;
}

// A value as the user would recognise it in the file; long strings and containers are
// abbreviated so that one line stays one line.
std::string describe(const json& value) {
  switch (value.type()) {
    case json::value_t::string: return quoted(value.get_ref<const std::string&>());
    case json::value_t::number_float: {
      const double number = value.get<double>();
      if (std::isnan(number)) return "nan";
      if (std::isinf(number)) return number > 0 ? "inf" : "-inf";
      return value.dump();
    }
    case json::value_t::number_integer:
    case json::value_t::number_unsigned:
    case json::value_t::boolean:
    case json::value_t::null: return value.dump();
    case json::value_t::array: return "a list";
    case json::value_t::object: return "an object";
    default: return value.type_name();
  }
}

// Whole numbers >= 0 that fit int64_t; JSON writes 3 and 3.0 differently and only 3 is whole.
// The parser stores such numbers as unsigned, a json built in memory as signed.
bool read_count(const json& value, int64_t* out) {
  if (value.is_number_unsigned()) {
    const auto number = value.get<uint64_t>();
    if (number > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) return false;
    *out = static_cast<int64_t>(number);
    return true;
  }
  if (!value.is_number_integer() || value.get<int64_t>() < 0) return false;
  *out = value.get<int64_t>();
  return true;
}

// Validates one entry of the list and reports its problems, each prefixed with the entry's
// index, id and name as written in the file.
class EntryReader {
 public:
  EntryReader(size_t index, const json& value, std::vector<std::string>* problems)
      : value_(value), problems_(problems) {
    header_ = "entry " + std::to_string(index);
    if (!value.is_object()) return;
    auto id = value.find("id");
    auto name = value.find("name");
    header_ += " (";
    header_ += id == value.end() ? "no id" : "id " + describe(*id);
    header_ += ", ";
    if (name == value.end()) header_ += "no name";
    else if (name->is_string()) header_ += describe(*name);
    else header_ += "name " + describe(*name);
    header_ += ")";
  }

  // Reads every field; the result is in entry().
  void read() {
    if (!value_.is_object()) {
      problems_->push_back(header_ + ": expected an object, got " + describe(value_) +
                           "; this entry is ignored");
      entry_.valid = false;
      return;
    }
    read_id();
    read_name();
    read_algorithm();
    read_granularity();
    const bool inputs_ok = read_scales("inputs_scale", &entry_.inputs_scale);
    const bool outputs_ok = read_scales("outputs_scale", &entry_.outputs_scale);
    read_flags("inputs_uint8_used", "inputs_scale", inputs_ok, entry_.inputs_scale.size(),
               &entry_.inputs_uint8_used);
    read_flags("outputs_uint8_used", "outputs_scale", outputs_ok, entry_.outputs_scale.size(),
               &entry_.outputs_uint8_used);
    read_quantized();
    read_key();
    read_ranges("inputs_min", "inputs_max", "inputs_scale", inputs_ok,
                entry_.inputs_scale.size(), &entry_.inputs_min, &entry_.inputs_max);
    read_ranges("outputs_min", "outputs_max", "outputs_scale", outputs_ok,
                entry_.outputs_scale.size(), &entry_.outputs_min, &entry_.outputs_max);
    read_sqnr();
    read_calls();
    for (const auto& item : value_.items()) {
      const std::string& field = item.key();
      if (std::find(std::begin(kKnownFields), std::end(kKnownFields), field) ==
          std::end(kKnownFields)) {
        problems_->push_back(header_ + ": field " + quoted(field) + " is not known; ignored");
      }
    }
  }

  Int8Entry& entry() { return entry_; }
  bool id_read() const { return id_read_; }

  // Marks the entry invalid, with the problem in `field` (already quoted, maybe indexed).
  void invalid(const std::string& field, const std::string& message) {
    problems_->push_back(header_ + ": field " + field + ": " + message +
                         "; this op runs in fp32");
    entry_.valid = false;
  }

 private:
  const json* find(const char* field) {
    auto it = value_.find(field);
    return it == value_.end() ? nullptr : &*it;
  }
  static std::string name_of(const char* field) { return quoted(field); }
  static std::string element(const char* field, size_t index) {
    return quoted(field) + "[" + std::to_string(index) + "]";
  }

  void read_id() {
    const json* id = find("id");
    if (!id) return invalid(name_of("id"), "missing");
    if (!read_count(*id, &entry_.id)) {
      return invalid(name_of("id"), describe(*id) + " is not a valid id (must be a whole number "
                                                    ">= 0)");
    }
    id_read_ = true;
  }

  void read_name() {
    const json* name = find("name");
    if (!name) return invalid(name_of("name"), "missing");
    if (!name->is_string()) {
      return invalid(name_of("name"), "expected an op name (a string), got " + describe(*name));
    }
    const std::string& text = name->get_ref<const std::string&>();
    const auto& known = int8_op_names();
    if (std::find(known.begin(), known.end(), text) == known.end()) {
      std::string list;
      for (const auto& op : known) list += (list.empty() ? "" : ", ") + op;
      return invalid(name_of("name"),
                     quoted(text) + " is not an op the INT8 config knows (known: " + list + ")");
    }
    entry_.name = text;
  }

  void read_algorithm() {
    const json* algorithm = find("algorithm");
    if (!algorithm) return;
    if (!algorithm->is_string() ||
        !parse_algorithm(algorithm->get_ref<const std::string&>(), &entry_.algorithm)) {
      invalid(name_of("algorithm"),
              describe(*algorithm) + " is not a calibration algorithm (known: min_max, "
                                     "percentile, mse)");
    }
  }

  void read_granularity() {
    const json* granularity = find("weight_granularity");
    if (!granularity) return;
    if (!granularity->is_string() ||
        !parse_granularity(granularity->get_ref<const std::string&>(),
                           &entry_.weight_granularity)) {
      invalid(name_of("weight_granularity"),
              describe(*granularity) + " is not a granularity (known: per_channel, per_tensor)");
    }
  }

  // Returns true when the list is present and every scale in it is usable.
  bool read_scales(const char* field, std::vector<double>* scales) {
    const json* list = find(field);
    if (!list) {
      invalid(name_of(field), "missing");
      return false;
    }
    if (!list->is_array()) {
      invalid(name_of(field), "expected a list of scales, got " + describe(*list));
      return false;
    }
    if (list->empty()) {
      invalid(name_of(field), "the list is empty (expected one scale per tensor)");
      return false;
    }
    bool ok = true;
    for (size_t i = 0; i < list->size(); ++i) {
      const json& scale = (*list)[i];
      if (!scale.is_number()) {
        invalid(element(field, i), "expected a scale (a number), got " + describe(scale));
        ok = false;
        continue;
      }
      const double number = scale.get<double>();
      if (!std::isfinite(number) || !(number > 0)) {
        invalid(element(field, i),
                describe(scale) + " is not a valid scale (must be finite and > 0)");
        ok = false;
        continue;
      }
      scales->push_back(number);
    }
    return ok;
  }

  void read_flags(const char* field, const char* scales_field, bool scales_ok, size_t count,
                  std::vector<bool>* flags) {
    const json* list = find(field);
    if (!list) {
      flags->assign(count, false);
      return;
    }
    if (!list->is_array()) {
      return invalid(name_of(field), "expected a list of true/false, got " + describe(*list));
    }
    for (size_t i = 0; i < list->size(); ++i) {
      const json& flag = (*list)[i];
      if (!flag.is_boolean()) {
        invalid(element(field, i), "expected true or false, got " + describe(flag));
        flags->push_back(false);
        continue;
      }
      flags->push_back(flag.get<bool>());
    }
    if (scales_ok && list->size() != count) {
      invalid(name_of(field), "has " + std::to_string(list->size()) + " flags but " +
                                  name_of(scales_field) + " has " + std::to_string(count) +
                                  " scales");
    }
  }

  // Returns true when the list is absent or every value in it is a finite number.
  bool read_numbers(const char* field, std::vector<double>* numbers) {
    const json* list = find(field);
    if (!list) return true;
    if (!list->is_array()) {
      invalid(name_of(field), "expected a list of numbers, got " + describe(*list));
      return false;
    }
    bool ok = true;
    for (size_t i = 0; i < list->size(); ++i) {
      const json& number = (*list)[i];
      if (!number.is_number() || !std::isfinite(number.get<double>())) {
        invalid(element(field, i), "expected a finite number, got " + describe(number));
        ok = false;
        continue;
      }
      numbers->push_back(number.get<double>());
    }
    return ok;
  }

  void read_ranges(const char* min_field, const char* max_field, const char* scales_field,
                   bool scales_ok, size_t count, std::vector<double>* minimums,
                   std::vector<double>* maximums) {
    const bool has_min = find(min_field) != nullptr, has_max = find(max_field) != nullptr;
    const bool min_ok = read_numbers(min_field, minimums);
    const bool max_ok = read_numbers(max_field, maximums);
    if (has_min != has_max) {
      const char* present = has_min ? min_field : max_field;
      const char* absent = has_min ? max_field : min_field;
      return invalid(name_of(present), "present without " + name_of(absent));
    }
    if (!has_min || !min_ok || !max_ok) return;
    const std::pair<const char*, size_t> sizes[] = {{min_field, minimums->size()},
                                                    {max_field, maximums->size()}};
    for (const auto& [field, size] : sizes) {
      if (scales_ok && size != count) {
        invalid(name_of(field), "has " + std::to_string(size) + " values but " +
                                    name_of(scales_field) + " has " + std::to_string(count) +
                                    " scales");
      }
    }
    for (size_t i = 0; i < std::min(minimums->size(), maximums->size()); ++i) {
      if ((*minimums)[i] > (*maximums)[i]) {
        invalid(element(min_field, i),
                describe(json((*minimums)[i])) + " is larger than " + element(max_field, i) +
                    " " + describe(json((*maximums)[i])));
      }
    }
  }

  void read_quantized() {
    const json* quantized = find("quantized");
    if (!quantized) return invalid(name_of("quantized"), "missing");
    if (!quantized->is_boolean()) {
      return invalid(name_of("quantized"), "expected true or false, got " + describe(*quantized));
    }
    entry_.quantized = quantized->get<bool>();
  }

  void read_key() {
    const json* key = find("key");
    if (!key) return;
    if (!key->is_string() || key->get_ref<const std::string&>().empty()) {
      return invalid(name_of("key"), "expected a non-empty string, got " + describe(*key));
    }
    entry_.key = key->get<std::string>();
  }

  void read_sqnr() {
    const json* sqnr = find("sqnr_db");
    if (!sqnr) return;
    if (!sqnr->is_number() || !std::isfinite(sqnr->get<double>())) {
      return invalid(name_of("sqnr_db"), "expected a finite number of dB, got " + describe(*sqnr));
    }
    entry_.sqnr_db = sqnr->get<double>();
  }

  void read_calls() {
    const json* calls = find("calls");
    if (!calls) return;
    int64_t count = 0;
    if (!read_count(*calls, &count)) {
      return invalid(name_of("calls"),
                     describe(*calls) + " is not a valid count (must be a whole number >= 0)");
    }
    entry_.calls = count;
  }

  const json& value_;
  std::vector<std::string>* problems_;
  std::string header_;
  Int8Entry entry_;
  bool id_read_ = false;
};

}  // namespace

bool parse_int8_config(const nlohmann::json& value, Int8Config* config,
                       std::vector<std::string>* problems) {
  std::vector<std::string> ignored;
  if (!problems) problems = &ignored;
  config->entries.clear();
  if (value.is_object()) {
    problems->push_back(
        "top level: this is an object (an fp32/bf16 config?); int8 mode expects a list of "
        "calibrated ops such as [{\"id\": 0, \"name\": \"Convolution\", ...}]");
    return false;
  }
  if (!value.is_array()) {
    problems->push_back("top level: expected a JSON list of ops, got " + describe(value));
    return false;
  }
  std::map<int64_t, size_t> first_with_id;
  std::map<std::string, size_t> first_with_key;
  for (size_t index = 0; index < value.size(); ++index) {
    EntryReader reader(index, value[index], problems);
    reader.read();
    const Int8Entry& entry = reader.entry();
    if (reader.id_read()) {
      auto [it, inserted] = first_with_id.emplace(entry.id, index);
      if (!inserted) {
        reader.invalid("\"id\"", std::to_string(entry.id) + " is also the id of entry " +
                                     std::to_string(it->second));
      }
    }
    if (!entry.key.empty()) {
      auto [it, inserted] = first_with_key.emplace(entry.key, index);
      if (!inserted) {
        reader.invalid("\"key\"", quoted(entry.key) + " is also the key of entry " +
                                      std::to_string(it->second));
      }
    }
    config->entries.push_back(std::move(reader.entry()));
  }
  return true;
}

namespace {

nlohmann::ordered_json flags_json(const std::vector<bool>& flags, size_t count) {
  nlohmann::ordered_json list = nlohmann::ordered_json::array();
  for (size_t i = 0; i < count; ++i) list.push_back(i < flags.size() && flags[i]);
  return list;
}

}  // namespace

nlohmann::ordered_json int8_config_to_json(const Int8Config& config) {
  nlohmann::ordered_json list = nlohmann::ordered_json::array();
  for (const Int8Entry& entry : config.entries) {
    if (!entry.valid) continue;
    nlohmann::ordered_json out = nlohmann::ordered_json::object();
    out["id"] = entry.id;
    out["name"] = entry.name;
    out["algorithm"] = algorithm_name(entry.algorithm);
    out["weight_granularity"] = granularity_name(entry.weight_granularity);
    out["inputs_scale"] = entry.inputs_scale;
    out["outputs_scale"] = entry.outputs_scale;
    out["inputs_uint8_used"] = flags_json(entry.inputs_uint8_used, entry.inputs_scale.size());
    out["outputs_uint8_used"] = flags_json(entry.outputs_uint8_used, entry.outputs_scale.size());
    out["quantized"] = entry.quantized;
    if (!entry.key.empty()) out["key"] = entry.key;
    if (!entry.inputs_min.empty()) out["inputs_min"] = entry.inputs_min;
    if (!entry.inputs_max.empty()) out["inputs_max"] = entry.inputs_max;
    if (!entry.outputs_min.empty()) out["outputs_min"] = entry.outputs_min;
    if (!entry.outputs_max.empty()) out["outputs_max"] = entry.outputs_max;
    if (entry.sqnr_db) out["sqnr_db"] = *entry.sqnr_db;
    if (entry.calls) out["calls"] = *entry.calls;
    list.push_back(std::move(out));
  }
  return list;
}

std::string int8_config_text(const Int8Config& config) {
  // nlohmann writes doubles in the shortest form that reads back to the same value; a key
  // that is not valid UTF-8 is written with U+FFFD rather than throwing.
  return int8_config_to_json(config).dump(4, ' ', false,
                                          nlohmann::ordered_json::error_handler_t::replace) +
         "\n";
}

// --- writing the file ------------------------------------------------------------------------

namespace {

std::string directory_of(const std::string& path) {
  const size_t slash = path.rfind('/');
  if (slash == std::string::npos) return ".";
  if (slash == 0) return "/";
  return path.substr(0, slash);
}

std::string error_text(int error) { return std::strerror(error); }

uint64_t mix(uint64_t x) {  // splitmix64's finaliser
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

// Creates <path>.tmp.<pid>.<random> exclusively; returns its descriptor, or -1 with *why set.
int create_temporary(const std::string& path, std::string* temporary, std::string* why) {
  static uint64_t counter = 0;
  const uint64_t seed =
      static_cast<uint64_t>(std::chrono::steady_clock::now().time_since_epoch().count()) ^
      reinterpret_cast<uintptr_t>(&counter);
  for (int attempt = 0; attempt < 100; ++attempt) {
    char suffix[17];
    std::snprintf(suffix, sizeof(suffix), "%016llx",
                  static_cast<unsigned long long>(mix(seed + (++counter))));
    *temporary = path + ".tmp." + std::to_string(getpid()) + "." + suffix;
    // O_EXCL: a name that exists, a planted symbolic link included, is never opened.
    const int fd =
        open(temporary->c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644);
    if (fd >= 0) return fd;
    const int error = errno;
    if (error == EEXIST || error == EINTR) continue;
    *why = "cannot create temporary file in " + directory_of(path) + ": " + error_text(error);
    return -1;
  }
  *why = "cannot create temporary file in " + directory_of(path) +
         ": every name tried already exists";
  return -1;
}

bool write_all(int fd, const std::string& text, int* error) {
  size_t done = 0;
  while (done < text.size()) {
    const ssize_t written = write(fd, text.data() + done, text.size() - done);
    if (written < 0) {
      if (errno == EINTR) continue;
      *error = errno;
      return false;
    }
    done += static_cast<size_t>(written);
  }
  return true;
}

bool sync_descriptor(int fd, int* error) {
  while (fsync(fd) != 0) {
    if (errno == EINTR) continue;
    *error = errno;
    return false;
  }
  return true;
}

}  // namespace

bool write_file_atomically(const std::string& path, const std::string& text, std::string* why) {
  return write_file_atomically(path, text, why, {});
}

bool write_file_atomically(const std::string& path, const std::string& text, std::string* why,
                           const std::function<void()>& before_replacing) {
  std::string ignored;
  if (!why) why = &ignored;
  if (path.empty()) {
    *why = "cannot write a file with an empty name";
    return false;
  }
  std::string temporary;
  const int fd = create_temporary(path, &temporary, why);
  if (fd < 0) return false;

  int error = 0;
  if (!write_all(fd, text, &error)) {
    *why = "cannot write " + temporary + ": " + error_text(error);
  } else if (!sync_descriptor(fd, &error)) {
    *why = "cannot flush " + temporary + " to disk: " + error_text(error);
  }
  if (close(fd) != 0 && error == 0) {
    error = errno;
    *why = "cannot close " + temporary + ": " + error_text(error);
  }
  if (error == 0 && before_replacing) before_replacing();
  if (error == 0 && rename(temporary.c_str(), path.c_str()) != 0) {
    error = errno;
    *why = "cannot replace " + path + " with " + temporary + ": " + error_text(error);
  }
  if (error != 0) {
    unlink(temporary.c_str());
    return false;
  }

  // The rename is durable only once the directory entry is on disk. Some file systems cannot
  // sync a directory (EINVAL); there is nothing more to do on them.
  const std::string directory = directory_of(path);
  const int directory_fd = open(directory.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (directory_fd < 0) {
    *why = "wrote " + path + " but cannot open " + directory + " to flush it to disk: " +
           error_text(errno);
    return false;
  }
  const bool synced = sync_descriptor(directory_fd, &error) || error == EINVAL;
  close(directory_fd);
  if (!synced) {
    *why = "wrote " + path + " but cannot flush " + directory + " to disk: " + error_text(error);
    return false;
  }
  return true;
}

bool check_writable(const std::string& path, std::string* why) {
  std::string ignored;
  if (!why) why = &ignored;
  if (path.empty()) {
    *why = "cannot write a file with an empty name";
    return false;
  }
  const std::string directory = directory_of(path);
  struct stat status {};
  if (stat(directory.c_str(), &status) != 0) {
    *why = "cannot write " + path + ": directory " + directory + ": " + error_text(errno);
    return false;
  }
  if (!S_ISDIR(status.st_mode)) {
    *why = "cannot write " + path + ": " + directory + " is not a directory";
    return false;
  }
  if (stat(path.c_str(), &status) == 0) {
    if (S_ISDIR(status.st_mode)) {
      *why = "cannot write " + path + ": it is a directory";
      return false;
    }
    if (!S_ISREG(status.st_mode)) {
      *why = "cannot write " + path + ": it is not a regular file";
      return false;
    }
  } else if (errno != ENOENT) {
    *why = "cannot write " + path + ": " + error_text(errno);
    return false;
  }
  std::string temporary, reason;
  const int fd = create_temporary(path, &temporary, &reason);
  if (fd < 0) {
    *why = "cannot write " + path + ": " + reason;
    return false;
  }
  close(fd);
  unlink(temporary.c_str());
  return true;
}

}  // namespace ipex_shim
