// The generic wrapper the override table instantiates per op. `Op` is one of ATen's
// generated `at::_ops::<op>` structs: its `schema` type gives the exact C++ signature the
// dispatcher expects, and its static `call` is a cached, typed operator handle.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/core/impl/LocalDispatchKeySet.h>

#include <string>
#include <utility>

#include "shim/dispatch_key.h"
#include "shim/mode_control.h"
#include "shim/op_stats.h"
#include "shim/runtime.h"
#include "shim/torch_compat.h"

namespace ipex_shim {

// "aten::add" + "Tensor" -> "add.Tensor": the name the table, status() and the summary use.
template <class Op>
std::string op_display_name() {
  std::string name = Op::name;
  const std::string prefix = "aten::";
  if (name.compare(0, prefix.size(), prefix) == 0) name = name.substr(prefix.size());
  std::string overload = Op::overload_name;
  return overload.empty() ? name : name + "." + overload;
}

template <class Op, class Signature = typename Op::schema>
struct Intercept;

template <class Op, class Ret, class... Args>
struct Intercept<Op, Ret(Args...)> {
  static OpStats& stats() {
    static OpStats& instance = op_stats(op_display_name<Op>());
    return instance;
  }

  // The original op, with the shim's key off for the whole call (nested ops included;
  // DESIGN.md fact 4: at::redispatch would skip the key for one call only). The arguments
  // may be a wrapper's concrete sizes where this torch's schema takes symbolic ones.
  template <class... Given>
  static Ret stock(Given&&... args) {
    static_assert(sizeof...(Given) == sizeof...(Args), "stock() takes the op's arguments");
    c10::impl::ExcludeDispatchKeyGuard guard(shim_keys());
    return Op::call(compat::as_op_arg<Args>(std::forward<Given>(args))...);
  }

  // A call the shim does not handle: counted with the reason, then run stock.
  template <class... Given>
  static Ret stock_because(Fallback reason, Given&&... args) {
    stats().count(Path::stock, reason);
    return stock(std::forward<Given>(args)...);
  }

  // A call the shim does not handle in this mode.
  static Ret pass_through(Args... args) {
    return stock_because(fallback_for_mode(current_mode()), std::forward<Args>(args)...);
  }

  // The kernel the override table registers for a wrapper written against concrete sizes:
  // this torch's schema arguments converted to the wrapper's types, or stock (counted) when a
  // size is symbolic.
  template <class KernelRet, class... KernelArgs>
  static Ret adapt(KernelRet (*kernel)(KernelArgs...), Args... args) {
    static_assert(sizeof...(KernelArgs) == sizeof...(Args), "the wrapper takes the op's arguments");
    if (!(compat::concrete(args) && ...))
      return stock_because(Fallback::symbolic_sizes, std::forward<Args>(args)...);
    return kernel(compat::as_kernel_arg<KernelArgs>(std::forward<Args>(args))...);
  }
};

// Op's schema signature around `kernel` (Intercept::adapt), as a plain function to register.
template <class Op, auto kernel, class Signature = typename Op::schema>
struct Adapted;

template <class Op, auto kernel, class Ret, class... Args>
struct Adapted<Op, kernel, Ret(Args...)> {
  static Ret call(Args... args) {
    return Intercept<Op>::adapt(kernel, std::forward<Args>(args)...);
  }
};

}  // namespace ipex_shim
