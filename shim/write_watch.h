// Writes to packed weights that version counters miss (kernels/weight_cache.h).
//
// `w.data.add_(x)`, `w.data.copy_(y)` and `w.data.mul_(0.9)` (EMA updates, older training
// code) write a weight's storage through an alias whose version counter is its own, so the
// weight's counter never moves. Every op whose schema marks an argument as written reports
// that argument's storage to the weight cache after it ran: ops the override table does not
// name get a boxed kernel at the shim's key that does this and passes the call on; the
// table's own in-place ops (add_, relu_, hardtanh_, training batch_norm's running
// statistics) report through WriteNote. Ops that only read keep the fallthrough, so they pay
// nothing.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstddef>

namespace torch {
class Library;
}

namespace ipex_shim {

// Registers the boxed write-reporting kernel for every aten op that writes an argument and
// has no kernel of the shim's; returns how many. Call after the override table is filled.
size_t register_write_watch(torch::Library& aten_library);

// Reports a write to `tensor`'s storage when it goes out of scope (after the op ran, also
// when it threw). An undefined tensor or one without storage reports nothing.
class WriteNote {
 public:
  explicit WriteNote(const at::Tensor& tensor);
  explicit WriteNote(const c10::optional<at::Tensor>& tensor)
      : WriteNote(tensor ? *tensor : at::Tensor()) {}
  ~WriteNote();
  WriteNote(const WriteNote&) = delete;
  WriteNote& operator=(const WriteNote&) = delete;

 private:
  const c10::StorageImpl* storage_ = nullptr;
};

}  // namespace ipex_shim
