// The core's exported symbols: the bootstrap's entry, once libtorch is resident, and the
// Python packages' (shim/python/), which load the core into a process without the preload.
#include <cstdlib>
#include <string>
#include <vector>

#include "shim/core_interface.h"
#include "shim/core_start.h"
#include "shim/log.h"

extern "C" __attribute__((visibility("default"))) int ipex_shim_core_start(
    const IpexShimCoreSettings* settings, IpexShimCoreHooks* hooks) {
  if (settings == nullptr || hooks == nullptr) return 1;
  try {
    return ipex_shim::start_core(ipex_shim::from_core_settings(*settings), hooks);
  } catch (...) {
    return 1;
  }
}

namespace {
const char* read_environment(const char* name) { return std::getenv(name); }
}  // namespace

// Called by `import intel_pytorch_extension` (or intel_extension_for_pytorch) once torch is
// imported: reads the environment table as the bootstrap would (IPEX_MODE may be unset: the
// mode is then off until the program sets one) and starts the core. New threads are switched
// on by the package (there is no pthread_create hook without the preload). Returns 0 when the
// core runs, also when it was already running.
extern "C" __attribute__((visibility("default"))) int ipex_shim_core_attach() {
  try {
    if (ipex_shim::core_running()) return 0;
    std::vector<std::string> problems;
    ipex_shim::Settings settings = ipex_shim::parse_settings(
        &read_environment, ipex_shim::cpus_in_affinity_mask(), &problems);
    for (const std::string& problem : problems)
      ipex_shim::log_line(ipex_shim::Severity::warning, problem);
    static IpexShimCoreHooks hooks{nullptr};
    return ipex_shim::start_core(settings, &hooks);
  } catch (...) {
    return 1;
  }
}
