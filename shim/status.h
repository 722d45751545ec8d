// Introspection: torch.ops.ipex_shim.status() and the exit summary (IPEX_VERBOSE >= 1).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace ipex_shim {

// JSON: version, running, refused, mode, active (in the calling thread), num_threads, isa,
// config, ops, ...
std::string status_json();

// Why the shim stays off in this process (start_core refused: no free dispatch key, a oneDNN
// that fails the start-up check, an error while starting), or empty while it runs. Set once,
// by start_core.
void set_refusal(const std::string& why);
std::string refusal();

// The status of a process where the shim stays off: why, what it saw of torch, oneDNN and
// the CPU, and that every mode runs stock PyTorch. The only op registered then.
std::string refused_status_json();

// Zeroes every op's counters (benchmarks use it after warm-up).
void reset_stats();
// Drops every packed weight (each is packed again from the tensor at its next use) and returns
// how many there were: memory back at once, and a fresh computation to compare against.
int64_t clear_weight_cache();

// The one-line banner printed at load, without the prefix.
std::string banner_text();

// The per-op table printed at exit: one string per line, without the prefix.
std::vector<std::string> summary_lines();

}  // namespace ipex_shim
