// How a wrapper decides, per call, where an op runs. One function per question, so that
// every wrapper asks them the same way.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/core/GradMode.h>
#include <c10/core/impl/LocalDispatchKeySet.h>

#include "kernels/onednn_context.h"
#include "shim/op_stats.h"
#include "shim/runtime.h"

namespace ipex_shim {

// Whether this call may run on the shim's floating-point kernels at all: only in fp32 and
// bf16 modes, and never while torch.jit.trace records (the shim's key sits above the Tracer
// key, so a kernel of ours would hide the op from the trace). Returns the reason otherwise.
inline Fallback float_kernel_gate() {
  Mode mode = runtime_settings().mode;
  if (mode != Mode::fp32 && mode != Mode::bf16) return default_fallback_reason();
  if (c10::impl::tls_is_dispatch_key_included(c10::DispatchKey::Tracer)) return Fallback::tracing;
  return Fallback::none;
}

// The precision of a lower_precision op in the current mode; IPEX_CONFIG's keep_fp32 can
// hold a chosen op at fp32.
inline Precision lower_precision(const OpStats& op) {
  return runtime_settings().mode == Mode::bf16 && !op.keep_fp32 ? Precision::bf16
                                                                : Precision::fp32;
}

inline Path path_for(Precision precision) {
  return precision == Precision::bf16 ? Path::onednn_bf16 : Path::onednn_fp32;
}

// Whether autograd will record this call: the shim's own kernels have no backward, so such
// calls take the autograd-aware path (DESIGN.md fact 5: otherwise parameters silently get
// no gradient).
inline bool records_grad(const at::Tensor& a) { return a.defined() && a.requires_grad(); }
inline bool records_grad(const c10::optional<at::Tensor>& a) { return a && records_grad(*a); }

template <class... Tensors>
bool needs_grad(const Tensors&... tensors) {
  return c10::GradMode::is_enabled() && (records_grad(tensors) || ...);
}

// An optional tensor cast to BF16 (for the autograd path).
inline c10::optional<at::Tensor> to_bf16(const c10::optional<at::Tensor>& tensor) {
  if (!tensor || !tensor->defined()) return tensor;
  return tensor->to(at::kBFloat16);
}

// Says once per op and reason that a kernel failed, then the caller answers with stock.
void report_kernel_error(const std::string& op, const std::exception& error);

}  // namespace ipex_shim
