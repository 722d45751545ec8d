#include "kernels/weight_cache.h"
#include "kernels/tensor_version.h"

namespace ipex_shim {

WeightCache::Fingerprint::Fingerprint(const at::Tensor& tensor)
    : impl(tensor.getIntrusivePtr()),
      storage(tensor.storage().getWeakStorageImpl()),
      data(tensor.data_ptr()),
      version(version_of(tensor)),
      sizes(tensor.sizes().vec()),
      strides(tensor.strides().vec()),
      dtype(tensor.scalar_type()) {}

bool WeightCache::Fingerprint::matches(const at::Tensor& tensor) const {
  auto locked = impl.lock();
  auto locked_storage = storage.lock();
  return locked.get() == tensor.unsafeGetTensorImpl() &&
         locked_storage.get() == tensor.storage().unsafeGetStorageImpl() &&
         data == tensor.data_ptr() &&
         version == version_of(tensor) && tensor.sizes().equals(sizes) &&
         tensor.strides().equals(strides) && dtype == tensor.scalar_type();
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
  {
    std::lock_guard<std::mutex> lock(mutex_);
    auto range = entries_.equal_range(key);
    for (auto it = range.first; it != range.second; ++it) {
      Entry& entry = it->second;
      if (entry.variant != variant) continue;
      bool fresh = entry.weight.matches(weight) && entry.extra.size() == extra.size();
      for (size_t i = 0; fresh && i < extra.size(); ++i)
        fresh = entry.extra[i].matches(extra[i]);
      if (fresh) {
        ++hits_;
        // Weights of freed models are released even when nothing new is packed.
        if ((hits_ & 1023) == 0) drop_dead_entries();
        return entry.packed;
      }
      bytes_ -= entry.bytes;  // stale: the weight changed since it was packed
      entries_.erase(it);
      break;
    }
  }
  // Pack outside the lock: packing a large weight takes milliseconds.
  PackedWeight packed = pack();
  Entry entry{Fingerprint(weight), {}, variant, packed, packed.memory.get_desc().get_size()};
  for (const at::Tensor& tensor : extra) entry.extra.emplace_back(tensor);
  std::lock_guard<std::mutex> lock(mutex_);
  drop_dead_entries();
  ++packs_;
  // Another thread may have packed the same weight meanwhile; keep one entry.
  auto range = entries_.equal_range(key);
  for (auto it = range.first; it != range.second;) {
    if (it->second.variant == variant || replaces_others) {
      bytes_ -= it->second.bytes;
      it = entries_.erase(it);
    } else {
      ++it;
    }
  }
  bytes_ += entry.bytes;
  entries_.emplace(key, std::move(entry));
  return packed;
}

void WeightCache::drop_dead_entries() {
  for (auto it = entries_.begin(); it != entries_.end();) {
    bool dead = !it->second.weight.alive();
    for (const Fingerprint& extra : it->second.extra) dead = dead || !extra.alive();
    if (dead) {
      bytes_ -= it->second.bytes;
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
