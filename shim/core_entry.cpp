// The core's one exported symbol, called by the bootstrap once libtorch is resident.
#include "shim/core_interface.h"
#include "shim/core_start.h"

extern "C" __attribute__((visibility("default"))) int ipex_shim_core_start(
    const IpexShimCoreSettings* settings, IpexShimCoreHooks* hooks) {
  if (settings == nullptr || hooks == nullptr) return 1;
  try {
    return ipex_shim::start_core(ipex_shim::from_core_settings(*settings), hooks);
  } catch (...) {
    return 1;
  }
}
