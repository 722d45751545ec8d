#include "shim/fusion.h"

#include <ATen/core/dispatch/Dispatcher.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_strided.h>
#include <ATen/ops/hardswish.h>
#include <ATen/ops/silu.h>
#include <c10/core/impl/LocalDispatchKeySet.h>
#include <torch/library.h>

#include <array>
#include <atomic>
#include <stdexcept>
#include <mutex>
#include <unordered_map>
#include <vector>

#include "kernels/tensor_version.h"
#include "shim/dispatch_key.h"
#include "shim/int8_identity.h"
#include "shim/int8_modes.h"
#include "shim/log.h"
#include "shim/runtime.h"
#include "shim/torch_compat.h"

namespace ipex_shim::fusion {
namespace {

using WeakTensor = c10::weak_intrusive_ptr<c10::TensorImpl, c10::UndefinedTensorImpl>;

WeakTensor weak(const at::Tensor& tensor) { return WeakTensor(tensor.getIntrusivePtr()); }

// A weak reference to nothing (refers to the undefined-tensor singleton).
WeakTensor nothing() {
  return WeakTensor(c10::intrusive_ptr<c10::TensorImpl, c10::UndefinedTensorImpl>());
}

// Whether `weak_ref` still refers to exactly `tensor`'s TensorImpl. A weak reference keeps
// its target's memory, so no other object can live at that address: comparing addresses
// suffices, without locking (two atomic operations each, several per call).
bool same(const WeakTensor& weak_ref, const at::Tensor& tensor) {
  if (!tensor.defined()) return false;
  return weak_ref._unsafe_get_target() == tensor.unsafeGetTensorImpl();
}

bool same_optional(const WeakTensor& weak_ref, bool was_defined,
                   const c10::optional<at::Tensor>& tensor) {
  const bool defined = tensor && tensor->defined();
  if (defined != was_defined) return false;
  return !defined || same(weak_ref, *tensor);
}

// What was learned about one convolution (keyed by its weight tensor).
struct Site {
  WeakTensor weight = nothing();
  bool has_batch_norm = false;
  WeakTensor gamma = nothing(), beta = nothing(), mean = nothing(), var = nothing();
  bool has_gamma = false, has_beta = false;
  double eps = 0;
  Relu relu = Relu::none;
  float relu_upper = 0.f;  // a clamp's upper bound
  MatmulActivation activation = MatmulActivation::none;  // linear sites
  // A linear site: its chain's result goes straight into the linear of next_weight.
  bool feeds_linear = false;
  bool feeds_convolution = false;  // the chain's result goes straight into a conv2d
  int64_t feeds_pool = -1;  // ... or into this max pool op, which hands it on
  // The chain's result is the addend of a downsample's fused add (and then add_'s self):
  // kept in oneDNN's layout (INT8: as s8 with the output scale of this op, its batch norm).
  int64_t keeps_for_sum = -1;
  WeakTensor next_weight = nothing();  // that conv2d's (or linear's) weight
  // `out += identity` after the batch norm, the identity being the input of the
  // convolution `sum_from` (in the same pass); `relu` is then the relu after the add.
  bool has_sum = false;
  const void* sum_from = nullptr;
  // false: the addend is `sum_from`'s input and this chain's result is add_'s self (a block
  // without downsample). true: the addend is `sum_from`'s batch-norm result, computed
  // earlier, and is add_'s self, while this chain's result is its `other` (the downsample of
  // a block: `out += downsample(x)`); the fused result then moves into self.
  bool sum_of_earlier_result = false;
  // The add is out of place (`x + bn(conv(...))`, either order): add.Tensor returns the sum.
  bool sum_out_of_place = false;
  bool off = false;  // a prediction failed here: never fuse this site again
  // The chain's result, handed over in oneDNN's layout, was read by an op that cannot take
  // the bytes as they are (a mul by a factor per element, a read of a squeeze-excitation's
  // product): its values stay right, so the site still fuses, but never hands its result
  // over again.
  bool hand_over_never = false;
  // The convolution that read this chain's result times a per-channel gate (computed on the
  // handed-over bytes): the product is written in its input scale.
  WeakTensor weight_after_mul = nothing();
};

struct Registry {
  std::mutex mutex;
  std::unordered_map<const c10::TensorImpl*, Site> sites;
};

Registry& registry() {
  static Registry* instance = new Registry();
  return *instance;
}

// The site of `weight`, created if new. Sites of weights that died (a model freed) are
// dropped now and then, so a program that builds many models does not grow the registry.
Site& site_for(Registry& reg, const void* weight) {
  if (reg.sites.size() >= 1024 && reg.sites.size() % 256 == 0) {
    for (auto it = reg.sites.begin(); it != reg.sites.end();)
      it = it->second.weight.expired() ? reg.sites.erase(it) : std::next(it);
  }
  return reg.sites[static_cast<const c10::TensorImpl*>(weight)];
}

std::atomic<bool> g_enabled{false};
std::atomic<uint64_t> g_fused{0}, g_fused_linears{0}, g_mispredictions{0}, g_repairs{0},
    g_handoffs{0}, g_sums_in_place{0};

// A tensor whose values are the fused chain's, not its own.
struct Taint {
  WeakTensor tensor;
  const c10::TensorImpl* impl;
  WeakTensor input, weight;  // what correct_value computes from
  std::function<at::Tensor()> correct_value;
  std::string allowed_op;  // the one op that may read it as it is ("" = none)
  Relu allowed_relu = Relu::none;
  const void* site;
  // Set when the tensor's bytes are in this oneDNN layout (handed to the next convolution).
  std::shared_ptr<const dnnl::memory::desc> layout;
  float layout_scale = 1.f;  // INT8 bytes: their scale
  WeakTensor sum_other = nothing();  // a fused add's other operand (allowed_op "aten::add_")
  uint32_t sum_version = 0;          // its version when the convolution added it
  bool sum_into_other = false;       // this tensor is add_'s other; sum_other is its self
  // A fused convolution's taints: the call itself, to compute a part of its chain again.
  Recompute convolution;
  // An op wrote to sum_other since (seen by the observer: a tensor made under inference
  // mode has no version counter to compare).
  bool sum_written = false;
  // A chain's result handed over in oneDNN's layout: its value computed again from the
  // chain's inputs, for when a downsample's sum has gone over its bytes (summed_over).
  std::function<at::Tensor()> recomputed;
  bool summed_over = false;
  // correct_value holds what it computes from (it reads no tensor the program may drop or
  // change), so it can stand as the value of the relu's result when a sum goes over that
  // result's bytes (a plain residual block's output, which the next block adds).
  bool value_holds = false;
  // A linear's fused result (its relu's): the relu ends a linear's chain, not a convolution's.
  bool from_linear = false;
};

// What an unfused op of a site last produced, for learning who consumes it.
struct Produced {
  WeakTensor output = nothing();
  WeakTensor weight = nothing();  // the site's weight
  uint32_t version = 0;           // the output's version when produced
  const void* site = nullptr;

  void record(const at::Tensor& produced, const WeakTensor& site_weight, const void* site_id) {
    output = weak(produced);
    weight = site_weight;
    version = version_of(produced);
    site = site_id;
  }
  // The site whose output `input` is, untouched since (`version_now`: its version before
  // the consumer ran), or nullptr. Either way the record is used up.
  const void* take_if_consumed_by(const at::Tensor& input, uint32_t version_now) {
    const void* found = site && same(output, input) && version_now == version ? site : nullptr;
    site = nullptr;
    return found;
  }
};

// The results of convolution chains: the newest is the handoff's candidate (its consumer is
// learned); the ones before it are kept too, for a torch.cat that joins several chains'
// results (inception's branches).
struct ChainEnds : Produced {
  std::array<Produced, 16> recent;
  size_t next = 0;

