// The override table: every op the shim intercepts, a line each, grouped by policy.
//
// All kernels are registered at the shim's key (dispatch_key.h) in the "aten" namespace, and
// a fallthrough fallback is registered for that key so that every op the table does not
// name goes straight on to the next key (without it, every other op would fail).
// Kernel files hold no registration: the table below is the one place to look.
//
// Until an op gets its own kernel, its line registers Intercept<Op>::pass_through, which
// counts the call and runs stock PyTorch with the shim's key excluded.
#include "shim/registration.h"

#include <atomic>

// The ops headers expect these to be declared first.
#include <ATen/core/Tensor.h>
#include <c10/core/DispatchKeySet.h>
#include <c10/core/SymIntArrayRef.h>
#include <torch/library.h>

#include <ATen/ops/_convolution_ops.h>
#include <ATen/ops/_native_multi_head_attention_ops.h>
#include <ATen/ops/_transformer_encoder_layer_fwd_ops.h>
#include <ATen/ops/adaptive_avg_pool2d_ops.h>
#include <ATen/ops/add_ops.h>
#include <ATen/ops/addmm_ops.h>
#include <ATen/ops/avg_pool2d_ops.h>
#include <ATen/ops/baddbmm_ops.h>
#include <ATen/ops/batch_norm_ops.h>
#include <ATen/ops/bmm_ops.h>
#include <ATen/ops/conv1d_ops.h>
#include <ATen/ops/conv2d_ops.h>
#include <ATen/ops/conv3d_ops.h>
#include <ATen/ops/conv_transpose1d_ops.h>
#include <ATen/ops/conv_transpose2d_ops.h>
#include <ATen/ops/conv_transpose3d_ops.h>
#include <ATen/ops/gelu_ops.h>
#include <ATen/ops/hardswish_ops.h>
#include <ATen/ops/hardtanh_ops.h>
#include <ATen/ops/silu_ops.h>
#include <ATen/ops/layer_norm_ops.h>
#include <ATen/ops/linear_ops.h>
#include <ATen/ops/matmul_ops.h>
#include <ATen/ops/cat_ops.h>
#include <ATen/ops/max_pool2d_ops.h>
#include <ATen/ops/mm_ops.h>
#include <ATen/ops/mul_ops.h>
#include <ATen/ops/relu_ops.h>
#include <ATen/ops/softmax_ops.h>

#include "shim/intercept.h"
#include "shim/mode_control.h"
#include "shim/ops_convolution.h"
#include "shim/ops_fusion_consumers.h"
#include "shim/ops_attention.h"
#include "shim/ops_matmul.h"
#include "shim/log.h"
#include "shim/ops_observed.h"
#include "shim/status.h"
#include "shim/write_watch.h"

