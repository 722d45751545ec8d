#include "shim/write_watch.h"

#include <ATen/core/dispatch/Dispatcher.h>
#include <ATen/core/stack.h>
#include <torch/library.h>

#include <vector>

#include "kernels/weight_cache.h"
#include "shim/dispatch_key.h"

namespace ipex_shim {
namespace {

const c10::StorageImpl* storage_of(const at::Tensor& tensor) {
  return tensor.defined() && tensor.has_storage() ? tensor.storage().unsafeGetStorageImpl()
                                                  : nullptr;
}

// Whether the op's schema marks a tensor argument (or tensor list) as written.
bool writes_an_argument(const c10::FunctionSchema& schema) {
  for (const c10::Argument& argument : schema.arguments()) {
    const auto* alias = argument.alias_info();
    if (alias != nullptr && alias->isWrite()) return true;
  }
  return false;
}

void report_writes(const c10::OperatorHandle& op, c10::DispatchKeySet keys,
                   torch::jit::Stack* stack) {
  const c10::DispatchKeySet below =
      keys & c10::DispatchKeySet(c10::DispatchKeySet::FULL_AFTER, shim_key());
  WeightCache& cache = weight_cache();
  if (!cache.watching()) {
    op.redispatchBoxed(below, stack);
    return;
  }
  // The written arguments' storages, taken before the call replaces the arguments on the
  // stack with its results. Rarely more than one.
  std::vector<const c10::StorageImpl*> written;
  const auto& arguments = op.schema().arguments();
  size_t index = 0;
  for (const c10::IValue& value : torch::jit::last(*stack, arguments.size())) {
    const auto* alias = arguments[index++].alias_info();
    if (alias == nullptr || !alias->isWrite()) continue;
    if (value.isTensor()) {
      written.push_back(storage_of(value.toTensor()));
    } else if (value.isTensorList()) {
      for (const at::Tensor& tensor : value.toTensorList()) written.push_back(storage_of(tensor));
    }
  }
  struct Report {
    const std::vector<const c10::StorageImpl*>& storages;
    ~Report() {
      for (const c10::StorageImpl* storage : storages) weight_cache().note_write(storage);
    }
  } report{written};
  op.redispatchBoxed(below, stack);
}

}  // namespace

size_t register_write_watch(torch::Library& aten_library) {
  auto& dispatcher = c10::Dispatcher::singleton();
  size_t registered = 0;
  for (const c10::OperatorName& name : dispatcher.getAllOpNames()) {
    if (name.name.rfind("aten::", 0) != 0) continue;
    auto op = dispatcher.findOp(name);
    if (!op || !op->hasSchema() || op->hasKernelForDispatchKey(shim_key())) continue;
    if (!writes_an_argument(op->schema())) continue;
    std::string qualified = name.name.substr(6);
    if (!name.overload_name.empty()) qualified += "." + name.overload_name;
    aten_library.impl(qualified.c_str(),
                      torch::CppFunction::makeFromBoxedFunction<&report_writes>());
    ++registered;
  }
  return registered;
}

WriteNote::WriteNote(const at::Tensor& tensor) : storage_(storage_of(tensor)) {}

WriteNote::~WriteNote() { weight_cache().note_write(storage_); }

}  // namespace ipex_shim
