// Ops that stock PyTorch computes (add), and the calibration paths of the pooling ops and
// add_ (whose wrappers in shim/ops_fusion_consumers.cpp run INT8 and fused kernels in the
// other modes). In the INT8 modes they are followed so that op identities downstream come
// out the same in calibration and inference (shim/int8_identity.h), and in calibration their
// inputs and results are observed, so the config has their entries (MaxPooling, AvgPooling,
// AdaptivePooling, Add).
#pragma once

#include <ATen/core/Tensor.h>

#include <type_traits>
#include <utility>
#include <vector>

#include "shim/int8_modes.h"
#include "shim/intercept.h"

namespace ipex_shim {

template <class Arg>
void collect_tensor(std::vector<const at::Tensor*>* tensors, const Arg& arg) {
  if constexpr (std::is_same_v<std::decay_t<Arg>, at::Tensor>) tensors->push_back(&arg);
}

template <class Op, int8::Kind kind, class Signature = typename Op::schema>
struct Observed;

template <class Op, int8::Kind kind, class Ret, class... Args>
struct Observed<Op, kind, Ret(Args...)> {
  static Ret call(Args... args) {
    if (!int8::tracking()) return Intercept<Op>::pass_through(std::forward<Args>(args)...);
    std::vector<const at::Tensor*> inputs;
    (collect_tensor(&inputs, args), ...);
    const int64_t op = int8::identify_anchored(kind, inputs);
    if (!int8::calibrating()) {
      Ret output = Intercept<Op>::pass_through(std::forward<Args>(args)...);
      int8::produced(op, output);
      return output;
    }
    calibration::observe_inputs(op, inputs);
    Ret output = Intercept<Op>::stock(std::forward<Args>(args)...);
    Intercept<Op>::stats().count(Path::observed);
    calibration::observe_output(op, output);
    int8::produced(op, output);
    return output;
  }
};

}  // namespace ipex_shim
