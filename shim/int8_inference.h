// IPEX_MODE=int8: the config from IPEX_CONFIG applied to the ops the program runs.
//
// Matching. A file the shim wrote has a key per entry (shim/int8_identity.h): an op uses the
// entry with its key, or none. A file without keys (the seed's) is matched by order: the
// n-th quantisable op the program runs takes the entry with id n, if that entry names the
// same kind of op. Either way an op without a usable entry runs in fp32 and is reported
// once, saying why (no entry: another model or an op calibration never saw; an entry of
// another kind; an entry that failed validation). Scales are never applied to another op.
#pragma once

#include <string>

#include "kernels/int8.h"
#include "shim/int8_identity.h"
#include "shim/op_stats.h"
#include "shim/settings.h"

namespace ipex_shim::int8 {

// At start. Returns the config state for status(): "applied", "applied in part (...)",
// "not used: why". Problems are reported through `report`.
std::string load_config(const Settings& settings,
                        void (*report)(const Settings&, const std::string&));

// At run time (torch.ops.ipex_shim.set_mode/enter_mode): reads the config at `path` and
// applies it, for every thread, in place of the one in use. On failure *error says why and
// the config in use stays. Returns the config state, as load_config does.
std::string apply_config_file(const std::string& path, std::string* error);

// The config in use; empty before one is applied.
std::string loaded_path();
// The file at `path` changed: if it is the config in use, it stays in use until int8 mode
// is next asked for it, which reads it again.
void forget_path(const std::string& path);
// Whether `path` is the config in use, as read.
bool in_use(const std::string& path);

// The quantisation of op `index` when its entry is usable and quantized; otherwise false,
// with *why = config_mismatch (no usable entry) or not_quantized (quantized: false).
bool spec_for(int64_t index, Int8Spec* spec, Fallback* why);

// The calibrated quantisation of op `index`'s result (its entry's outputs_scale), when the
// entry is usable and quantized.
bool output_quantisation(int64_t index, float* scale, bool* uint8);

// The same for a product of two activations (an entry with two input scales).
bool matmul_spec_for(int64_t index, Int8MatmulSpec* spec, Fallback* why);

struct Int8Summary {
  int64_t entries = 0;       // in the file
  int64_t matched = 0;       // ops that found their entry
  int64_t mismatched = 0;    // ops that ran in fp32 for want of a usable entry
  int64_t not_quantized = 0; // ops whose entry says quantized: false
};
Int8Summary int8_summary();

}  // namespace ipex_shim::int8
