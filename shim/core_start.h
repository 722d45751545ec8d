#pragma once

#include "shim/core_interface.h"

namespace ipex_shim {

// Starts the core in a process where libtorch is resident: settings, threads, the override
// table, the calling thread's key, banner and exit summary. Returns 0 on success; on failure
// it has said why and left PyTorch untouched. Never throws.
// A second call (the Python packages attach to a core the preload started) returns the
// first call's result and changes nothing.
int start_core(const Settings& settings, IpexShimCoreHooks* hooks);

// Whether start_core() succeeded in this process.
bool core_running();

// Sets torch's thread count to every CPU in the affinity mask, once, unless OMP_NUM_THREADS
// chose: before the first call of a mode that runs the shim's kernels.
void use_all_threads();

}  // namespace ipex_shim
