// Which op instance is this? (DESIGN.md, "INT8 configuration".) Calibration and INT8
// inference must give the same answer for the same op of the same program, across
// processes, passes, batch sizes and unrelated tensor work, and a different answer for a
// different op. The seed counted calls, and put scales on the wrong ops when the count
// changed. Here:
//
// - An op with a weight (Convolution, Linear) is known by what it computes: its kind, the
//   weight's shape, its parameters (stride, padding, dilation, groups, bias) and a digest of
//   the weight's bytes, e.g. "Convolution(w=64x3x7x7,s=2x2,p=3x3,d=1x1,g=1,b=0)#5f0c...".
//   Unrelated work cannot take its key (other weights give another digest); the same model
//   loaded again finds it; two layers with identical weights are told apart by the order in
//   which their weight tensors first ran (".1", ".2"...).
// - An op without a weight (BatchNorm's statistics aside: Relu, Add, pooling, Matmul,
//   BatchNorm) is known by the weighted op its inputs come from (its "anchor", followed
//   through outputs, views and in-place ops by storage) and its rank among the ops of that
//   kind on that anchor since the anchor last ran: "Relu@<anchor key>#0". An op whose inputs
//   come from no known op (the program's input, unrelated work) gets no identity.
//
// Ops get indexes in order of first appearance; that order is also the `id` of the seed's
// format, which is how a seed file (which has no keys) is matched.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <vector>
#include <string>

namespace ipex_shim::int8 {

enum class Kind {
  convolution,
  linear,
  matmul,
  batch_norm,
  relu,
  max_pool,
  avg_pool,
  adaptive_pool,
  add,
};

// The seed's name for the kind: "Convolution", "Linear", "BatchNorm", "MaxPooling"...
const char* kind_name(Kind kind);
bool has_weight(Kind kind);

constexpr int64_t kNoOp = -1;

// A convolution or linear layer about to run. Its key (parameters, weight digest) is made
// only the first time its weight is seen; later calls cost one lookup.
int64_t identify_convolution(const at::Tensor& weight, c10::IntArrayRef stride,
                             c10::IntArrayRef padding, c10::IntArrayRef dilation, int64_t groups,
                             bool has_bias);
// A transposed convolution: a key of its own kind of signature, written as a "Convolution"
// entry (the seed's format has no other name for it).
int64_t identify_transposed_convolution(const at::Tensor& weight, c10::IntArrayRef stride,
                                        c10::IntArrayRef padding,
                                        c10::IntArrayRef output_padding,
                                        c10::IntArrayRef dilation, int64_t groups,
                                        bool has_bias);
int64_t identify_linear(const at::Tensor& weight, bool has_bias);

// The op of a weight that already ran (same tensor, unchanged), without starting a new
// generation; kNoOp otherwise. For looking ahead at the op a result will be handed to.
int64_t known_weighted(const at::Tensor& weight);

// An op without a weight about to run, from its tensor inputs; kNoOp when none is anchored.
// The key ("Relu@<anchor key>#0") is made once per op; later calls cost a few integer
// lookups.
int64_t identify_anchored(Kind kind, c10::ArrayRef<const at::Tensor*> inputs);

// `output` (and every view or in-place update of its storage) comes from op `index`.
void produced(int64_t index, const at::Tensor& output);

// `output`'s storage now holds a result no op with an INT8 identity made (a fused activation
// that answers with the memory of the op before it, where stock would return new memory).
void produced_by_no_op(const at::Tensor& output);

// The op whose result `tensor`'s storage last received (through produced()); kNoOp if none.
int64_t producer_of(const at::Tensor& tensor);

struct OpInfo {
  Kind kind = Kind::convolution;
  std::string key;
};
OpInfo op_info(int64_t index);
int64_t op_count();


}  // namespace ipex_shim::int8
