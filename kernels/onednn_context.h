// What every oneDNN kernel of the shim shares: the CPU engine, a stream per thread, the
// translation between ATen tensors and oneDNN memory, and execution with a scratchpad owned
// by the call (scratchpad_mode::user), so one primitive can run from several threads at once.
#pragma once

#include <ATen/core/Tensor.h>

#include <dnnl.hpp>
#include <string>
#include <unordered_map>

namespace ipex_shim {

enum class Precision { fp32, bf16 };

const char* precision_name(Precision precision);

// A dense fp32 CPU tensor with its own storage that no other dispatch layer wraps or
// reinterprets (no vmap/functorch wrapper, Python subclass, functionalization, or lazy
// conjugate/negation bit): the only kind the kernels read directly.
bool plain_float_cpu(const at::Tensor& tensor);

// Whether this oneDNN's reorders into padded blocked layouts keep every value: "" when they
// do, else the reorder that lost values. oneDNN 3.7.2 (Debian 13) on an AMD EPYC of family 26
// (Zen 5, AVX-512 BF16 and VNNI) lost them (its jit:uni reorders of a transposed 37x19 matrix
// into a matmul's packed weights, of 4x8x3x3 weights into 16x16 blocks), and 116 of the
// shim's kernel tests failed there; oneDNN 2.6.3 on the same CPU kept them. Run once at
// start.
std::string onednn_reorder_self_check();

dnnl::engine& cpu_engine();
dnnl::stream& thread_stream();

dnnl::memory::dims to_dims(c10::IntArrayRef sizes);
dnnl::memory::data_type to_dnnl(at::ScalarType type);
dnnl::memory::data_type to_dnnl(Precision precision);
at::ScalarType to_aten(Precision precision);

// A descriptor for `tensor` exactly as it lies in memory (sizes, strides, dtype).
dnnl::memory::desc strided_desc(const at::Tensor& tensor);

// oneDNN memory over the tensor's own data (no copy).
dnnl::memory wrap(const at::Tensor& tensor, const dnnl::memory::desc& desc);

// Primitive attributes every shim primitive starts from.
dnnl::primitive_attr base_attr();

// Runs `primitive` with `args` plus a scratchpad of the size `pd` asks for.
void execute(const dnnl::primitive& primitive, const dnnl::primitive_desc_base& pd,
             std::unordered_map<int, dnnl::memory> args);
// The same with the scratchpad's descriptor queried beforehand (a query copies it).
void execute(const dnnl::primitive& primitive, const dnnl::memory::desc& scratchpad,
             std::unordered_map<int, dnnl::memory> args);

// Copies (and converts) `from` into a new tensor laid out as `desc`; the tensor is a flat
// byte buffer, the memory object describes it.
struct Reordered {
  at::Tensor storage;
  dnnl::memory memory;
};
Reordered reorder_to(const dnnl::memory& from, const dnnl::memory::desc& desc);

// A 1-D buffer tensor large enough for `desc`, and memory over it.
Reordered allocate(const dnnl::memory::desc& desc);

}  // namespace ipex_shim