  void record(const at::Tensor& produced, const WeakTensor& site_weight, const void* site_id) {
    Produced::record(produced, site_weight, site_id);
    recent[next++ % recent.size()].record(produced, site_weight, site_id);
  }
  // The site whose chain ended in `tensor`, untouched since, or nullptr.
  const void* site_of(const at::Tensor& tensor) const {
    for (const Produced& end : recent)
      if (end.site && same(end.output, tensor) && version_of(tensor) == end.version)
        return end.site;
    return nullptr;
  }
};

// Per thread: the tainted tensors and what the last unfused ops produced.
struct ThreadState {
  std::vector<Taint> taints;
  Produced convolution, batch_norm, linear;
  Produced linear_end;  // the end of a linear's chain (its result or its activation's)
  ChainEnds chain_end;  // the last results of convolutions' chains (for the handoff)
  // torch.cat calls of chains' results (learning): what each returned, and the chains'
  // sites, until an op reads the result (inception's last blocks join two cats' results in
  // a third, so a few are kept).
  struct Joined {
    WeakTensor output = nothing();
    uint32_t version = 0;
    std::vector<const void*> sites;
  };
  std::array<Joined, 4> joined;
  size_t next_joined = 0;
  // The record of the learning cat whose untouched result `tensor` is, or nullptr.
  Joined* joined_by(const at::Tensor& tensor) {
    for (Joined& record : joined)
      if (!record.sites.empty() && same(record.output, tensor) &&
          version_of(tensor) == record.version)
        return &record;
    return nullptr;
  }
  Produced sum;        // a batch norm's result after `+= identity` (learning)
  Produced mul;        // a product of handed-over bytes and a gate (learning its reader)
  // Per convolution site, the input of its last call in this thread: the identity a later
  // convolution of the same residual block adds.
  std::unordered_map<const void*, WeakTensor> last_input;
  // Per convolution site with a batch norm, the batch norm's last result in this thread: the
  // addend of a downsample's fused add.
  std::unordered_map<const void*, WeakTensor> last_output;
  // Storage of fused convolution outputs written in oneDNN's layout, and that layout.
  struct Kept {
    c10::weak_intrusive_ptr<c10::StorageImpl> storage;
    dnnl::memory::desc layout;
    float scale;  // INT8: the bytes' scale; 1 for floating point
  };
  std::vector<Kept> kept;
};

// Notes `tensor` as `site`'s last input or output in this thread; entries of dead tensors
// are dropped now and then, so a program that builds many models does not grow the map.
void remember(std::unordered_map<const void*, WeakTensor>* last, const void* site,
              const at::Tensor& tensor) {
  if (last->size() > 256) {
    for (auto it = last->begin(); it != last->end();)
      it = it->second.expired() ? last->erase(it) : std::next(it);
  }
  last->insert_or_assign(site, weak(tensor));
}

ThreadState& state() {
  thread_local ThreadState instance;
  return instance;
}

void set_observing(bool on) {
  c10::impl::tls_set_dispatch_key_included(observer_key(), on);
}

void switch_off(const void* site) {
  Registry& reg = registry();
  std::lock_guard<std::mutex> lock(reg.mutex);
  auto it = reg.sites.find(static_cast<const c10::TensorImpl*>(site));
  if (it != reg.sites.end() && !it->second.off) {
    it->second.off = true;
    log_limited("fusion-off", 3, Severity::info,
                "fusion: a prediction failed (the program used a fused tensor differently); "
                "values were recomputed and that op is no longer fused");
  }
}

// A prediction that only the handoff got wrong: the fused values are right, their layout
// is not what the reader expects.
void stop_handing_over(const void* site) {
  Registry& reg = registry();
  std::lock_guard<std::mutex> lock(reg.mutex);
  auto it = reg.sites.find(static_cast<const c10::TensorImpl*>(site));
  if (it != reg.sites.end() && !it->second.hand_over_never) {
    it->second.hand_over_never = true;
    it->second.feeds_convolution = false;
    it->second.feeds_linear = false;
    it->second.feeds_pool = -1;
    it->second.keeps_for_sum = -1;
    // The values were right, only their layout was not what the reader takes: told only
    // when asked for.
    if (runtime_settings().verbose >= 1)
      log_limited("fusion-handoff-off", 3, Severity::info,
                  "fusion: a result kept in oneDNN's layout for the next op was read by "
                  "another op too; its values were reordered, and that result is no longer "
                  "kept so");
  }
}

void drop_dead_taints(ThreadState& st) {
  auto& taints = st.taints;
  for (size_t i = 0; i < taints.size();) {
    if (taints[i].tensor.expired()) {
      taints[i] = std::move(taints.back());
      taints.pop_back();
    } else {
      ++i;
    }
  }
  if (taints.empty()) set_observing(false);
}

Taint* find_taint(ThreadState& st, const at::Tensor& tensor) {
  if (!tensor.defined()) return nullptr;
  for (Taint& taint : st.taints)
    if (taint.impl == tensor.unsafeGetTensorImpl() && same(taint.tensor, tensor)) return &taint;
  return nullptr;
}

void erase_taint(ThreadState& st, Taint* taint) {
  *taint = std::move(st.taints.back());
  st.taints.pop_back();
  if (st.taints.empty()) set_observing(false);
}

// Gives the tainted tensor its correct value in fresh storage (its aliases keep the old
// one) and forgets the taint. The taint leaves the list before the value is computed: the
// computation may repair others (a handed-over input first), which changes the list.
void repair(ThreadState& st, Taint* taint) {
  WeakTensor tensor = taint->tensor;
  std::function<at::Tensor()> correct_value = std::move(taint->correct_value);
  erase_taint(st, taint);
  auto locked = tensor.lock();
  if (!locked) return;
  at::Tensor correct;
  {
    c10::impl::ExcludeDispatchKeyGuard guard(shim_keys());
    correct = correct_value();
  }
  if (correct.strides() != locked->strides() || correct.storage_offset() != 0) {
    // Not expected (every correct value is made in the tensor's own layout), but the
    // tensor's metadata must stay as the program knows it.
    c10::impl::ExcludeDispatchKeyGuard guard(shim_keys());
    at::Tensor laid_out =
        at::empty_strided(locked->sizes(), locked->strides(), correct.options());
    laid_out.copy_(correct);
    correct = laid_out;
  }
  // The op that made the value (as INT8 identities know it) made the new bytes too: ops that
  // read them later are known by that op, as in the calibration run, which ran stock.
  const int64_t producer =
      int8::tracking() ? int8::producer_of(at::Tensor(locked)) : int8::kNoOp;
  locked->set_storage_keep_dtype(correct.storage());
  locked->set_storage_offset(correct.storage_offset());
  if (producer != int8::kNoOp) int8::produced(producer, at::Tensor(locked));
  g_repairs.fetch_add(1, std::memory_order_relaxed);
}

// The ops whose wrappers take an input handed over in oneDNN's layout as it is (or settle it).
bool pools_handed_over_bytes(const std::string& op) {
  return op == "aten::max_pool2d" || op == "aten::avg_pool2d" ||
         op == "aten::adaptive_avg_pool2d";
}

// A tainted tensor read by an op that was not predicted: a handoff's bytes (whose values
// were right) stop the site's handoffs, any other failed prediction the site's fusion; the
// tensor is repaired.
void misread(ThreadState& st, Taint* taint) {
  g_mispredictions.fetch_add(1, std::memory_order_relaxed);
  if (taint->layout &&
      (taint->allowed_op == "aten::conv2d" || taint->allowed_op == "aten::linear")) {
    stop_handing_over(taint->site);
  } else {
    switch_off(taint->site);
  }
  repair(st, taint);
}

// A read of `tensor` by `op`: unless `op` is the predicted consumer, repair it. A read of
// what a tainted tensor is computed from (it may be about to change) repairs that first.
void check_read(ThreadState& st, const at::Tensor& tensor, const std::string& op) {
  if (!tensor.defined()) return;
  for (size_t i = 0; i < st.taints.size();) {
    Taint& taint = st.taints[i];
    if (same(taint.input, tensor) || same(taint.weight, tensor)) {
      // The program works on the convolution's input or weight while its fused result is
      // still open: repair now, and do not predict this site again (it would repeat).
      g_mispredictions.fetch_add(1, std::memory_order_relaxed);
      switch_off(taint.site);
      repair(st, &taint);
      continue;
    }
    ++i;
  }
  Taint* taint = find_taint(st, tensor);
  if (taint == nullptr || (!taint->allowed_op.empty() && taint->allowed_op == op)) return;
  // Bytes handed over in oneDNN's layout: the pooling wrappers, torch.cat's and mul.Tensor's
  // (its kernel at this key, which names its overload; the fallback sees only mul's others)
  // read them as they are, or settle them first.
  if (taint->layout && taint->allowed_op == "aten::conv2d" &&
      (pools_handed_over_bytes(op) || op == "aten::cat" || op == "aten::mul.Tensor"))
    return;
  misread(st, taint);
}

// An op writes to `tensor` (an argument the schema marks as written): a fused add whose
// addend it is no longer adds the addend's current value.
void note_write(ThreadState& st, const at::Tensor& tensor) {
  if (!tensor.defined()) return;
  for (Taint& taint : st.taints)
    if (same(taint.sum_other, tensor)) taint.sum_written = true;
}

// The observer: sees every op of a thread that holds tainted tensors.
void observe(const c10::OperatorHandle& op, c10::DispatchKeySet keys, torch::jit::Stack* stack) {
  ThreadState& st = state();
  drop_dead_taints(st);
  if (!st.taints.empty()) {
    const std::string& name = op.schema().name();
    const size_t count = op.schema().arguments().size();
    // The fused `out += identity` (or `identity + out`): the identity is read by the
    // convolution that fused it, not by this add (which the shim answers), so it must not be
    // repaired here.
    const at::Tensor* skip = nullptr;
    if ((name == "aten::add_" || name == "aten::add") && count >= 2) {
      auto args = torch::jit::last(*stack, count);
      if (args[0].isTensor() && args[1].isTensor()) {
        Taint* self = find_taint(st, args[0].toTensor());
        Taint* other = find_taint(st, args[1].toTensor());
        if (self && self->allowed_op == "aten::add_" && same(self->sum_other, args[1].toTensor()) &&
            version_of(args[1].toTensor()) == self->sum_version && !self->sum_written)
          skip = &args[1].toTensor();
        // `identity + out` (out of place, either order): the identity was read by the
        // convolution that fused the add.
        if (name == "aten::add" && other && other->allowed_op == "aten::add" &&
            same(other->sum_other, args[0].toTensor()) &&
            version_of(args[0].toTensor()) == other->sum_version && !other->sum_written)
          skip = &args[0].toTensor();
        if (name == "aten::add" && self && self->allowed_op == "aten::add" &&
            same(self->sum_other, args[1].toTensor()) &&
            version_of(args[1].toTensor()) == self->sum_version && !self->sum_written)
          skip = &args[1].toTensor();
        // A downsample's fused add: self's bytes (kept in oneDNN's layout) were read by the
        // convolution.
        if (other && other->allowed_op == "aten::add_" && other->sum_into_other &&
            same(other->sum_other, args[0].toTensor()) &&
            version_of(args[0].toTensor()) == other->sum_version && !other->sum_written)
          skip = &args[0].toTensor();
      }
    }
    // dropout outside training returns its input itself: not a read of the bytes (the
    // feed-forward block's dropout between its activation and its second linear).
    if (name == "aten::dropout" && count == 3) {
      const c10::IValue& train = torch::jit::last(*stack, count)[2];
      if (train.isBool() && !train.toBool()) {
        op.redispatchBoxed(
            keys & c10::DispatchKeySet(c10::DispatchKeySet::FULL_AFTER, observer_key()), stack);
        return;
      }
    }
    // A traced module calls aten::_convolution where eager code calls conv2d: a direct one
    // reads a handed-over input as conv2d does (its wrapper hands it to conv2d's).
    const std::string* reader = &name;
    static const std::string kConv2d = "aten::conv2d";
    if (name == "aten::_convolution" && count >= 7) {
      const c10::IValue& transposed = torch::jit::last(*stack, count)[6];
      if (transposed.isBool() && !transposed.toBool()) reader = &kConv2d;
    }
    const auto& arguments = op.schema().arguments();
    size_t index = 0;
    for (const c10::IValue& value : torch::jit::last(*stack, count)) {
      const auto* alias = arguments[index++].alias_info();
      if (skip && value.isTensor() && value.toTensor().is_same(*skip)) continue;
      if (alias && alias->isWrite()) {
        if (value.isTensor()) {
          note_write(st, value.toTensor());
        } else if (value.isTensorList()) {
          for (at::Tensor tensor : value.toTensorList()) note_write(st, tensor);
        }
      }
      if (value.isTensor()) {
        check_read(st, value.toTensor(), *reader);
      } else if (value.isTensorList()) {
        for (at::Tensor tensor : value.toTensorList()) check_read(st, tensor, *reader);
      } else if (value.isList()) {
        for (const c10::IValue& item : value.toListRef())
          if (item.isTensor()) check_read(st, item.toTensor(), *reader);
      }
      if (st.taints.empty()) break;
    }
  }
  op.redispatchBoxed(keys & c10::DispatchKeySet(c10::DispatchKeySet::FULL_AFTER, observer_key()),
                     stack);
}

void add_taint(ThreadState& st, const at::Tensor& tensor, WeakTensor input, WeakTensor weight,
               std::function<at::Tensor()> correct, std::string allowed_op, Relu allowed_relu,
               const void* site, Recompute convolution = nullptr) {
  st.taints.push_back(Taint{weak(tensor), tensor.unsafeGetTensorImpl(), std::move(input),
                            std::move(weight), std::move(correct), std::move(allowed_op),
                            allowed_relu, site, nullptr, 1.f, nothing(), 0, false,
                            std::move(convolution), false, nullptr, false});
  set_observing(true);
}

// A new tensor over `tensor`'s storage that is not a view of it: an autograd view would keep
// `tensor` alive (and with it the taint of the convolution's raw output).
at::Tensor share_storage(const at::Tensor& tensor) {
  c10::impl::ExcludeDispatchKeyGuard guard(shim_keys());
  at::Tensor shared = at::empty({0}, tensor.options());
  shared.set_(tensor.storage(), tensor.storage_offset(), tensor.sizes(), tensor.strides());
  return shared;
}

// When `tensor`'s storage holds bytes a kernel kept for the next op (st.kept), taints it so
// that only `reader` reads them as they are; any other read repairs it from them. `rows`:
// the kernel wrote them as a plain matrix (a linear's rows x features), which the tensor's
// own shape and strides then describe.
void taint_kept(ThreadState& st, const at::Tensor& tensor, const void* site, const char* reader,
                bool rows, std::function<at::Tensor()> recomputed = nullptr) {
  const c10::StorageImpl* storage = tensor.storage().unsafeGetStorageImpl();
  for (size_t i = 0; i < st.kept.size(); ++i) {
    if (st.kept[i].storage.lock().get() != storage) continue;
    const dnnl::memory::desc& kept = st.kept[i].layout;
    auto layout = std::make_shared<const dnnl::memory::desc>(
        rows ? dnnl::memory::desc(
                   dnnl::memory::dims(tensor.sizes().begin(), tensor.sizes().end()),
                   onednn::data_type_of(kept),
                   dnnl::memory::dims(tensor.strides().begin(), tensor.strides().end()))
             : kept);
    const float scale = st.kept[i].scale;
    st.kept.erase(st.kept.begin() + static_cast<long>(i));
    WeakTensor self = weak(tensor);
    st.taints.push_back(Taint{self, tensor.unsafeGetTensorImpl(), nothing(), nothing(),
                              [self, layout, scale] {
                                auto locked = self.lock();
                                return from_layout(at::Tensor(locked), *layout, scale);
                              },
                              reader, Relu::none, site, layout, scale, nothing(), 0, false,
                              nullptr, false, std::move(recomputed), false});
    set_observing(true);
    return;
  }
}

// `tensor` ends a convolution chain: remember it for learning, and if its storage holds
// oneDNN's layout, taint it so that only the next convolution reads it as it is.
// `recomputed`: its value from the chain's inputs, if known (then a downsample's fused add
// may sum over its bytes).
void chain_ends(ThreadState& st, const at::Tensor& tensor, const void* site,
                std::function<at::Tensor()> recomputed = nullptr) {
  st.chain_end.record(tensor, nothing(), site);
  taint_kept(st, tensor, site, "aten::conv2d", false, std::move(recomputed));
}

// `tensor` ends a linear's chain: remember it (for learning its reader), and when its
// storage holds bytes kept for the next linear, taint it so that only a linear reads them
// as they are.
void linear_chain_ends(ThreadState& st, const at::Tensor& tensor, const WeakTensor& weight,
                       const void* site) {
  st.linear_end.record(tensor, weight, site);
  taint_kept(st, tensor, site, "aten::linear", true);
}

// A sum went (or may have gone) over `addend`'s bytes: its value comes from recomputing it
// from now on, and no op may read those bytes as its own (the taint stays for the predicted
// add_, which knows).
void value_from_recomputing(ThreadState& st, const at::Tensor& addend) {
  Taint* kept = find_taint(st, addend);
  if (kept == nullptr || !kept->recomputed) return;
  kept->correct_value = kept->recomputed;
  kept->summed_over = true;
  kept->allowed_op.clear();
  kept->layout = nullptr;
}

// A convolution added its addend: the bytes of chain results it did not sum over will not be
// summed over later (the next sum comes in the next block, over that block's own input), so
// their recomputed values are dropped, and with them the tensors they hold. Without this, a
// stage's chain of recomputed values (each holding its block's convolution input) would hold
// the stage before it through the downsample's input, and so on back to the network's input.
void forget_recomputing(ThreadState& st) {
  for (Taint& taint : st.taints)
    if (taint.recomputed && !taint.summed_over) taint.recomputed = nullptr;
}

// The value a relu (or clamp) gives `before()`, computed again.
std::function<at::Tensor()> relu_of(std::function<at::Tensor()> before, Relu kind,
                                    float upper) {
  return [before = std::move(before), kind, upper] {
    at::Tensor value = before();
    switch (kind) {
      case Relu::clamp_in_place:
      case Relu::clamp_out_of_place: return value.clamp_(0.f, upper);
      case Relu::silu_in_place:
      case Relu::silu_out_of_place: return at::silu_(value);
      case Relu::hardswish_in_place:
      case Relu::hardswish_out_of_place: return at::hardswish_(value);
      default: return value.relu_();
    }
  };
}

const char* relu_op_name(Relu kind) {
  switch (kind) {
    case Relu::in_place: return "aten::relu_";
    case Relu::clamp_in_place: return "aten::hardtanh_";
    case Relu::clamp_out_of_place: return "aten::hardtanh";
    case Relu::silu_in_place: return "aten::silu_";
    case Relu::silu_out_of_place: return "aten::silu";
    case Relu::hardswish_in_place: return "aten::hardswish_";
    case Relu::hardswish_out_of_place: return "aten::hardswish";
    default: return "aten::relu";
  }
}

// Applies `change` to the learned site `site` when it is registered and still fusable.
template <class Change>
void teach_site(const void* site, Change change) {
  Registry& reg = registry();
  std::lock_guard<std::mutex> lock(reg.mutex);
  auto it = reg.sites.find(static_cast<const c10::TensorImpl*>(site));
  if (it != reg.sites.end() && !it->second.off) change(it->second);
}

// `input` is the tensor a learned torch.cat of chains' results returned, untouched since:
// each of those chains learns (`teach`) where its result goes after the cat, so that later
// passes keep it in oneDNN's layout for that op. That cat's record is used up (only the
// first reader of the joined tensor teaches); the others stay for their own readers.
template <class Teach>
void teach_joined(ThreadState& st, const at::Tensor& input, Teach teach) {
  ThreadState::Joined* record = st.joined_by(input);
  if (record == nullptr) return;
  std::vector<const void*> sites = std::move(record->sites);
  record->sites.clear();
  Registry& reg = registry();
  std::lock_guard<std::mutex> lock(reg.mutex);
  for (const void* site : sites) {
    auto it = reg.sites.find(static_cast<const c10::TensorImpl*>(site));
    if (it != reg.sites.end() && !it->second.off) teach(it->second);
  }
}

}  // namespace

bool install(std::string* why) {
  auto& dispatcher = c10::Dispatcher::singleton();
  if (dispatcher.hasBackendFallbackForDispatchKey(observer_key())) {
    *why = std::string("this torch already has a fallback at ") + c10::toString(observer_key());
    return false;
  }
  auto* library =
      new torch::Library(torch::Library::IMPL, "_", observer_key(), __FILE__, __LINE__);
  library->fallback(torch::CppFunction::makeFromBoxedFunction<&observe>());
  g_enabled = true;
  return true;
}

bool enabled() { return g_enabled.load(std::memory_order_relaxed) && runtime_settings().fusion; }

// The learned site of `weight`, when it is that very tensor's and still fusable; with
// reg.mutex held. A site left by a dead tensor whose address was reused is dropped.
const Site* live_site(Registry& reg, const at::Tensor& weight) {
  auto it = reg.sites.find(weight.unsafeGetTensorImpl());
  if (it == reg.sites.end()) return nullptr;
  if (!same(it->second.weight, weight)) {
    reg.sites.erase(it);
    return nullptr;
  }
  return it->second.off ? nullptr : &it->second;
}

ConvolutionPlan plan_convolution(const at::Tensor& weight) {
  ConvolutionPlan plan;
  plan.weight = weight;
  if (!enabled()) return plan;
  Registry& reg = registry();
  std::lock_guard<std::mutex> lock(reg.mutex);
  const Site* found = live_site(reg, weight);
  if (found == nullptr) return plan;
  const Site& site = *found;
  if (!site.has_batch_norm && site.relu == Relu::none) return plan;
  plan.relu = site.relu;
  plan.relu_upper = site.relu_upper;
  const bool feeds_convolution = site.feeds_convolution && !site.hand_over_never;
  const bool feeds_pool = site.feeds_pool >= 0 && !site.hand_over_never;
  const bool keeps_for_sum = site.keeps_for_sum >= 0 && !site.hand_over_never;
  if (feeds_convolution) {
    if (auto next = site.next_weight.lock()) plan.next_weight = at::Tensor(next);
  }
  if (feeds_pool && !feeds_convolution) plan.next_pool = site.feeds_pool;
  if (keeps_for_sum && !feeds_convolution && !feeds_pool) plan.keep_for_op = site.keeps_for_sum;
  if (site.has_sum) {
    // The relu comes after the add: without the identity, only the batch norm is fused.
    plan.relu = Relu::none;
    ThreadState& st = state();
    auto& sources = site.sum_of_earlier_result ? st.last_output : st.last_input;
    auto found = sources.find(site.sum_from);
    if (found != sources.end()) {
      if (auto identity = found->second.lock()) {
        plan.sum = at::Tensor(identity);
        plan.relu = site.relu;
        if (!site.sum_out_of_place) {
          // `out += downsample(x)`: out's bytes may be summed over if only out holds them
          // and its value can be recomputed. `out += x` of a plain block likewise over x's
          // bytes: x is the block's input, handed over to its first convolution, which has
          // read it by now; the add reads it next (the shim answers it) and then, in a
          // residual network, nothing does.
          const Taint* kept = find_taint(st, plan.sum);
          plan.sum_in_place = kept && kept->layout && kept->recomputed && !kept->summed_over &&
                              plan.sum.storage().use_count() == 1;
        }
      }
    }
  }
  if (!site.has_batch_norm) {  // conv -> relu
    plan.fuse = true;
    plan.keep_layout = feeds_convolution || feeds_pool || keeps_for_sum;
    return plan;
  }
  auto gamma = site.gamma.lock(), beta = site.beta.lock(), mean = site.mean.lock(),
       var = site.var.lock();
  if (!mean || !var || (site.has_gamma && !gamma) || (site.has_beta && !beta)) return plan;
  plan.fuse = true;
  plan.fold_batch_norm = true;
  plan.keep_layout = feeds_convolution || feeds_pool || keeps_for_sum;
  plan.batch_norm.mean = at::Tensor(mean);
  plan.batch_norm.var = at::Tensor(var);
  if (site.has_gamma) plan.batch_norm.gamma = at::Tensor(gamma);
  if (site.has_beta) plan.batch_norm.beta = at::Tensor(beta);
  plan.batch_norm.eps = site.eps;
  return plan;
}

void after_convolution(const at::Tensor& input, const at::Tensor& output,
                       const ConvolutionPlan& plan, Recompute recompute,
                       const dnnl::memory::desc* kept_layout, float kept_scale) {
  ThreadState& st = state();
  const void* site = plan.weight.unsafeGetTensorImpl();
  remember(&st.last_input, site, input);
  teach_joined(st, input, [&](Site& joined) {
    joined.feeds_convolution = true;
    joined.next_weight = weak(plan.weight);
  });
  if (const void* producer = st.chain_end.take_if_consumed_by(input, version_of(input))) {
    if (input.dim() == 4) {  // the handoff is taught for conv2d consumers
      teach_site(producer, [&](Site& chain) {
        chain.feeds_convolution = true;
        chain.next_weight = weak(plan.weight);
      });
    }
  }
  if (const void* producer = st.mul.take_if_consumed_by(input, version_of(input)))
    teach_site(producer, [&](Site& chain) { chain.weight_after_mul = weak(plan.weight); });
  if (!plan.fuse) {
    st.convolution.record(output, weak(plan.weight), site);
    return;
  }
  if (kept_layout) {
    st.kept.push_back({output.storage().getWeakStorageImpl(), *kept_layout, kept_scale});
    if (st.kept.size() > 64) st.kept.erase(st.kept.begin());  // chains that never ended
  }
  g_fused.fetch_add(1, std::memory_order_relaxed);
  drop_dead_taints(st);
  // The convolution's own output should hold the raw convolution. Its one allowed reader
  // is the predicted batch norm or, without one, the predicted relu.
  const bool to_batch_norm = plan.fold_batch_norm;
  add_taint(st, output, weak(input), weak(plan.weight),
            [recompute] { return recompute(ConvolutionPostOps{}); },
            to_batch_norm ? "aten::batch_norm" : relu_op_name(plan.relu),
            to_batch_norm ? Relu::none : plan.relu, site, recompute);
  if (plan.sum_in_place && output.has_storage() && plan.sum.has_storage() &&
      compat::storage_bytes(output.storage()) == compat::storage_bytes(plan.sum.storage())) {
    g_sums_in_place.fetch_add(1, std::memory_order_relaxed);
    value_from_recomputing(st, plan.sum);
  }
  if (plan.sum.defined()) {
    forget_recomputing(st);
    st.taints.back().sum_other = weak(plan.sum);
    st.taints.back().sum_version = version_of(plan.sum);
    Registry& reg = registry();
    std::lock_guard<std::mutex> lock(reg.mutex);
    auto it = reg.sites.find(static_cast<const c10::TensorImpl*>(site));
    st.taints.back().sum_into_other = it != reg.sites.end() &&
                                      it->second.sum_of_earlier_result &&
                                      !it->second.sum_out_of_place;
  }
}

void sum_in_place_failed(const ConvolutionPlan& plan) {
  if (plan.sum_in_place) value_from_recomputing(state(), plan.sum);
}

c10::optional<at::Tensor> answer_batch_norm(const at::Tensor& input,
                                            const c10::optional<at::Tensor>& weight,
                                            const c10::optional<at::Tensor>& bias,
                                            const c10::optional<at::Tensor>& mean,
                                            const c10::optional<at::Tensor>& var, bool training,
                                            double eps) {
  ThreadState& st = state();
  if (st.taints.empty()) return c10::nullopt;
  Taint* taint = find_taint(st, input);
  if (taint == nullptr || taint->allowed_op != "aten::batch_norm") return c10::nullopt;

  Site site;
  {
    Registry& reg = registry();
    std::lock_guard<std::mutex> lock(reg.mutex);
    auto it = reg.sites.find(static_cast<const c10::TensorImpl*>(taint->site));
    if (it != reg.sites.end()) site = it->second;
  }
  const bool predicted = site.has_batch_norm && !training && eps == site.eps &&
                         same_optional(site.gamma, site.has_gamma, weight) &&
                         same_optional(site.beta, site.has_beta, bias) &&
                         same_optional(site.mean, true, mean) && same_optional(site.var, true, var);
  if (!predicted || !taint->convolution) {
    check_read(st, input, "");  // repairs: the batch norm must see the raw convolution
    return c10::nullopt;
  }
  at::Tensor output = share_storage(input);
  const void* site_id = taint->site;
  Recompute convolution = taint->convolution;
  WeakTensor conv_input = taint->input, conv_weight = taint->weight;
  WeakTensor sum_other = taint->sum_other;
  const uint32_t sum_version = taint->sum_version;
  const bool sum_written = taint->sum_written;
  const bool sum_into_other = taint->sum_into_other;
  remember(&st.last_output, site_id, output);
  taint->allowed_op.clear();  // from now on any read of the convolution's output repairs it
  // The batch norm's own result (before an add or a relu the convolution also did): the
  // same convolution with only the batch norm folded in.
  BatchNormFold fold;
  fold.mean = *mean;
  fold.var = *var;
  if (weight && weight->defined()) fold.gamma = *weight;
  if (bias && bias->defined()) fold.beta = *bias;
  fold.eps = eps;
  auto batch_norm_value = [convolution, fold] {
    return convolution(ConvolutionPostOps{&fold, false});
  };
  if (!sum_other.expired()) {
    // Next comes `out += identity` (or `identity + out`), which the convolution already did.
    add_taint(st, output, conv_input, conv_weight, batch_norm_value,
              site.sum_out_of_place ? "aten::add" : "aten::add_", Relu::none, site_id,
              convolution);
    st.taints.back().sum_other = sum_other;
    st.taints.back().sum_version = sum_version;
    st.taints.back().sum_written = sum_written;
    st.taints.back().sum_into_other = sum_into_other;
  } else if (site.relu != Relu::none && !site.has_sum) {
    add_taint(st, output, conv_input, conv_weight, batch_norm_value, relu_op_name(site.relu),
              site.relu, site_id, convolution);
  } else {
    chain_ends(st, output, site_id, batch_norm_value);
  }
  return output;
}

void after_batch_norm(const at::Tensor& input, const at::Tensor& output,
                      const c10::optional<at::Tensor>& weight, const c10::optional<at::Tensor>& bias,
                      const c10::optional<at::Tensor>& mean, const c10::optional<at::Tensor>& var,
                      bool training, double eps) {
  if (!enabled()) return;
  ThreadState& st = state();
  // Consumed as the convolution left it: nothing changed it in place in between.
  const WeakTensor conv_weight = st.convolution.weight;
  const void* site_id = st.convolution.take_if_consumed_by(input, version_of(input));
  st.batch_norm.site = nullptr;
  const bool follows = site_id != nullptr;
  if (!follows || training || !(mean && mean->defined() && var && var->defined())) return;
  Registry& reg = registry();
  std::lock_guard<std::mutex> lock(reg.mutex);
  Site& site = site_for(reg, site_id);
  if (site.off) return;
  site.weight = conv_weight;
  site.has_batch_norm = true;
  site.has_gamma = weight && weight->defined();
  site.has_beta = bias && bias->defined();
  site.gamma = site.has_gamma ? weak(*weight) : nothing();
  site.beta = site.has_beta ? weak(*bias) : nothing();
  site.mean = weak(*mean);
  site.var = weak(*var);
  site.eps = eps;
  site.relu = Relu::none;
  site.relu_upper = 0.f;
  site.has_sum = false;  // learned again by after_add
  site.sum_of_earlier_result = false;
  site.sum_out_of_place = false;
  st.batch_norm.record(output, conv_weight, site_id);
  remember(&st.last_output, site_id, output);
  st.chain_end.record(output, nothing(), site_id);
}

namespace {

// Teaches `site_id` (a convolution with its batch norm) that its result is added to `from`'s
// input (earlier_result: to `from`'s batch-norm result), in place or not; the relu after the
// add is learned next. With reg.mutex held; false when the site cannot fuse.
bool learn_sum(Registry& reg, const void* site_id, const void* from, bool earlier_result,
               bool out_of_place) {
  auto it = reg.sites.find(static_cast<const c10::TensorImpl*>(site_id));
  if (it == reg.sites.end() || it->second.off || !it->second.has_batch_norm) return false;
  Site& site = it->second;
  site.has_sum = true;
  site.sum_from = from;
  site.sum_of_earlier_result = earlier_result;
  site.sum_out_of_place = out_of_place;
  site.relu = Relu::none;
  site.relu_upper = 0.f;
  return true;
}

// The relu a site learned to fuse (none for a site that is gone).
Relu learned_relu(const void* site) {
  Registry& reg = registry();
  std::lock_guard<std::mutex> lock(reg.mutex);
  auto it = reg.sites.find(static_cast<const c10::TensorImpl*>(site));
  return it != reg.sites.end() ? it->second.relu : Relu::none;
}

// `self += other` where `other` is a downsample's fused chain that already added self: the
// fused result moves into self's TensorImpl (which must be self's storage's only user, so
// no view of the old storage misses the update), and self's old values are kept for a
// repair.
bool answer_add_into_self(ThreadState& st, Taint* taint, const at::Tensor& self,
                          const at::Tensor& other, const at::Scalar& alpha) {
  // The convolution summed over self's own memory: other's storage holds self's too.
  Taint* kept = find_taint(st, self);
  const bool summed_over = kept && kept->summed_over;
  if (!same(taint->sum_other, self) || version_of(self) != taint->sum_version ||
      taint->sum_written ||
      alpha.isComplex() || alpha.toDouble() != 1.0 ||
      self.storage().use_count() != (summed_over ? 2 : 1) ||
      self.storage_offset() != 0 || !self.strides().equals(other.strides()) ||
      !self.sizes().equals(other.sizes()) || other.storage_offset() != 0) {
    check_read(st, other, "");  // not the add that was fused: repair first
    return false;
  }
  const Relu relu = learned_relu(taint->site);
  const void* site = taint->site;
  // self's values (or INT8 bytes) before the add, unless the sum went over them
  at::Tensor old_self = summed_over ? at::Tensor() : share_storage(self);
  std::shared_ptr<const dnnl::memory::desc> old_layout;
  float old_scale = 1.f;
  std::function<at::Tensor()> old_value_recomputed;  // when its bytes were summed over
  if (kept) {
    if (!kept->layout && !summed_over) {  // a fused value that is not yet self's
      check_read(st, other, "");
      return false;
    }
    old_layout = kept->layout;
    old_scale = kept->layout_scale;
    if (summed_over) old_value_recomputed = kept->recomputed;
    erase_taint(st, kept);  // self gets other's storage below
    taint = find_taint(st, other);  // the list changed
  }
  std::function<at::Tensor()> before_add = taint->correct_value;
  taint->allowed_op.clear();  // other keeps its own (unsummed) value for any reader
  taint->sum_other = nothing();
  c10::TensorImpl* impl = self.unsafeGetTensorImpl();
  impl->set_storage_keep_dtype(other.storage());
  impl->set_storage_offset(0);
  if (relu == Relu::none) {
    chain_ends(st, self, site);
    return true;
  }
  add_taint(st, self, nothing(), nothing(),
            [before_add, old_self, old_layout, old_scale, old_value_recomputed] {
              at::Tensor old_value = old_value_recomputed ? old_value_recomputed()
                                     : old_layout ? from_layout(old_self, *old_layout, old_scale)
                                                  : old_self;
              return before_add().add_(old_value);
            },
            relu_op_name(relu), relu, site);
  st.taints.back().value_holds = true;
  return true;
}

}  // namespace

bool answer_add(const at::Tensor& self, const at::Tensor& other, const at::Scalar& alpha) {
  ThreadState& st = state();
  if (st.taints.empty()) return false;
  if (Taint* into = find_taint(st, other);
      into != nullptr && into->allowed_op == "aten::add_" && into->sum_into_other)
    return answer_add_into_self(st, into, self, other, alpha);
  Taint* taint = find_taint(st, self);
  if (taint == nullptr || taint->allowed_op != "aten::add_") return false;
  // The identity must be the one added, unchanged since (an in-place update in between
  // would make the fused sum stale).
  if (!same(taint->sum_other, other) || version_of(other) != taint->sum_version ||
      taint->sum_written ||
      alpha.isComplex() || alpha.toDouble() != 1.0) {
    check_read(st, self, "");  // another add than the one fused: repair first
    return false;
  }
  const Relu relu = learned_relu(taint->site);
  const void* site = taint->site;
  if (relu == Relu::none) {
    erase_taint(st, taint);
    chain_ends(st, self, site);
    return true;
  }
  // Before the relu: the batch norm's value plus the identity's.
  std::function<at::Tensor()> before_add = std::move(taint->correct_value);
  const Taint* summed = find_taint(st, other);
  if (summed != nullptr && summed->summed_over && summed->recomputed) {
    // The convolution summed over the identity's bytes: its value is computed again too, and
    // this value holds all it needs (the identity itself usually dies after this add).
    std::function<at::Tensor()> identity_value = summed->recomputed;
    taint->correct_value = [before_add, identity_value] {
      return before_add().add_(identity_value());
    };
    taint->value_holds = true;
  } else {
    WeakTensor identity = taint->sum_other;
    taint->correct_value = [before_add, identity] {
      at::Tensor value = before_add();
      auto locked = identity.lock();
      if (!locked) throw std::runtime_error("the fused add's identity is gone");
      at::Tensor addend(locked);
      settle(addend);  // its values, not bytes handed over in oneDNN's layout
      return value.add_(addend);
    };
  }
  taint->allowed_op = relu_op_name(relu);
  taint->allowed_relu = relu;
  taint->sum_other = nothing();
  return true;
}

void after_add(const at::Tensor& self, const at::Tensor& other, const at::Scalar& alpha,
               uint32_t version_before, int64_t self_producer) {
  if (!enabled()) return;
  ThreadState& st = state();
  if (st.batch_norm.site == nullptr) return;  // no batch norm's result to learn about
  if (alpha.isComplex() || alpha.toDouble() != 1.0) return;
  if (!other.sizes().equals(self.sizes()) || other.scalar_type() != self.scalar_type()) return;
  // Which operand is the batch norm's untouched result decides the fusion's shape.
  Produced batch_norm = st.batch_norm;
  const WeakTensor conv_weight = batch_norm.weight;
  const void* site_id = st.batch_norm.take_if_consumed_by(self, version_before);
  const void* from = nullptr;
  bool earlier_result = false;
  if (site_id != nullptr) {
    // `out = bn(conv(...)); out += x`: x must be the input of an earlier convolution.
    for (const auto& [conv_site, input] : st.last_input)
      if (same(input, other)) from = conv_site;
  } else if ((site_id = batch_norm.take_if_consumed_by(other, version_of(other))) != nullptr) {
    // `out += downsample(x)`: out must be an earlier site's batch-norm result.
    for (const auto& [conv_site, output] : st.last_output)
      if (conv_site != site_id && same(output, self)) from = conv_site;
    earlier_result = true;
  }
  if (site_id == nullptr || from == nullptr) return;
  Registry& reg = registry();
  std::lock_guard<std::mutex> lock(reg.mutex);
  if (!learn_sum(reg, site_id, from, earlier_result, /*out_of_place=*/false)) return;
  if (earlier_result && self_producer >= 0) {
    auto earlier = reg.sites.find(static_cast<const c10::TensorImpl*>(from));
    if (earlier != reg.sites.end() && !earlier->second.off)
      earlier->second.keeps_for_sum = self_producer;
  }
  st.sum.record(self, conv_weight, site_id);
  st.chain_end.record(self, nothing(), site_id);
}

c10::optional<at::Tensor> answer_add_out_of_place(const at::Tensor& self,
                                                  const at::Tensor& other,
                                                  const at::Scalar& alpha) {
  ThreadState& st = state();
  if (st.taints.empty()) return c10::nullopt;
  // The fused operand is the batch norm's result (either side); the other is the identity.
  const at::Tensor* fused = &other;
  const at::Tensor* identity = &self;
  Taint* taint = find_taint(st, other);
  if (taint == nullptr || taint->allowed_op != "aten::add") {
    fused = &self;
    identity = &other;
    taint = find_taint(st, self);
  }
  if (taint == nullptr || taint->allowed_op != "aten::add") return c10::nullopt;
  if (!same(taint->sum_other, *identity) || version_of(*identity) != taint->sum_version ||
      taint->sum_written || alpha.isComplex() || alpha.toDouble() != 1.0) {
    check_read(st, *fused, "");  // another add than the one fused: repair first
    return c10::nullopt;
  }
  const Relu relu = learned_relu(taint->site);
  const void* site = taint->site;
  std::function<at::Tensor()> before_add = taint->correct_value;
  WeakTensor addend = taint->sum_other;
  // The batch norm's result keeps its taint (its storage holds the sum): any read repairs it.
  taint->allowed_op.clear();
  taint->sum_other = nothing();
  at::Tensor sum = share_storage(*fused);
  if (relu == Relu::none) {
    chain_ends(st, sum, site);
    return sum;
  }
  add_taint(st, sum, nothing(), nothing(),
            [before_add, addend] {
              at::Tensor value = before_add();
              auto locked = addend.lock();
              if (!locked) throw std::runtime_error("the fused add's identity is gone");
              at::Tensor identity_value(locked);
              settle(identity_value);  // its values, not bytes in oneDNN's layout
              return value.add_(identity_value);
            },
            relu_op_name(relu), relu, site);
  return sum;
}

void after_add_out_of_place(const at::Tensor& self, const at::Tensor& other,
                            const at::Scalar& alpha, const at::Tensor& result,
                            uint32_t self_version, uint32_t other_version,
                            int64_t self_producer, int64_t other_producer) {
  if (!enabled()) return;
  ThreadState& st = state();
  if (st.batch_norm.site == nullptr) return;  // no batch norm's result to learn about
  if (alpha.isComplex() || alpha.toDouble() != 1.0) return;
  if (!other.sizes().equals(self.sizes()) || !result.sizes().equals(self.sizes()) ||
      other.scalar_type() != self.scalar_type())
    return;
  Produced batch_norm = st.batch_norm;
  const WeakTensor conv_weight = batch_norm.weight;
  const at::Tensor* identity = &self;
  const void* site_id = st.batch_norm.take_if_consumed_by(other, other_version);
  if (site_id == nullptr) {
    site_id = batch_norm.take_if_consumed_by(self, self_version);
    identity = &other;
  }
  if (site_id == nullptr) return;
  // The identity must be the input of an earlier convolution (the block's input) or an
  // earlier site's batch-norm result (regnet's and resnext's `proj(x) + f(x)`: the projection
  // runs first, and the block's last convolution adds it).
  const void* from = nullptr;
  bool earlier_result = false;
  for (const auto& [conv_site, input] : st.last_input)
    if (same(input, *identity)) from = conv_site;
  if (from == nullptr) {
    for (const auto& [conv_site, output] : st.last_output)
      if (conv_site != site_id && same(output, *identity)) from = conv_site;
    earlier_result = from != nullptr;
  }
  if (from == nullptr) return;
  Registry& reg = registry();
  std::lock_guard<std::mutex> lock(reg.mutex);
  if (!learn_sum(reg, site_id, from, earlier_result, /*out_of_place=*/true)) return;
  const int64_t identity_producer = identity == &self ? self_producer : other_producer;
  if (earlier_result && identity_producer >= 0) {
    auto earlier = reg.sites.find(static_cast<const c10::TensorImpl*>(from));
    if (earlier != reg.sites.end() && !earlier->second.off)
      earlier->second.keeps_for_sum = identity_producer;
  }
  st.sum.record(result, conv_weight, site_id);
  st.chain_end.record(result, nothing(), site_id);
}

void after_pool(const at::Tensor& input, const at::Tensor& output, int64_t pool_op) {
  if (!enabled()) return;
  ThreadState& st = state();
  if (pool_op < 0) {
    // An INT8 pool with no calibrated scale of its own (a pool of a torch.cat's result,
    // whose producer INT8 does not know): the joined chains learn from the op that reads
    // the pooled tensor, in that op's scale (max pooling keeps the scale of its input).
    if (ThreadState::Joined* record = st.joined_by(input)) {
      record->output = weak(output);
      record->version = version_of(output);
    }
    return;
  }
  teach_joined(st, input, [&](Site& joined) { joined.feeds_pool = pool_op; });
  const void* producer = st.chain_end.take_if_consumed_by(input, version_of(input));
  if (producer == nullptr || input.dim() != 4) return;
  teach_site(producer, [&](Site& chain) { chain.feeds_pool = pool_op; });
}

void after_cat(const std::vector<at::Tensor>& inputs, int64_t dim, const at::Tensor& output,
               const std::vector<bool>& handed_over) {
  if (!enabled() || inputs.size() < 2 || output.dim() != 4 || (dim < 0 ? dim + 4 : dim) != 1)
    return;
  ThreadState& st = state();
  // Each input is a chain's result, another learning cat's result (whose chains then learn
  // from this cat's reader too), or bytes already handed over (a max pool's result of an
  // earlier joined tensor), which need no teaching; at least one chain learns.
  std::vector<const void*> sites;
  std::vector<ThreadState::Joined*> nested;
  for (size_t i = 0; i < inputs.size(); ++i) {
    if (const void* site = st.chain_end.site_of(inputs[i])) {
      sites.push_back(site);
    } else if (ThreadState::Joined* record = st.joined_by(inputs[i])) {
      nested.push_back(record);
    } else if (i >= handed_over.size() || !handed_over[i]) {
      return;
    }
  }
  for (ThreadState::Joined* record : nested) {
    sites.insert(sites.end(), record->sites.begin(), record->sites.end());
    record->sites.clear();
  }
  if (sites.empty()) return;
  ThreadState::Joined& record = st.joined[st.next_joined++ % st.joined.size()];
  record.output = weak(output);
  record.version = version_of(output);
  record.sites = std::move(sites);
}

// Whether a torch.cat that cannot join its inputs' bytes is still learning: every input that
// is not handed over is a chain's result or a learning cat's (after_cat teaches those
// chains on this pass); the handed-over inputs then keep their handoff.
bool cat_learning(const std::vector<at::Tensor>& inputs) {
  ThreadState& st = state();
  for (const at::Tensor& input : inputs) {
    if (layout_of(input) != nullptr) continue;
    if (st.joined_by(input) != nullptr) continue;
    const void* site = st.chain_end.site_of(input);
    if (site == nullptr) return false;
    Registry& reg = registry();
    std::lock_guard<std::mutex> lock(reg.mutex);
    auto it = reg.sites.find(static_cast<const c10::TensorImpl*>(site));
    // A chain that stopped handing over (or whose fusion is off) will not learn again.
    if (it == reg.sites.end() || it->second.off || it->second.hand_over_never) return false;
  }
  return true;
}

void handed_on(const at::Tensor& input, const at::Tensor& output,
               const dnnl::memory::desc& layout, float scale) {
  ThreadState& st = state();
  Taint* source = find_taint(st, input);
  const void* site = source ? source->site : nullptr;
  auto kept = std::make_shared<const dnnl::memory::desc>(layout);
  WeakTensor self = weak(output);
  st.taints.push_back(Taint{self, output.unsafeGetTensorImpl(), nothing(), nothing(),
                            [self, kept, scale] {
                              auto locked = self.lock();
                              return from_layout(at::Tensor(locked), *kept, scale);
                            },
                            "aten::conv2d", Relu::none, site, kept, scale, nothing(), 0, false,
                            nullptr, false, nullptr, false});
  set_observing(true);
  g_handoffs.fetch_add(1, std::memory_order_relaxed);
}

at::Tensor weight_after_mul(const at::Tensor& input) {
  ThreadState& st = state();
  const Taint* taint = st.taints.empty() ? nullptr : find_taint(st, input);
  if (taint == nullptr || taint->site == nullptr) return at::Tensor();
  Registry& reg = registry();
  std::lock_guard<std::mutex> lock(reg.mutex);
  auto it = reg.sites.find(static_cast<const c10::TensorImpl*>(taint->site));
  if (it == reg.sites.end() || it->second.off) return at::Tensor();
  auto weight = it->second.weight_after_mul.lock();
  return weight ? at::Tensor(weight) : at::Tensor();
}

void mul_handed_on(const at::Tensor& input, const at::Tensor& output,
                   const dnnl::memory::desc& layout, float scale) {
  ThreadState& st = state();
  const Taint* source = find_taint(st, input);
  const void* site = source ? source->site : nullptr;
  handed_on(input, output, layout, scale);
  if (site) st.mul.record(output, nothing(), site);
}

void observe_read(const at::Tensor& tensor, const std::string& op) {
  ThreadState& st = state();
  drop_dead_taints(st);
  if (!st.taints.empty()) check_read(st, tensor, op);
}

void not_read_as_is(const at::Tensor& input) {
  ThreadState& st = state();
  if (st.taints.empty()) return;
  if (Taint* taint = find_taint(st, input)) misread(st, taint);
}

const dnnl::memory::desc* addend_layout(const at::Tensor& tensor, float* scale) {
  *scale = 1.f;
  ThreadState& st = state();
  if (st.taints.empty()) return nullptr;
  Taint* taint = find_taint(st, tensor);
  if (taint == nullptr) return nullptr;
  if (!taint->layout) {  // a fused value that is not yet right for this tensor
    repair(st, taint);
    return nullptr;
  }
  *scale = taint->layout_scale;
  return taint->layout.get();
}

c10::optional<at::Tensor> answer_relu(const at::Tensor& input, Relu kind, float upper) {
  ThreadState& st = state();
  if (st.taints.empty()) return c10::nullopt;
  Taint* taint = find_taint(st, input);
  if (taint == nullptr || taint->allowed_relu != kind) return c10::nullopt;
  const void* site = taint->site;
  if (is_clamp(kind)) {
    float learned = 0.f;
    {
      Registry& reg = registry();
      std::lock_guard<std::mutex> lock(reg.mutex);
      auto it = reg.sites.find(static_cast<const c10::TensorImpl*>(site));
      if (it != reg.sites.end()) learned = it->second.relu_upper;
    }
    if (learned != upper) {
      check_read(st, input, "");  // another clamp than the one fused: repair first
      return c10::nullopt;
    }
  }
  // A residual block's output (its value held): the next block may sum over its bytes.
  std::function<at::Tensor()> recomputed =
      taint->value_holds ? relu_of(taint->correct_value, kind, upper) : nullptr;
  // The relu's result ends the chain of the linear or convolution that fused it.
  auto ends_chain = [&st, site, from_linear = taint->from_linear, weight = taint->weight,
                     &recomputed](const at::Tensor& result) {
    if (from_linear)
      linear_chain_ends(st, result, weight, site);
    else
      chain_ends(st, result, site, std::move(recomputed));
  };
  if (is_in_place(kind)) {
    erase_taint(st, taint);  // relu_ makes its values right
    ends_chain(input);
    return input;
  }
  taint->allowed_op.clear();
  taint->allowed_relu = Relu::none;
  at::Tensor output = share_storage(input);
  ends_chain(output);
  return output;
}

// Learns `activation` for the linear whose untouched output `input` is, if it is one; the
// activation's `output` then ends that linear's chain. Returns whether it was one.
bool learn_linear_activation(ThreadState& st, const at::Tensor& input, const at::Tensor& output,
                             uint32_t version_before, MatmulActivation activation, Relu relu) {
  const WeakTensor linear_weight = st.linear.weight;
  const void* site_id = st.linear.take_if_consumed_by(input, version_before);
  if (site_id == nullptr) return false;
  st.linear_end.record(output, linear_weight, site_id);
  Registry& reg = registry();
  std::lock_guard<std::mutex> lock(reg.mutex);
  Site& site = site_for(reg, site_id);
  if (site.off) return true;
  site.weight = linear_weight;
  site.activation = activation;
  site.relu = relu;
  return true;
}

LinearPlan plan_linear(const at::Tensor& weight) {
  LinearPlan plan;
  plan.weight = weight;
  if (!enabled()) return plan;
  Registry& reg = registry();
  std::lock_guard<std::mutex> lock(reg.mutex);
  const Site* site = live_site(reg, weight);
  if (site == nullptr) return plan;
  plan.fuse = site->activation != MatmulActivation::none;
  plan.activation = site->activation;
  plan.relu = site->relu;
  // Handed on after no activation, a gelu or a relu (whose answer ends the linear's chain).
  if (site->feeds_linear && !site->hand_over_never) {
    if (auto next = site->next_weight.lock()) {
      plan.keep = true;
      plan.next_weight = at::Tensor(std::move(next));
    }
  }
  return plan;
}

void after_linear(const at::Tensor& input, const at::Tensor& output, const LinearPlan& plan,
                  RecomputeLinear recompute, const dnnl::memory::desc* kept_layout,
                  float kept_scale) {
  ThreadState& st = state();
  const void* site = plan.weight.unsafeGetTensorImpl();
  drop_dead_taints(st);
  if (kept_layout != nullptr) {
    st.kept.push_back({output.storage().getWeakStorageImpl(), *kept_layout, kept_scale});
    if (st.kept.size() > 64) st.kept.erase(st.kept.begin());  // chains that never ended
  }
  if (!plan.fuse) {
    st.linear.record(output, weak(plan.weight), site);
    // No activation: the result itself ends the chain (its bytes are kept only when this
    // call kept them, so the kept list is searched only then).
    st.linear_end.record(output, weak(plan.weight), site);
    if (kept_layout != nullptr) taint_kept(st, output, site, "aten::linear", true);
    return;
  }
  g_fused_linears.fetch_add(1, std::memory_order_relaxed);
  add_taint(st, output, weak(input), weak(plan.weight), std::move(recompute),
            plan.relu != Relu::none ? relu_op_name(plan.relu) : "aten::gelu", plan.relu, site);
  st.taints.back().from_linear = true;
}

const dnnl::memory::desc* linear_reads(const at::Tensor& input, const at::Tensor& weight,
                                       float* scale) {
  *scale = 1.f;
  if (!enabled()) return nullptr;
  ThreadState& st = state();
  if (!st.taints.empty()) {
    // Bytes handed over: their chain has learned its reader already (and a second linear
    // reading them must not become the prediction), so no learning, and no lock.
    Taint* taint = find_taint(st, input);
    if (taint != nullptr && taint->layout && taint->allowed_op == "aten::linear") {
      *scale = taint->layout_scale;
      return taint->layout.get();
    }
  }
  // Learning: the untouched end of a linear's chain read by this linear.
  const Produced& end = st.linear_end;
  if (end.site && end.site != weight.unsafeGetTensorImpl() && same(end.output, input) &&
      version_of(input) == end.version) {
    Registry& reg = registry();
    std::lock_guard<std::mutex> lock(reg.mutex);
    Site& site = site_for(reg, end.site);
    if (!site.off && !site.hand_over_never) {
      site.weight = end.weight;
      site.feeds_linear = true;
      site.next_weight = weak(weight);
    }
  }
  return nullptr;
}

MatmulActivation gelu_activation(c10::string_view approximate) {
  return approximate == "tanh" ? MatmulActivation::gelu_tanh : MatmulActivation::gelu_erf;
}

c10::optional<at::Tensor> answer_gelu(const at::Tensor& input, c10::string_view approximate) {
  ThreadState& st = state();
  if (st.taints.empty()) return c10::nullopt;
  Taint* taint = find_taint(st, input);
  if (taint == nullptr || taint->allowed_op != "aten::gelu") return c10::nullopt;
  MatmulActivation learned = MatmulActivation::none;
  {
    Registry& reg = registry();
    std::lock_guard<std::mutex> lock(reg.mutex);
    auto it = reg.sites.find(static_cast<const c10::TensorImpl*>(taint->site));
    if (it != reg.sites.end()) learned = it->second.activation;
  }
  if (learned != gelu_activation(approximate)) {
    check_read(st, input, "");  // another gelu than the one fused: repair first
    return c10::nullopt;
  }
  taint->allowed_op.clear();
  const void* site = taint->site;
  const WeakTensor weight = taint->weight;
  at::Tensor output = share_storage(input);
  linear_chain_ends(st, output, weight, site);
  return output;
}

void after_gelu(const at::Tensor& input, const at::Tensor& output, c10::string_view approximate,
                uint32_t version_before) {
  if (!enabled()) return;
  ThreadState& st = state();
  if (approximate != "none" && approximate != "tanh") return;
  learn_linear_activation(st, input, output, version_before, gelu_activation(approximate),
                          Relu::none);
}

void after_relu(const at::Tensor& input, const at::Tensor& output, Relu kind,
                uint32_t version_before, float upper) {
  if (!enabled()) return;
  ThreadState& st = state();
  // A linear layer's matmul fuses relu only.
  if (is_plain_relu(kind) &&
      learn_linear_activation(st, input, output, version_before, MatmulActivation::relu, kind))
    return;
  // conv -> relu, with no batch norm between.
  const WeakTensor conv_weight = st.convolution.weight;
  if (const void* conv_site = st.convolution.take_if_consumed_by(input, version_before)) {
    Registry& reg = registry();
    std::lock_guard<std::mutex> lock(reg.mutex);
    Site& site = site_for(reg, conv_site);
    if (site.off) return;
    site.weight = conv_weight;
    site.has_batch_norm = false;
    site.relu = kind;
    site.relu_upper = upper;
    st.chain_end.record(output, nothing(), conv_site);
    return;
  }
  // `out = bn(out); out += identity; relu_(out)`, the add learned by after_add.
  if (const void* sum_site = st.sum.take_if_consumed_by(input, version_before)) {
    Registry& reg = registry();
    std::lock_guard<std::mutex> lock(reg.mutex);
    auto it = reg.sites.find(static_cast<const c10::TensorImpl*>(sum_site));
    if (it != reg.sites.end() && !it->second.off && it->second.has_sum) {
      it->second.relu = kind;
      it->second.relu_upper = upper;
    }
    st.chain_end.record(output, nothing(), sum_site);
    return;
  }
  // `out = bn(out); out += identity; relu_(out)` is not bn -> relu: the add changed it.
  const void* site_id = st.batch_norm.take_if_consumed_by(input, version_before);
  const bool follows = site_id != nullptr;
  if (!follows) return;
  Registry& reg = registry();
  std::lock_guard<std::mutex> lock(reg.mutex);
  auto it = reg.sites.find(static_cast<const c10::TensorImpl*>(site_id));
  if (it != reg.sites.end() && !it->second.off) {
    it->second.relu = kind;
    it->second.relu_upper = upper;
  }
  st.chain_end.record(output, nothing(), site_id);
}

const dnnl::memory::desc* layout_of(const at::Tensor& input) {
  ThreadState& st = state();
  if (st.taints.empty()) return nullptr;
  Taint* taint = find_taint(st, input);
  if (taint == nullptr || !taint->layout || taint->allowed_op != "aten::conv2d") return nullptr;
  return taint->layout.get();
}

float layout_scale(const at::Tensor& input) {
  ThreadState& st = state();
  if (st.taints.empty()) return 1.f;
  Taint* taint = find_taint(st, input);
  return taint == nullptr || !taint->layout ? 1.f : taint->layout_scale;
}

void consumed(const at::Tensor& input) {
  // Other conv2d calls may read it as it is too (a residual block's first convolution and
  // its downsample both read the block's input); any other op gets it repaired.
  g_handoffs.fetch_add(1, std::memory_order_relaxed);
}

void settle(const at::Tensor& input) {
  ThreadState& st = state();
  if (st.taints.empty()) return;
  if (Taint* taint = find_taint(st, input)) repair(st, taint);
}

Stats stats() {
  Stats out;
  out.fused_convolutions = g_fused.load();
  out.fused_linears = g_fused_linears.load();
  out.handoffs = g_handoffs.load();
  out.sums_in_place = g_sums_in_place.load();
  out.mispredictions = g_mispredictions.load();
  out.repairs = g_repairs.load();
  Registry& reg = registry();
  std::lock_guard<std::mutex> lock(reg.mutex);
  out.sites = reg.sites.size();
  for (const auto& entry : reg.sites) out.sites_off += entry.second.off ? 1 : 0;
  return out;
}

}  // namespace ipex_shim::fusion
