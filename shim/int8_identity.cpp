#include "shim/int8_identity.h"

#include <c10/core/impl/LocalDispatchKeySet.h>
#include <c10/util/SmallVector.h>
#include <c10/util/intrusive_ptr.h>

#include <cstdio>
#include <cstring>
#include <mutex>
#include <unordered_map>
#include <vector>

#include "kernels/tensor_version.h"
#include "shim/dispatch_key.h"

namespace ipex_shim::int8 {
namespace {

using WeakImpl = c10::weak_intrusive_ptr<c10::TensorImpl, c10::UndefinedTensorImpl>;

struct WeightSeen {
  WeakImpl impl;
  const void* data;
  int64_t version;
  int64_t index;
};

struct StorageAnchor {
  c10::weak_intrusive_ptr<c10::StorageImpl> storage;
  int64_t anchor;
  int64_t producer;
};

// Where an op without a weight stands, before its rank: its kind and its inputs' anchors.
struct Place {
  Kind kind;
  c10::SmallVector<int64_t, 4> anchors;
  bool operator==(const Place& other) const {
    return kind == other.kind && anchors == other.anchors;
  }
};
struct PlaceHash {
  size_t operator()(const Place& place) const {
    size_t hash = static_cast<size_t>(place.kind);
    for (int64_t anchor : place.anchors) hash = hash * 1000003u ^ static_cast<size_t>(anchor);
    return hash;
  }
};

struct Registry {
  std::mutex mutex;
  std::vector<OpInfo> ops;
  std::vector<int64_t> anchor_of;  // per op: the weighted op it hangs on (itself if weighted)
  std::unordered_map<std::string, int64_t> by_key;
  // Places, numbered in order of first appearance, with their keys ("Relu@<anchor key>"), and
  // the op of each place and rank, so that a call after the first builds no string.
  std::unordered_map<Place, int64_t, PlaceHash> places;
  std::vector<std::string> place_keys;
  std::unordered_map<uint64_t, int64_t> by_place_rank;  // place << 32 | rank
  std::unordered_map<const c10::TensorImpl*, WeightSeen> weights;
  std::unordered_map<const c10::StorageImpl*, StorageAnchor> storages;
};

Registry& registry() {
  static Registry* instance = new Registry();
  return *instance;
}

// Per thread: how many ops of each (kind, input anchors) ran on an anchor since it last ran.
// Per thread, so that two threads running the same model do not interleave their counts.
std::unordered_map<int64_t, std::unordered_map<int64_t, uint32_t>>& generation() {
  thread_local std::unordered_map<int64_t, std::unordered_map<int64_t, uint32_t>> counts;
  return counts;
}

std::string join(c10::IntArrayRef values) {
  std::string text;
  for (size_t i = 0; i < values.size(); ++i) {
    if (i) text += 'x';
    text += std::to_string(values[i]);
  }
  return text;
}

// 64-bit FNV-1a over 8-byte words (and the tail bytes): deterministic across processes.
std::string digest(const at::Tensor& weight) {
  at::Tensor bytes = weight.detach().contiguous();
  const auto* data = static_cast<const unsigned char*>(bytes.data_ptr());
  const size_t size = bytes.nbytes();
  uint64_t hash = 1469598103934665603ull;
  size_t i = 0;
  for (; i + 8 <= size; i += 8) {
    uint64_t word;
    std::memcpy(&word, data + i, 8);
    hash = (hash ^ word) * 1099511628211ull;
  }
  for (; i < size; ++i) hash = (hash ^ data[i]) * 1099511628211ull;
  char text[17];
  std::snprintf(text, sizeof(text), "%016llx", static_cast<unsigned long long>(hash));
  return text;
}

int64_t add_op(Registry& reg, Kind kind, const std::string& key, int64_t anchor) {
  auto found = reg.by_key.find(key);
  if (found != reg.by_key.end()) return found->second;
  const int64_t index = static_cast<int64_t>(reg.ops.size());
  reg.ops.push_back(OpInfo{kind, key});
  reg.anchor_of.push_back(anchor < 0 ? index : anchor);
  reg.by_key.emplace(key, index);
  return index;
}

const StorageAnchor* storage_record(Registry& reg, const at::Tensor& tensor) {
  if (!tensor.defined() || !tensor.has_storage()) return nullptr;
  const c10::StorageImpl* storage = tensor.storage().unsafeGetStorageImpl();
  auto it = reg.storages.find(storage);
  if (it == reg.storages.end()) return nullptr;
  // The record's weak reference keeps its storage's memory, so no other storage can have
  // been made at that address: a live storage found here is the one recorded.
  return &it->second;
}

int64_t anchor_of_tensor(Registry& reg, const at::Tensor& tensor) {
  const StorageAnchor* record = storage_record(reg, tensor);
  return record ? record->anchor : kNoOp;
}

}  // namespace

const char* kind_name(Kind kind) {
  switch (kind) {
    case Kind::convolution: return "Convolution";
    case Kind::linear: return "Linear";
    case Kind::matmul: return "Matmul";
    case Kind::batch_norm: return "BatchNorm";
    case Kind::relu: return "Relu";
    case Kind::max_pool: return "MaxPooling";
    case Kind::avg_pool: return "AvgPooling";
    case Kind::adaptive_pool: return "AdaptivePooling";
    case Kind::add: return "Add";
  }
  return "?";
}

bool has_weight(Kind kind) { return kind == Kind::convolution || kind == Kind::linear; }

namespace {

// The op of `weight` if this very tensor ran unchanged before; with reg.mutex held.
int64_t seen_weight(Registry& reg, const at::Tensor& weight) {
  // Found by address, which is enough to be this tensor (as in storage_record: the record's
  // weak reference keeps its memory).
  auto it = reg.weights.find(weight.unsafeGetTensorImpl());
  if (it == reg.weights.end() || it->second.data != weight.data_ptr() ||
      it->second.version != version_of(weight))
    return kNoOp;
  return it->second.index;
}

// `signature()` names the op's parameters ("w=...,s=..."); it is called only for a weight
// not seen before.
template <class Signature>
int64_t identify_weighted(Kind kind, const at::Tensor& weight, Signature signature) {
  Registry& reg = registry();
  int64_t index = kNoOp;
  {
    std::lock_guard<std::mutex> lock(reg.mutex);
    index = seen_weight(reg, weight);
  }
  if (index == kNoOp) {
    std::string base;
    {
      c10::impl::ExcludeDispatchKeyGuard guard(shim_keys());
      base = std::string(kind_name(kind)) + "(" + signature() + ")#" + digest(weight);
    }
    std::lock_guard<std::mutex> lock(reg.mutex);
    // Weight tensors with identical bytes: the first to run keeps the plain key.
    std::string key = base;
    for (int copy = 1;; ++copy) {
      auto found = reg.by_key.find(key);
      if (found == reg.by_key.end()) break;
      // Taken by a live weight tensor other than this one?
      bool taken_by_other = false;
      for (const auto& seen : reg.weights) {
        if (seen.second.index == found->second && seen.first != weight.unsafeGetTensorImpl() &&
            !seen.second.impl.expired()) {
          taken_by_other = true;
          break;
        }
      }
      if (!taken_by_other) break;
      key = base + "." + std::to_string(copy);
    }
    index = add_op(reg, kind, key, kNoOp);
    if (reg.weights.size() > 4096) {
      for (auto it = reg.weights.begin(); it != reg.weights.end();)
        it = it->second.impl.expired() ? reg.weights.erase(it) : std::next(it);
    }
    reg.weights.insert_or_assign(
        weight.unsafeGetTensorImpl(),
        WeightSeen{WeakImpl(weight.getIntrusivePtr()), weight.data_ptr(), version_of(weight), index});
  }
  generation()[index].clear();  // a new generation of the ops hanging on this one
  return index;
}

}  // namespace

int64_t identify_convolution(const at::Tensor& weight, c10::IntArrayRef stride,
                             c10::IntArrayRef padding, c10::IntArrayRef dilation, int64_t groups,
                             bool has_bias) {
  return identify_weighted(Kind::convolution, weight, [&] {
    return "w=" + join(weight.sizes()) + ",s=" + join(stride) + ",p=" + join(padding) +
           ",d=" + join(dilation) + ",g=" + std::to_string(groups) + ",b=" + (has_bias ? "1" : "0");
  });
}

int64_t identify_transposed_convolution(const at::Tensor& weight, c10::IntArrayRef stride,
                                        c10::IntArrayRef padding,
                                        c10::IntArrayRef output_padding,
                                        c10::IntArrayRef dilation, int64_t groups,
                                        bool has_bias) {
  return identify_weighted(Kind::convolution, weight, [&] {
    return "transposed,w=" + join(weight.sizes()) + ",s=" + join(stride) + ",p=" +
           join(padding) + ",op=" + join(output_padding) + ",d=" + join(dilation) +
           ",g=" + std::to_string(groups) + ",b=" + (has_bias ? "1" : "0");
  });
}

int64_t identify_linear(const at::Tensor& weight, bool has_bias) {
  return identify_weighted(Kind::linear, weight, [&] {
    return "w=" + join(weight.sizes()) + ",b=" + (has_bias ? "1" : "0");
  });
}

int64_t known_weighted(const at::Tensor& weight) {
  if (!weight.defined()) return kNoOp;
  Registry& reg = registry();
  std::lock_guard<std::mutex> lock(reg.mutex);
  return seen_weight(reg, weight);
}

int64_t identify_anchored(Kind kind, c10::ArrayRef<const at::Tensor*> inputs) {
  Registry& reg = registry();
  std::lock_guard<std::mutex> lock(reg.mutex);
  Place place{kind, {}};
  int64_t first = kNoOp;
  for (const at::Tensor* input : inputs) {
    const int64_t anchor = input ? anchor_of_tensor(reg, *input) : kNoOp;
    place.anchors.push_back(anchor);
    if (first == kNoOp) first = anchor;
  }
  if (first == kNoOp) return kNoOp;
  auto [it, inserted] = reg.places.try_emplace(place, static_cast<int64_t>(reg.place_keys.size()));
  if (inserted) {
    std::string key = std::string(kind_name(kind)) + "@";
    for (size_t i = 0; i < place.anchors.size(); ++i) {
      if (i) key += ",";
      key += place.anchors[i] == kNoOp ? std::string("-") : reg.ops[place.anchors[i]].key;
    }
    reg.place_keys.push_back(std::move(key));
  }
  const int64_t place_id = it->second;
  const uint32_t rank = generation()[first][place_id]++;
  const uint64_t slot = static_cast<uint64_t>(place_id) << 32 | rank;
  auto found = reg.by_place_rank.find(slot);
  if (found != reg.by_place_rank.end()) return found->second;
  const int64_t index =
      add_op(reg, kind, reg.place_keys[place_id] + "#" + std::to_string(rank), first);
  reg.by_place_rank.emplace(slot, index);
  return index;
}

void produced(int64_t index, const at::Tensor& output) {
  if (index == kNoOp || !output.defined() || !output.has_storage()) return;
  Registry& reg = registry();
  std::lock_guard<std::mutex> lock(reg.mutex);
  if (reg.storages.size() > 8192) {
    for (auto it = reg.storages.begin(); it != reg.storages.end();)
      it = it->second.storage.expired() ? reg.storages.erase(it) : std::next(it);
  }
  const c10::Storage& storage = output.storage();
  reg.storages.insert_or_assign(storage.unsafeGetStorageImpl(),
                                StorageAnchor{storage.getWeakStorageImpl(), reg.anchor_of[index],
                                              index});
}

void produced_by_no_op(const at::Tensor& output) {
  if (!output.defined() || !output.has_storage()) return;
  Registry& reg = registry();
  std::lock_guard<std::mutex> lock(reg.mutex);
  reg.storages.erase(output.storage().unsafeGetStorageImpl());
}

int64_t producer_of(const at::Tensor& tensor) {
  Registry& reg = registry();
  std::lock_guard<std::mutex> lock(reg.mutex);
  const StorageAnchor* record = storage_record(reg, tensor);
  return record ? record->producer : kNoOp;
}

OpInfo op_info(int64_t index) {
  Registry& reg = registry();
  std::lock_guard<std::mutex> lock(reg.mutex);
  return reg.ops.at(static_cast<size_t>(index));
}

int64_t op_count() {
  Registry& reg = registry();
  std::lock_guard<std::mutex> lock(reg.mutex);
  return static_cast<int64_t>(reg.ops.size());
}

}  // namespace ipex_shim::int8
