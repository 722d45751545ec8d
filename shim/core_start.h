#pragma once

#include "shim/core_interface.h"

namespace ipex_shim {

// Starts the core in a process where libtorch is resident: settings, threads, the override
// table, the calling thread's key, banner and exit summary. Returns 0 on success; on failure
// it has said why and left PyTorch untouched. Never throws.
int start_core(const Settings& settings, IpexShimCoreHooks* hooks);

}  // namespace ipex_shim
