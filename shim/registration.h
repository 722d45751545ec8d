#pragma once

#include <string>
#include <vector>

#include "shim/settings.h"

namespace ipex_shim {

// How an op's precision is chosen in the reduced-precision modes (compare PyTorch's
// autocast CastPolicy). README "Precision policy" explains where it differs from autocast.
enum class Policy {
  lower_precision,  // heavy matrix work: computes in BF16 (bf16 mode) or INT8 (int8 mode)
  fp32,             // precision-sensitive (normalisations, softmax): always computes in fp32
  promote,          // elementwise with several inputs: runs in the widest input type
  observe,          // cheap ops seen for graph learning and calibration (relu, pooling)
};

const char* policy_name(Policy policy);

struct TableEntry {
  std::string op;  // "conv2d", "add.Tensor"
  Policy policy;
};

// Registers the fallthrough for the shim's key and the override table. Mode off registers
// nothing; this is never called then.
void register_overrides();

// Registers the ops that run at the fusion observer's key (shim/fusion.h): reached only in a
// thread that holds results handed over in oneDNN's layout, so that a program's other calls
// of them cost nothing. Called once fusion::install has taken that key.
void register_observed_overrides();

// Registers the ipex_shim:: introspection ops (status, reset_stats).
void register_introspection();

// Where start_core refused: registers ipex_shim::status alone (refused_status_json), so that a
// program asking whether the shim runs is told why not instead of finding no op. Nothing
// when the introspection ops are already there (their status says it). Never throws.
void register_refused_status() noexcept;

// The override table as registered, in order.
const std::vector<TableEntry>& override_table();

}  // namespace ipex_shim
