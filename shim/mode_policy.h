// How a wrapper decides, per call, where an op runs. One function per question, so that
// every wrapper asks them the same way.
#pragma once

#include <ATen/autocast_mode.h>
#include <ATen/core/Tensor.h>
#include <c10/core/GradMode.h>
#include <c10/core/impl/LocalDispatchKeySet.h>

#include <vector>

#include "kernels/onednn_context.h"
#include "shim/intercept.h"
#include "shim/op_stats.h"
#include "shim/runtime.h"

namespace ipex_shim {

// Whether this call may run on the shim's kernels at all: only in the modes that use them,
// never while torch.jit.trace records (the shim's key sits above the Tracer key, so a kernel
// of ours would hide the op from the trace), and never inside the program's own
// torch.autocast region (the shim's key sits above autocast's too; autocast's choices,
// BF16 results included, are what the program asked for). Returns the reason otherwise.
inline Fallback float_kernel_gate() {
  const Mode mode = current_mode();
  if (!uses_float_kernels(mode)) return fallback_for_mode(mode);
  if (c10::impl::tls_is_dispatch_key_included(c10::DispatchKey::Tracer)) return Fallback::tracing;
  if (compat::cpu_autocast_enabled()) return Fallback::autocast;
  return Fallback::none;
}

// The precision of a lower_precision op in the current mode; IPEX_CONFIG's keep_fp32 can
// hold a chosen op at fp32, and a CPU without native BF16 holds every op there.
inline Precision lower_precision(const OpStats& op) {
  return current_mode() == Mode::bf16 && !op.keep_fp32 && bf16_decision().run_bf16
             ? Precision::bf16
             : Precision::fp32;
}

// The precision of a call without a gradient that does not run in INT8: lower_precision's,
// except that in int8 mode an op its config leaves out of INT8 (`int8_why` not_quantized)
// runs in BF16 where int8_fallback_bf16() says so (IPEX_INT8_FALLBACK): it costs that op far
// less accuracy than INT8 would, and the fp32 kernels were what made such models slower in
// int8 mode than in bf16 mode.
inline Precision inference_precision(const OpStats& op, Fallback int8_why) {
  if (int8_why == Fallback::not_quantized && int8_fallback_bf16()) return Precision::bf16;
  return lower_precision(op);
}

// Why a call of bf16 mode counted on the fp32 kernels ran there (no native BF16; an op
// IPEX_CONFIG keeps in fp32 needs no reason), or `other` when the caller has one of its own.
inline Fallback precision_note(const OpStats& op, Fallback other = Fallback::none) {
  if (other != Fallback::none) return other;
  return current_mode() == Mode::bf16 && !op.keep_fp32 && !bf16_decision().run_bf16
             ? Fallback::no_bf16_isa
             : Fallback::none;
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
inline bool needs_grad_any(const std::vector<at::Tensor>& tensors) {
  if (!c10::GradMode::is_enabled()) return false;
  for (const at::Tensor& tensor : tensors)
    if (records_grad(tensor)) return true;
  return false;
}

// Tensors cast to BF16 (for the autograd path).
inline at::Tensor to_bf16(const at::Tensor& tensor) { return tensor.to(at::kBFloat16); }
inline c10::optional<at::Tensor> to_bf16(const c10::optional<at::Tensor>& tensor) {
  if (!tensor || !tensor->defined()) return tensor;
  return tensor->to(at::kBFloat16);
}

// Says once per op and reason that a kernel failed, then the caller answers with stock.
void report_kernel_error(const std::string& op, const std::exception& error);

// Counts a call the shim's kernel answered on `path`; a call of bf16 mode on the fp32 kernels
// carries precision_note's reason (or `note`, the caller's own).
template <class Op>
void count_kernel(Path path, Fallback note = Fallback::none) {
  Intercept<Op>::stats().count(
      path, path == Path::onednn_fp32 ? precision_note(Intercept<Op>::stats(), note) : note);
}

// The two endings every wrapper shares, for Op = an at::_ops struct.
//
// run_or_stock: runs `kernel` (with the shim's key off) when `why` is none and counts it on
// `path` (path_for(precision), or onednn_int8); an unsupported case or a kernel error runs
// `stock`, counted with the reason. `note`: why a kernel that ran is not the mode's first
// choice (INT8: no usable config entry), counted with the call.
template <class Op, class Kernel, class Stock>
at::Tensor run_or_stock(Fallback why, Path path, Kernel kernel, Stock stock,
                        Fallback note = Fallback::none) {
  if (why == Fallback::none) {
    try {
      c10::impl::ExcludeDispatchKeyGuard guard(shim_keys());
      at::Tensor output = kernel();
      count_kernel<Op>(path, note);
      return output;
    } catch (const std::exception& error) {
      report_kernel_error(op_display_name<Op>(), error);
      why = Fallback::kernel_error;
    }
  }
  Intercept<Op>::stats().count(Path::stock, why);
  return stock();
}

// with_grad: a call autograd records. In bf16 (the caller passes BF16 copies) the stock op
// runs on them and the result comes back as fp32; in fp32 the stock op runs as is.
template <class Op, class... Args>
at::Tensor with_grad(Args&&... args) {
  if (lower_precision(Intercept<Op>::stats()) == Precision::fp32) {
    return Intercept<Op>::stock_because(Fallback::needs_grad, std::forward<Args>(args)...);
  }
  Intercept<Op>::stats().count(Path::autograd_bf16);
  return Intercept<Op>::stock(std::forward<Args>(args)...).to(at::kFloat);
}

}  // namespace ipex_shim
