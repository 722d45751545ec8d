// The two INT8 modes as the wrappers ask about them.
#pragma once

#include "shim/int8_calibration.h"
#include "shim/int8_identity.h"
#include "shim/int8_inference.h"
#include "shim/mode_control.h"
#include "shim/runtime.h"

namespace ipex_shim::int8 {

// IPEX_MODE=calibration with a config to write: stock results, ops observed.
inline bool calibrating() {
  return current_mode() == Mode::calibration && calibration::active();
}

// Op identities are followed in both INT8 modes, so that inference finds what calibration
// named (shim/int8_identity.h).
inline bool tracking() {
  const Mode mode = current_mode();
  return mode == Mode::int8 || (mode == Mode::calibration && calibration::active());
}

inline bool quantising() { return current_mode() == Mode::int8; }

}  // namespace ipex_shim::int8
