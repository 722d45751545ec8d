#include "shim/dispatch_key.h"

#include <ATen/core/dispatch/Dispatcher.h>
#include <c10/core/impl/LocalDispatchKeySet.h>

#include "shim/torch_compat.h"

namespace ipex_shim {

namespace detail {
c10::DispatchKey g_shim_key = compat::kModeKeyCandidates[0];
c10::DispatchKey g_observer_key = compat::kObserverKey;
}  // namespace detail

namespace {

// Empty when `key` is free in this torch, else what holds it.
std::string taken(c10::DispatchKey key) {
  auto& dispatcher = c10::Dispatcher::singleton();
  if (dispatcher.hasBackendFallbackForDispatchKey(key))
    return std::string("a fallback kernel at ") + c10::toString(key);
  // Ops the shim overrides first: a stock kernel on any of them means the key is taken.
  for (const char* name : {"aten::conv2d", "aten::linear", "aten::matmul", "aten::addmm"}) {
    auto op = dispatcher.findOp(c10::OperatorName(name, ""));
    if (op && op->hasKernelForDispatchKey(key))
      return std::string("its own kernel for ") + name + " at " + c10::toString(key);
  }
  return {};
}

}  // namespace

std::string choose_keys() {
  std::string why;
  for (c10::DispatchKey key : compat::kModeKeyCandidates) {
    std::string holder = taken(key);
    if (holder.empty()) {
      detail::g_shim_key = key;
      return {};
    }
    why += (why.empty() ? "" : ", ") + holder;
  }
  return "this torch (" + std::string(compat::kTorchVersion) + ") leaves none of its free keys "
         "to the shim: it has " + why;
}

void enable_in_this_thread() {
  c10::impl::tls_set_dispatch_key_included(shim_key(), true);
  c10::impl::tls_set_dispatch_key_excluded(shim_key(), false);
}

bool active_in_this_thread() {
  return c10::impl::tls_is_dispatch_key_included(shim_key()) &&
         !c10::impl::tls_is_dispatch_key_excluded(shim_key());
}

}  // namespace ipex_shim
