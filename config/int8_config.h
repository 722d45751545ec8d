// IPEX_CONFIG in int8 mode, and what calibration writes: a JSON list with one entry per
// quantisable op instance, in the format of Intel Extension for PyTorch's early INT8 config
// (the seed), so that files written by either can be read by the other:
//   [{"id": 0, "name": "Convolution", "algorithm": "min_max", "weight_granularity": "per_channel",
//     "inputs_scale": [25.05583953857422], "outputs_scale": [43.98969650268555],
//     "inputs_uint8_used": [false], "outputs_uint8_used": [false], "quantized": true}, ...]
// A scale is a multiplier: q = round(x * scale). The shim adds optional fields of its own
// (key, observed min/max, sqnr_db, calls) after the seed's, which the seed ignores.
//
// Validation is per entry: a bad entry is kept, marked invalid, and reported with its index,
// id, name and field, so that the caller can say which op runs in fp32 and why, while the
// other entries stay in effect. Only a file that is not a list is unusable as a whole.
//
// Writing replaces the file atomically (temporary file, fsync, rename, fsync of the
// directory): a calibration run that dies while writing never leaves half a config behind.
// Nothing here throws; problems come back as text.
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

namespace ipex_shim {

enum class Granularity {
  per_channel,  // one weight scale per output channel
  per_tensor,   // one weight scale for the whole weight tensor
};

enum class CalibrationAlgorithm {
  min_max,     // the scale maps the observed absolute maximum to the integer range
  percentile,  // the observed range is clipped at a percentile before computing the scale
  mse,         // clipped where the squared error of quantising the values is smallest
};

const char* granularity_name(Granularity granularity);        // "per_channel" / "per_tensor"
const char* algorithm_name(CalibrationAlgorithm algorithm);   // "min_max", "percentile", "mse"
bool parse_granularity(const std::string& text, Granularity* granularity);
bool parse_algorithm(const std::string& text, CalibrationAlgorithm* algorithm);

// The mse algorithm's clipping: of thresholds t in [largest / 128, largest], the one that
// minimises the summed squared error of quantising `magnitudes` (each >= 0, largest the
// largest of them) to multiples of t / levels, values above t becoming t. Searched on a grid
// a quarter octave apart, then between the best point's neighbours in 1/64 octaves, then in
// 1/512. Returns 0 when there is nothing to clip (no values, or all zero); NaNs are the
// caller's to keep out.
double mse_clip_threshold(const float* magnitudes, int64_t count, int levels);

// Op names the config knows (the seed's plus ours): Convolution, Linear, Matmul, BatchNorm,
// Relu, MaxPooling, AvgPooling, AdaptivePooling, Add.
const std::vector<std::string>& int8_op_names();

struct Int8Entry {
  int64_t id = 0;
  std::string name;
  CalibrationAlgorithm algorithm = CalibrationAlgorithm::min_max;
  Granularity weight_granularity = Granularity::per_channel;
  std::vector<double> inputs_scale, outputs_scale;
  std::vector<bool> inputs_uint8_used, outputs_uint8_used;
  bool quantized = true;
  // The shim's own fields (optional when reading: the seed's files have none):
  std::string key;  // "key": identity of the op instance; "" when absent
  // Observed ranges (after the algorithm's clipping); same lengths as the scales when present.
  std::vector<double> inputs_min, inputs_max, outputs_min, outputs_max;
  std::optional<double> sqnr_db;  // "sqnr_db": estimated signal-to-quantisation-noise of the
                                  // op's INT8 output, dB
  std::optional<int64_t> calls;   // "calls": how many calls calibration observed
  bool valid = true;  // false when validation found a problem in this entry (not written)
};

struct Int8Config {
  std::vector<Int8Entry> entries;
};

// Reads `value` (the parsed file) into *config, replacing its entries. Returns false only when
// the file as a whole is unusable (not a list); an empty list is a valid, empty config.
// Every entry of the list becomes one element of config->entries, in order (a non-object
// entry too, as an invalid one), so entry i of the file is config->entries[i].
// Each problem is one line naming the entry and the field, e.g.
//   entry 3 (id 3, "Convolution"): field "inputs_scale"[0]: 0 is not a valid scale (must be
//   finite and > 0); this op runs in fp32
// An entry with such a problem has valid = false. Unknown fields are reported
// ("...; ignored") but leave the entry valid. Required fields: id, name, inputs_scale,
// outputs_scale, quantized; algorithm and weight_granularity default to min_max and
// per_channel, the uint8 lists to all false. Of two entries with the same id or the same
// key, the later one is invalid. `problems` may be null.
bool parse_int8_config(const nlohmann::json& value, Int8Config* config,
                       std::vector<std::string>* problems);

// The JSON the shim writes: a list of the valid entries (invalid ones are skipped), each with
// the seed's fields in the seed's order (id, name, algorithm, weight_granularity,
// inputs_scale, outputs_scale, inputs_uint8_used, outputs_uint8_used, quantized) followed by
// the shim's fields that are set (key, inputs_min, inputs_max, outputs_min, outputs_max,
// sqnr_db, calls). The uint8 lists are written with the length of their scales list (missing
// flags as false), since the seed requires that. Doubles are written in the shortest form that
// reads back to the same value.
nlohmann::ordered_json int8_config_to_json(const Int8Config& config);
std::string int8_config_text(const Int8Config& config);  // dump(4) + "\n"

// Writes `text` to `path` so that at every instant `path` holds either its previous bytes or
// the complete new text: a temporary file <path>.tmp.<pid>.<random> in the same directory
// (mode 0644 less the umask) is written and fsynced, renamed over `path`, and the directory is
// fsynced. On failure the temporary file is removed, `path` is untouched, and false comes back
// with *why saying what failed ("cannot create temporary file in /x: Permission denied").
// The one exception: when only the final fsync of the directory fails, `path` already holds
// the new text but may not survive a power loss; that is reported as a failure too.
// A symbolic link at `path` is replaced by the file, not followed.
bool write_file_atomically(const std::string& path, const std::string& text, std::string* why);

// The same, calling `before_replacing()` once the new text is complete on disk, just before the
// rename (only when the rename follows): the torchrun merge removes the ranks' parts there, so
// that no kill can leave both the merged config and the parts it was merged from.
bool write_file_atomically(const std::string& path, const std::string& text, std::string* why,
                           const std::function<void()>& before_replacing);

// Checks now, before a long calibration, that `path` can be written at the end: its directory
// exists and a temporary file can be created in it (and is removed again), and `path` itself,
// if it exists, is a regular file. Otherwise false, with *why naming the path.
bool check_writable(const std::string& path, std::string* why);

}  // namespace ipex_shim
