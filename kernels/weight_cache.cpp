#include "kernels/weight_cache.h"
#include "kernels/tensor_version.h"

namespace ipex_shim {
namespace {

const c10::StorageImpl* storage_of(const at::Tensor& tensor) {
  return tensor.has_storage() ? tensor.storage().unsafeGetStorageImpl() : nullptr;
}

}  // namespace

WeightCache::Fingerprint::Fingerprint(const at::Tensor& tensor, const WeightCache& cache)
    : impl(tensor.getIntrusivePtr()),
      storage(tensor.storage().getWeakStorageImpl()),
      storage_address(storage_of(tensor)),
      data(tensor.data_ptr()),
      version(version_of(tensor)),
      write_generation(cache.generation(storage_address)),
      sizes(tensor.sizes().vec()),
      strides(tensor.strides().vec()),
      dtype(tensor.scalar_type()) {}

bool WeightCache::Fingerprint::matches(const at::Tensor& tensor, const WeightCache& cache) const {
  // A weak reference keeps its target's memory, so no other object can live at that
  // address: the live `tensor` at the same address is the object fingerprinted (no need to
  // lock, which costs two atomic operations per reference).
  return impl._unsafe_get_target() == tensor.unsafeGetTensorImpl() &&
         storage._unsafe_get_target() == tensor.storage().unsafeGetStorageImpl() &&
         data == tensor.data_ptr() && version == version_of(tensor) &&
         write_generation == cache.generation(storage_address) &&
         tensor.sizes().equals(sizes) && tensor.strides().equals(strides) &&
         dtype == tensor.scalar_type();
}

void WeightCache::watch(const c10::StorageImpl* storage) {
  if (storage == nullptr) return;
  Watched& watched = watched_[storage];
  if (watched.entries++ == 0) watched_count_.fetch_add(1, std::memory_order_relaxed);
}

void WeightCache::unwatch(const c10::StorageImpl* storage) {
  auto it = watched_.find(storage);
  if (it == watched_.end()) return;
  if (--it->second.entries == 0) {
    watched_.erase(it);
    watched_count_.fetch_sub(1, std::memory_order_relaxed);
  }
}

uint64_t WeightCache::generation(const c10::StorageImpl* storage) const {
  auto it = watched_.find(storage);
  return it == watched_.end() ? 0 : it->second.generation;
}

void WeightCache::note_write(const c10::StorageImpl* storage) {
  if (storage == nullptr || !watching()) return;
  std::lock_guard<std::mutex> lock(mutex_);
  auto it = watched_.find(storage);
  if (it != watched_.end()) ++it->second.generation;
}

void WeightCache::forget(const Entry& entry) {
  bytes_ -= entry.bytes;
  unwatch(entry.weight.storage_address);
  for (const Fingerprint& extra : entry.extra) unwatch(extra.storage_address);
}

PackedWeight WeightCache::get(const at::Tensor& weight, const std::string& variant,
                              const std::vector<at::Tensor>& extra,
                              const std::function<PackedWeight()>& pack, bool replaces_others) {
  // A tensor without a version counter (made under inference mode) can change in place
  // unseen: its packing is made for this call only.
  bool versioned = tracks_version(weight);
  for (const at::Tensor& tensor : extra) versioned = versioned && tracks_version(tensor);
  if (!versioned) {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      ++unversioned_packs_;
    }
    return pack();
  }
  const c10::TensorImpl* key = weight.unsafeGetTensorImpl();
  std::unique_ptr<Entry> entry;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    auto range = entries_.equal_range(key);
    for (auto it = range.first; it != range.second; ++it) {
      Entry& kept = it->second;
      if (kept.variant != variant) continue;
      bool fresh = kept.weight.matches(weight, *this) && kept.extra.size() == extra.size();
      for (size_t i = 0; fresh && i < extra.size(); ++i)
        fresh = kept.extra[i].matches(extra[i], *this);
      if (fresh) {
        ++hits_;
        // Weights of freed models are released even when nothing new is packed.
        if ((hits_ & 1023) == 0) drop_dead_entries();
        return kept.packed;
      }
      forget(kept);  // stale: the weight changed since it was packed
      entries_.erase(it);
      break;
    }
    // Watched and fingerprinted before packing: a write while it packs (another thread)
    // moves the generation past the one recorded, so the entry is stale at its next use.
    watch(storage_of(weight));
    for (const at::Tensor& tensor : extra) watch(storage_of(tensor));
    entry.reset(new Entry{Fingerprint(weight, *this), {}, variant, {}, 0});
    for (const at::Tensor& tensor : extra) entry->extra.emplace_back(tensor, *this);
  }
  // Pack outside the lock: packing a large weight takes milliseconds. Should it throw, the
  // storages watched for it are released.
  try {
    entry->packed = pack();
  } catch (...) {
    std::lock_guard<std::mutex> lock(mutex_);
    unwatch(entry->weight.storage_address);
    for (const Fingerprint& fingerprint : entry->extra) unwatch(fingerprint.storage_address);
    throw;
  }
  entry->bytes = entry->packed.memory.get_desc().get_size();
  PackedWeight packed = entry->packed;
  std::lock_guard<std::mutex> lock(mutex_);
  drop_dead_entries();
  ++packs_;
  // Another thread may have packed the same weight meanwhile; keep one entry.
  auto range = entries_.equal_range(key);
  for (auto it = range.first; it != range.second;) {
    if (it->second.variant == variant || replaces_others) {
      forget(it->second);
      it = entries_.erase(it);
    } else {
      ++it;
    }
  }
  bytes_ += entry->bytes;
  entries_.emplace(key, std::move(*entry));
  return packed;
}

void WeightCache::drop_dead_entries() {
  for (auto it = entries_.begin(); it != entries_.end();) {
    bool dead = !it->second.weight.alive();
    for (const Fingerprint& extra : it->second.extra) dead = dead || !extra.alive();
    if (dead) {
      forget(it->second);
      it = entries_.erase(it);
    } else {
      ++it;
    }
  }
}

WeightCache::Stats WeightCache::stats() {
  std::lock_guard<std::mutex> lock(mutex_);
  drop_dead_entries();
  return {entries_.size(), bytes_, hits_, packs_, unversioned_packs_};
}

void WeightCache::clear() {
  std::lock_guard<std::mutex> lock(mutex_);
  for (const auto& kept : entries_) forget(kept.second);
  entries_.clear();
  bytes_ = 0;
  hits_ = 0;
  packs_ = 0;
  unversioned_packs_ = 0;
}

WeightCache& weight_cache() {
  static WeightCache* cache = new WeightCache();  // used until the process ends
  return *cache;
}

}  // namespace ipex_shim
