// A small keyed cache for oneDNN primitives and their descriptors. Creating a primitive
// descriptor costs tens of microseconds (oneDNN's own cache keeps primitives, not
// descriptors), which matters for ops that take a few hundred. Keys are byte strings built
// from everything that decides the primitive (see KeyBuilder).
#pragma once

#include <dnnl.hpp>

#include <cstring>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>

#include "kernels/onednn_compat.h"

namespace ipex_shim {

class KeyBuilder {
 public:
  // Room for a convolution's key (about 200 bytes) without growing on the way.
  KeyBuilder() { key_.reserve(256); }
  template <class T>
  KeyBuilder& add(const T& value) {
    static_assert(std::is_trivially_copyable<T>::value, "plain values only");
    key_.append(reinterpret_cast<const char*>(&value), sizeof(T));
    return *this;
  }
  KeyBuilder& add(const dnnl::memory::desc& desc) {
    onednn::append_key(&key_, desc);
    return *this;
  }
  // The bytes of a part built beforehand (the same bytes as adding its values here).
  KeyBuilder& add_bytes(const std::string& part) {
    key_.append(part);
    return *this;
  }
  template <class Range>
  KeyBuilder& add_range(const Range& values) {
    add(static_cast<size_t>(values.size()));
    for (const auto& value : values) add(value);
    return *this;
  }
  std::string take() { return std::move(key_); }

 private:
  std::string key_;
};

// Cache of `Entry` values by key; when full it is emptied (shapes in a real program repeat,
// so this only bounds a pathological stream of new shapes). Entries are shared pointers, so
// a caller keeps its entry alive while it runs.
template <class Entry>
class PrimitiveCache {
 public:
  explicit PrimitiveCache(size_t capacity = 1024) : capacity_(capacity) {}

  template <class Make>
  std::shared_ptr<const Entry> get(const std::string& key, Make make) {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      auto it = entries_.find(key);
      if (it != entries_.end()) return it->second;
    }
    auto entry = std::make_shared<const Entry>(make());
    std::lock_guard<std::mutex> lock(mutex_);
    if (entries_.size() >= capacity_) entries_.clear();
    entries_.emplace(key, entry);
    return entry;
  }

 private:
  size_t capacity_;
  std::mutex mutex_;
  std::unordered_map<std::string, std::shared_ptr<const Entry>> entries_;
};

// A cached reorder from one layout/type to another.
std::shared_ptr<const dnnl::reorder> cached_reorder(const dnnl::memory::desc& from,
                                                    const dnnl::memory::desc& to);

}  // namespace ipex_shim
