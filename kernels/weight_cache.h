// Packed weights, once (DESIGN.md "Speed comes from three things", 1).
//
// A weight is reordered (and cast) into the layout a primitive asked for once, and reused
// until it changes. An entry is found by the weight tensor's identity and checked against
// everything that can change under the same identity (DESIGN.md fact 8):
//   - the version counter: optimizer.step(), in-place updates under no_grad, load_state_dict;
//   - the storage (a weak reference) and data_ptr: `w.data = new_tensor`, even when the
//     allocator puts the new storage at the old one's address;
//   - sizes, strides, dtype.
// Identity is a weak reference to the TensorImpl, never a raw address that a later tensor
// could reuse; an entry whose weight has died is dropped at the next insertion.
// A weight without a version counter (a tensor made under torch.inference_mode()) could
// change in place unseen: it is packed for each call and never kept.
// Not detectable: `w.data.add_(...)` (PyTorch gives `.data` a fresh version counter); the
// README lists it under limitations.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/intrusive_ptr.h>

#include <dnnl.hpp>
#include <functional>
#include <list>
#include <mutex>
#include <string>
#include <unordered_map>

namespace ipex_shim {

struct PackedWeight {
  at::Tensor storage;     // owns the packed bytes
  dnnl::memory memory;    // describes them in the primitive's layout
  at::Tensor bias;        // a bias computed with the weight (a folded batch norm's), if any
  at::Tensor scales;      // INT8: the weight's quantisation scales per output channel
};

class WeightCache {
 public:
  // Returns the weight packed by `pack` for the layout `variant` names (a key that includes
  // the target descriptor and any transform such as a folded batch norm). `extra` are other
  // tensors the packed value depends on (a folded batch norm's parameters): a change to any
  // of them repacks as well.
  // `replaces_others`: this variant supersedes the weight's other variants (a weight packed
  // with a batch norm folded in replaces its plain packing), which are dropped.
  PackedWeight get(const at::Tensor& weight, const std::string& variant,
                   const std::vector<at::Tensor>& extra,
                   const std::function<PackedWeight()>& pack, bool replaces_others = false);

  struct Stats {
    size_t entries = 0;
    size_t bytes = 0;
    uint64_t hits = 0;
    uint64_t packs = 0;
    uint64_t unversioned_packs = 0;  // packed for one call: weights without a version counter
  };
  Stats stats();
  void clear();

 private:
  struct Fingerprint {
    c10::weak_intrusive_ptr<c10::TensorImpl, c10::UndefinedTensorImpl> impl;
    c10::weak_intrusive_ptr<c10::StorageImpl> storage;
    const void* data = nullptr;
    uint32_t version = 0;
    std::vector<int64_t> sizes;
    std::vector<int64_t> strides;
    at::ScalarType dtype = at::kFloat;

    explicit Fingerprint(const at::Tensor& tensor);
    bool matches(const at::Tensor& tensor) const;
    bool alive() const { return !impl.expired(); }
  };
  struct Entry {
    Fingerprint weight;
    std::vector<Fingerprint> extra;
    std::string variant;
    PackedWeight packed;
    size_t bytes;
  };

  void drop_dead_entries();  // with mutex_ held

  std::mutex mutex_;
  std::unordered_multimap<const c10::TensorImpl*, Entry> entries_;
  size_t bytes_ = 0;
  uint64_t hits_ = 0;
  uint64_t packs_ = 0;
  uint64_t unversioned_packs_ = 0;
};

WeightCache& weight_cache();

}  // namespace ipex_shim
