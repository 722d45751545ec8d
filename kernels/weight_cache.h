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
//   - writes through an alias with a version counter of its own: `w.data.add_(...)`,
//     `w.data.copy_(...)`, `w.detach()` made before a `set_data` and the like. PyTorch gives
//     `.data` a fresh version counter, so the weight's own never moves; instead every op that
//     writes a tensor reports the write's storage here (note_write, from shim/write_watch.h),
//     and each storage a kept entry depends on has a write generation that its fingerprint
//     records.
// A weight without a version counter (a tensor made under torch.inference_mode()) could
// change in place unseen: it is packed for each call and never kept.
// Still not detectable: writes that bypass the dispatcher (through `.numpy()`, a DLPack or
// ctypes view), and writes from threads where the shim is off; the README lists them.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/intrusive_ptr.h>

#include <dnnl.hpp>
#include <atomic>
#include <functional>
#include <list>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>

namespace ipex_shim {

struct PackedWeight {
  at::Tensor storage;     // owns the packed bytes
  dnnl::memory memory;    // describes them in the primitive's layout
  at::Tensor bias;        // a bias computed with the weight (a folded batch norm's), if any
  at::Tensor scales;      // INT8: the weight's quantisation scales per output channel
  // INT8, where the primitive takes the scales at execution: those scales as it takes them
  // (onednn::weight_scales_argument), made once here rather than per call.
  dnnl::memory scales_argument;
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

  // An op wrote (or may have written) into `storage`: entries packed from it are stale. Cheap
  // when no kept entry depends on that storage (the usual case: activations, gradients).
  void note_write(const c10::StorageImpl* storage);
  // Whether any kept entry depends on a storage at all (a lock-free early out for callers).
  bool watching() const { return watched_count_.load(std::memory_order_relaxed) != 0; }

 private:
  // Write generations of the storages kept entries depend on (with mutex_ held): a
  // storage is watched from before its weight is packed until the last entry that depends
  // on it is dropped. A raw address is enough here: a storage that died and one later
  // allocated at its address share a generation, which can only cause a repack.
  struct Watched {
    size_t entries = 0;
    uint64_t generation = 0;
  };
  void watch(const c10::StorageImpl* storage);
  void unwatch(const c10::StorageImpl* storage);
  uint64_t generation(const c10::StorageImpl* storage) const;

  struct Fingerprint {
    c10::weak_intrusive_ptr<c10::TensorImpl, c10::UndefinedTensorImpl> impl;
    c10::weak_intrusive_ptr<c10::StorageImpl> storage;
    const c10::StorageImpl* storage_address = nullptr;
    const void* data = nullptr;
    uint32_t version = 0;
    uint64_t write_generation = 0;
    std::vector<int64_t> sizes;
    std::vector<int64_t> strides;
    at::ScalarType dtype = at::kFloat;

    // With mutex_ held: the storage's write generation is read from `cache`.
    Fingerprint(const at::Tensor& tensor, const WeightCache& cache);
    bool matches(const at::Tensor& tensor, const WeightCache& cache) const;
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
  void forget(const Entry& entry);  // with mutex_ held: unwatches its storages

  std::mutex mutex_;
  std::unordered_map<const c10::StorageImpl*, Watched> watched_;
  std::atomic<size_t> watched_count_{0};
  std::unordered_multimap<const c10::TensorImpl*, Entry> entries_;
  size_t bytes_ = 0;
  uint64_t hits_ = 0;
  uint64_t packs_ = 0;
  uint64_t unversioned_packs_ = 0;
};

WeightCache& weight_cache();

}  // namespace ipex_shim
