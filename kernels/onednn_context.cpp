#include "kernels/onednn_context.h"

#include <ATen/ops/empty.h>

#include <vector>

#include "kernels/buffer_pool.h"

namespace ipex_shim {

const char* precision_name(Precision precision) {
  return precision == Precision::bf16 ? "bf16" : "fp32";
}

bool plain_float_cpu(const at::Tensor& tensor) {
  static const c10::DispatchKeySet wrapped({c10::DispatchKey::Python, c10::DispatchKey::Functionalize,
                                            c10::DispatchKey::FuncTorchBatched,
                                            c10::DispatchKey::Batched,
                                            c10::DispatchKey::FuncTorchGradWrapper,
                                            c10::DispatchKey::Conjugate, c10::DispatchKey::Negative});
  return tensor.defined() && tensor.scalar_type() == at::kFloat && tensor.device().is_cpu() &&
         tensor.layout() == at::kStrided && !tensor.is_quantized() && tensor.has_storage() &&
         !tensor.key_set().has_any(wrapped);
}

dnnl::engine& cpu_engine() {
  static dnnl::engine* engine = new dnnl::engine(dnnl::engine::kind::cpu, 0);
  return *engine;
}

dnnl::stream& thread_stream() {
  thread_local dnnl::stream stream(cpu_engine());
  return stream;
}

dnnl::memory::dims to_dims(c10::IntArrayRef sizes) {
  return dnnl::memory::dims(sizes.begin(), sizes.end());
}

dnnl::memory::data_type to_dnnl(at::ScalarType type) {
  switch (type) {
    case at::kFloat: return dnnl::memory::data_type::f32;
    case at::kBFloat16: return dnnl::memory::data_type::bf16;
    case at::kChar: return dnnl::memory::data_type::s8;
    case at::kByte: return dnnl::memory::data_type::u8;
    case at::kInt: return dnnl::memory::data_type::s32;
    default: return dnnl::memory::data_type::undef;
  }
}

dnnl::memory::data_type to_dnnl(Precision precision) {
  return precision == Precision::bf16 ? dnnl::memory::data_type::bf16
                                      : dnnl::memory::data_type::f32;
}

at::ScalarType to_aten(Precision precision) {
  return precision == Precision::bf16 ? at::kBFloat16 : at::kFloat;
}

dnnl::memory::desc strided_desc(const at::Tensor& tensor) {
  return dnnl::memory::desc(to_dims(tensor.sizes()), to_dnnl(tensor.scalar_type()),
                            to_dims(tensor.strides()));
}

dnnl::memory wrap(const at::Tensor& tensor, const dnnl::memory::desc& desc) {
  return dnnl::memory(desc, cpu_engine(), tensor.data_ptr());
}

dnnl::primitive_attr base_attr() {
  dnnl::primitive_attr attr;
  attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
  return attr;
}

namespace {

// plain -> blocked -> plain on values that are exact in fp32; "" when they come back.
std::string round_trip(const dnnl::memory::dims& dims, dnnl::memory::format_tag plain,
                       dnnl::memory::format_tag blocked, const char* name) {
  const dnnl::memory::desc plain_md(dims, dnnl::memory::data_type::f32, plain);
  const dnnl::memory::desc blocked_md(dims, dnnl::memory::data_type::f32, blocked);
  const size_t count = plain_md.get_size() / sizeof(float);
  std::vector<float> values(count), back(count, 0.f);
  for (size_t i = 0; i < count; ++i) values[i] = static_cast<float>(i % 97) - 48.f;
  dnnl::memory from(plain_md, cpu_engine(), values.data());
  dnnl::memory middle(blocked_md, cpu_engine());
  dnnl::memory to(plain_md, cpu_engine(), back.data());
  dnnl::reorder(from, middle).execute(thread_stream(), from, middle);
  dnnl::reorder(middle, to).execute(thread_stream(), middle, to);
  thread_stream().wait();
  return values == back ? std::string() : std::string(name);
}

}  // namespace

std::string onednn_reorder_self_check() {
  using tag = dnnl::memory::format_tag;
  struct Probe {
    dnnl::memory::dims dims;
    tag plain, blocked;
    const char* name;
  };
  const Probe probes[] = {
      {{37, 19}, tag::ba, tag::BA16a64b, "f32 37x19 ba -> BA16a64b"},
      {{4, 8, 3, 3}, tag::abcd, tag::ABcd16b16a, "f32 4x8x3x3 abcd -> ABcd16b16a"}};
  for (const Probe& probe : probes) {
    try {
      std::string failed = round_trip(probe.dims, probe.plain, probe.blocked, probe.name);
      if (!failed.empty()) return failed;
    } catch (const dnnl::error&) {
      // A oneDNN without that reorder has no kernel that packs into that layout either:
      // nothing to say about the shim's kernels.
    }
  }
  return std::string();
}

Reordered allocate(const dnnl::memory::desc& desc) {
  at::Tensor storage = pooled_empty({static_cast<int64_t>(desc.get_size()) + 64}, at::kByte);
  // oneDNN prefers 64-byte aligned buffers; both the pool and ATen's allocator align them.
  return {storage, dnnl::memory(desc, cpu_engine(), storage.data_ptr())};
}

void execute(const dnnl::primitive& primitive, const dnnl::primitive_desc_base& pd,
             std::unordered_map<int, dnnl::memory> args) {
  execute(primitive, pd.scratchpad_desc(), std::move(args));
}

void execute(const dnnl::primitive& primitive, const dnnl::memory::desc& scratchpad_desc,
             std::unordered_map<int, dnnl::memory> args) {
  at::Tensor scratchpad;
  if (scratchpad_desc.get_size() > 0) {
    Reordered buffer = allocate(scratchpad_desc);
    scratchpad = buffer.storage;
    args.emplace(DNNL_ARG_SCRATCHPAD, buffer.memory);
  }
  primitive.execute(thread_stream(), args);
  thread_stream().wait();
}

Reordered reorder_to(const dnnl::memory& from, const dnnl::memory::desc& desc) {
  Reordered out = allocate(desc);
  dnnl::memory source = from;
  dnnl::reorder(source, out.memory).execute(thread_stream(), source, out.memory);
  thread_stream().wait();
  return out;
}

}  // namespace ipex_shim
