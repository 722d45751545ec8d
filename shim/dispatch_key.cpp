#include "shim/dispatch_key.h"

#include <ATen/core/dispatch/Dispatcher.h>
#include <c10/core/impl/LocalDispatchKeySet.h>

namespace ipex_shim {

void enable_in_this_thread() {
  c10::impl::tls_set_dispatch_key_included(kShimKey, true);
  c10::impl::tls_set_dispatch_key_excluded(kShimKey, false);
}

bool active_in_this_thread() {
  return c10::impl::tls_is_dispatch_key_included(kShimKey) &&
         !c10::impl::tls_is_dispatch_key_excluded(kShimKey);
}

std::string key_conflict() {
  auto& dispatcher = c10::Dispatcher::singleton();
  if (dispatcher.hasBackendFallbackForDispatchKey(kShimKey)) {
    return std::string("this torch already has a fallback kernel at ") + c10::toString(kShimKey);
  }
  // Ops the shim overrides first: a stock kernel on any of them means the key is taken.
  for (const char* name : {"aten::conv2d", "aten::linear", "aten::matmul", "aten::addmm"}) {
    auto op = dispatcher.findOp(c10::OperatorName(name, ""));
    if (op && op->hasKernelForDispatchKey(kShimKey)) {
      return std::string("this torch registers its own kernel for ") + name + " at " +
             c10::toString(kShimKey);
    }
  }
  return {};
}

}  // namespace ipex_shim
