#include "shim/mode_policy.h"

#include "shim/log.h"

namespace ipex_shim {

void report_kernel_error(const std::string& op, const std::exception& error) {
  log_limited("kernel-error:" + op, 3, Severity::warning,
              op + ": the shim's kernel failed (" + error.what() +
                  "); this call ran on stock PyTorch");
}

}  // namespace ipex_shim