namespace ipex_shim {

const char* policy_name(Policy policy) {
  switch (policy) {
    case Policy::lower_precision: return "lower_precision";
    case Policy::fp32: return "fp32";
    case Policy::promote: return "promote";
    case Policy::observe: return "observe";
  }
  return "?";
}

namespace {

// The ipex_shim namespace takes one definition per process: the full set or the refused
// status alone.
std::atomic<bool> g_introspection_registered{false};

std::vector<TableEntry>& table_storage() {
  static std::vector<TableEntry>* table = new std::vector<TableEntry>();
  return *table;
}

template <class Op, class Kernel>
void add(torch::Library& library, Policy policy, Kernel kernel) {
  std::string name = op_display_name<Op>();
  library.impl(name.c_str(), kernel);
  table_storage().push_back({name, policy});
  Intercept<Op>::stats();  // listed in status() from the start, with zero calls
}

// An op the shim counts and passes to stock in every mode (until it gets a kernel).
template <class Op>
void add(torch::Library& library, Policy policy) {
  add<Op>(library, policy, TORCH_FN(Intercept<Op>::pass_through));
}

#define SHIM_OP(op, policy) add<at::_ops::op>(library, Policy::policy)
// An op with its own kernel (which itself passes to stock in modes it does not handle).
#define SHIM_KERNEL(op, policy, kernel) \
  add<at::_ops::op>(library, Policy::policy, TORCH_FN((Adapted<at::_ops::op, &kernel>::call)))


void fill_table(torch::Library& library) {
  // Policy::lower_precision
  SHIM_KERNEL(conv1d, lower_precision, convolution_override<at::_ops::conv1d>);
  SHIM_KERNEL(conv2d, lower_precision, convolution_override<at::_ops::conv2d>);
  SHIM_KERNEL(conv3d, lower_precision, convolution_override<at::_ops::conv3d>);
  SHIM_OP(conv1d_padding, lower_precision);
  SHIM_OP(conv2d_padding, lower_precision);
  SHIM_OP(conv3d_padding, lower_precision);
  SHIM_KERNEL(conv_transpose1d, lower_precision,
              transposed_convolution_override<at::_ops::conv_transpose1d>);
  SHIM_KERNEL(conv_transpose2d_input, lower_precision,
              transposed_convolution_override<at::_ops::conv_transpose2d_input>);
  SHIM_KERNEL(conv_transpose3d_input, lower_precision,
              transposed_convolution_override<at::_ops::conv_transpose3d_input>);
  SHIM_KERNEL(_convolution, lower_precision, underscore_convolution_override);
  SHIM_KERNEL(linear, lower_precision, linear_override);
  SHIM_KERNEL(matmul, lower_precision, matmul_override);
  SHIM_KERNEL(mm, lower_precision, mm_override);
  SHIM_KERNEL(bmm, lower_precision, bmm_override);
  SHIM_KERNEL(addmm, lower_precision, addmm_override);
  SHIM_KERNEL(baddbmm, lower_precision, baddbmm_override);
  // The transformer fast path, run as its parts (linear, matmul, softmax, layer_norm).
  SHIM_KERNEL(_native_multi_head_attention, lower_precision, native_multi_head_attention_override);
  SHIM_KERNEL(_transformer_encoder_layer_fwd, lower_precision, transformer_encoder_layer_override);

  // Policy::fp32
  SHIM_KERNEL(batch_norm, fp32, batch_norm_override);
  SHIM_OP(layer_norm, fp32);
  SHIM_KERNEL(softmax_int, fp32, softmax_override);

  // Policy::promote
  SHIM_KERNEL(add_Tensor, promote, add_override);
  SHIM_KERNEL(add__Tensor, promote, add__override);

  // Policy::observe
  SHIM_KERNEL(relu, observe, relu_override);
  SHIM_KERNEL(relu_, observe, relu__override);
  SHIM_KERNEL(hardtanh, observe, hardtanh_override);
  SHIM_KERNEL(hardtanh_, observe, hardtanh__override);
  SHIM_KERNEL(silu, observe, silu_override);
  SHIM_KERNEL(silu_, observe, silu__override);
  SHIM_KERNEL(hardswish, observe, hardswish_override);
  SHIM_KERNEL(hardswish_, observe, hardswish__override);
  SHIM_KERNEL(gelu, observe, gelu_override);
  SHIM_KERNEL(max_pool2d, observe, max_pool2d_override);
  SHIM_KERNEL(avg_pool2d, observe, avg_pool2d_override);
  SHIM_KERNEL(adaptive_avg_pool2d, observe, adaptive_avg_pool2d_override);
  SHIM_KERNEL(cat, observe, cat_override);
}

#undef SHIM_OP
#undef SHIM_KERNEL

}  // namespace

void register_overrides() {
  // Library objects unregister on destruction; these must outlive every op call, including
  // calls made from other libraries' static destructors at exit, so they are never freed.
  auto* fallback = new torch::Library(torch::Library::IMPL, "_", shim_key(), __FILE__, __LINE__);
  fallback->fallback(torch::CppFunction::makeFallthrough());
  auto* library = new torch::Library(torch::Library::IMPL, "aten", shim_key(), __FILE__, __LINE__);
  fill_table(*library);
  // Modes that keep packed weights must see every write to them (shim/write_watch.h). In
  // every mode: the mode may change at run time, and the weights kept then must be watched.
  register_write_watch(*library);
}

void register_observed_overrides() {
  auto* library =
      new torch::Library(torch::Library::IMPL, "aten", observer_key(), __FILE__, __LINE__);
  // Policy::observe, at the observer's key: squeeze-excitation's `x * gate` on handed-over
  // bytes. At the shim's key it cost every mul of every program 150-400 ns (a 64-element
  // mul, 1.1 us stock).
  add<at::_ops::mul_Tensor>(*library, Policy::observe, TORCH_FN(mul_observed));
}

void register_introspection() {
  g_introspection_registered = true;
  auto* library =
      new torch::Library(torch::Library::DEF, "ipex_shim", c10::nullopt, __FILE__, __LINE__);
  library->def("status() -> str", &status_json);
  library->def("reset_stats() -> ()", &reset_stats);
  library->def("clear_weight_cache() -> int", &clear_weight_cache);
  library->def("write_config() -> str", &calibration::write_now);
  library->def("write_config_at_exit() -> int", &calibration::write_at_exit_now);
  library->def("set_mode(str mode, str config=\"\") -> str", &api::set_mode);
  library->def("enter_mode(str mode, str config=\"\") -> int", &api::enter_mode);
  library->def("exit_mode(int depth) -> ()", &api::exit_mode);
  library->def("enable_thread() -> ()", &api::enable_thread);
  library->def("save_config(str path) -> str", &api::save_config);
  library->def("reset_calibration() -> ()", &api::reset_calibration);
  library->def("load_config(str path) -> str", &api::load_config);
}

void register_refused_status() noexcept {
  if (g_introspection_registered.exchange(true)) return;
  try {
    auto* library =
        new torch::Library(torch::Library::DEF, "ipex_shim", c10::nullopt, __FILE__, __LINE__);
    library->def("status() -> str", &refused_status_json);
  } catch (const std::exception& error) {
    try {
      log_line(Severity::warning, std::string("torch.ops.ipex_shim.status is not available: ") +
                                      error.what());
    } catch (...) {
    }
  } catch (...) {
  }
}

const std::vector<TableEntry>& override_table() { return table_storage(); }

}  // namespace ipex_shim
