#include "shim/mode_policy.h"

#include <c10/util/Exception.h>

#include "shim/log.h"

namespace ipex_shim {

void report_kernel_error(const std::string& op, const std::exception& error) {
  // PyTorch's errors carry a backtrace in what(): the message alone is the news.
  const auto* torch_error = dynamic_cast<const c10::Error*>(&error);
  const std::string what = torch_error ? torch_error->what_without_backtrace() : error.what();
  log_limited("kernel-error:" + op, 3, Severity::warning,
              op + ": the shim's kernel failed (" + what + "); this call ran on stock PyTorch");
}

}  // namespace ipex_shim
