#include "kernels/linear_training.h"

#include <ATen/ops/empty.h>
#include <ATen/ops/sum.h>

#include "kernels/buffer_pool.h"
#include "kernels/matmul.h"
#include "kernels/onednn_compat.h"
#include "kernels/onednn_context.h"
#include "kernels/primitive_cache.h"

namespace ipex_shim {
namespace {

using tag = dnnl::memory::format_tag;
using dt = dnnl::memory::data_type;

// Three matmuls over plain row-major matrices (X: rows x in, W: out x in, G: rows x out):
//   forward          Y  = X W^T (+ bias)   W read transposed through its strides
//   input gradient   dX = G W
//   weight gradient  dW = G^T X             G read transposed, written straight into dW
// One BF16 copy of W serves the forward and the input gradient, one of X the forward and
// the weight gradient. (oneDNN 2.6's inner product took 9.4 ms for the encoder's
// 1024x768x768 input gradient against 1.3 for its forward, and its blocked weight gradient
// needed a reorder back to the parameter's layout.)
struct LinearPrimitives {
  dnnl::matmul::primitive_desc forward_pd;
  dnnl::matmul forward;
  dnnl::matmul::primitive_desc data_pd;
  dnnl::matmul backward_data;
  dnnl::matmul::primitive_desc weights_pd;
  dnnl::matmul backward_weights;
};

int64_t rows_of(const at::Tensor& input) { return input.numel() / input.size(-1); }

dnnl::memory::desc matrix(int64_t rows, int64_t columns, dt type) {
  return dnnl::memory::desc({rows, columns}, type, tag::ab);
}

// The (rows x columns) transpose of a row-major (columns x rows) matrix.
dnnl::memory::desc transposed(int64_t rows, int64_t columns, dt type) {
  return dnnl::memory::desc({rows, columns}, type, dnnl::memory::dims{1, rows});
}

std::shared_ptr<const LinearPrimitives> primitives_for(int64_t rows, int64_t in, int64_t out,
                                                       bool has_bias) {
  static PrimitiveCache<LinearPrimitives>* cache = new PrimitiveCache<LinearPrimitives>();
  KeyBuilder key;
  key.add(rows).add(in).add(out).add(has_bias);
  return cache->get(key.take(), [&] {
    const dnnl::memory::desc bias = matrix(1, out, dt::f32);
    const auto forward_pd = onednn::matmul_primitive_desc(
        matrix(rows, in, dt::bf16), transposed(in, out, dt::bf16), has_bias ? &bias : nullptr,
        matrix(rows, out, dt::f32), base_attr());
    const auto data_pd =
        onednn::matmul_primitive_desc(matrix(rows, out, dt::bf16), matrix(out, in, dt::bf16),
                                      nullptr, matrix(rows, in, dt::f32), base_attr());
    const auto weights_pd =
        onednn::matmul_primitive_desc(transposed(out, rows, dt::bf16), matrix(rows, in, dt::bf16),
                                      nullptr, matrix(out, in, dt::f32), base_attr());
    return LinearPrimitives{forward_pd, dnnl::matmul(forward_pd), data_pd,
                            dnnl::matmul(data_pd), weights_pd, dnnl::matmul(weights_pd)};
  });
}

// A contiguous tensor's data as a (rows, columns) matrix of `type`.
dnnl::memory as_matrix(const at::Tensor& tensor, int64_t rows, int64_t columns,
                       dt type = dt::f32) {
  return dnnl::memory(matrix(rows, columns, type), cpu_engine(), tensor.data_ptr());
}

// A BF16 copy of a contiguous fp32 (rows, columns) matrix.
at::Tensor to_bf16_matrix(const at::Tensor& tensor, int64_t rows, int64_t columns) {
  Reordered copy = allocate(matrix(rows, columns, dt::bf16));
  dnnl::memory from = as_matrix(tensor, rows, columns);
  cached_reorder(from.get_desc(), copy.memory.get_desc())
      ->execute(thread_stream(), from, copy.memory);
  return copy.storage;
}

}  // namespace

Fallback linear_training_support(const at::Tensor& input, const at::Tensor& weight,
                                 const c10::optional<at::Tensor>& bias) {
  if (const Fallback why = linear_support(input, weight, bias); why != Fallback::none)
    return why;
  // Read as row-major matrices in place: rows of a contiguous input of rank 2 or more.
  if (input.dim() < 2 || !input.is_contiguous() || !weight.is_contiguous())
    return Fallback::unsupported_shape;
  if (bias && bias->defined() && !bias->is_contiguous()) return Fallback::unsupported_shape;
  return Fallback::none;
}

at::Tensor linear_training_forward(const at::Tensor& input, const at::Tensor& weight,
                                   const at::Tensor& bias, LinearSaved* saved) {
  const int64_t rows = rows_of(input), in = weight.size(1), out = weight.size(0);
  auto p = primitives_for(rows, in, out, bias.defined());
  saved->source = to_bf16_matrix(input, rows, in);
  saved->weights = to_bf16_matrix(weight, out, in);
  // The result with its own sizes (not a view: autograd forbids changing a view a custom
  // function returned in place), written as a matrix.
  std::vector<int64_t> sizes = input.sizes().vec();
  sizes.back() = out;
  at::Tensor output = pooled_empty(sizes, at::kFloat);
  std::unordered_map<int, dnnl::memory> run{
      {DNNL_ARG_SRC, dnnl::memory(p->forward_pd.src_desc(), cpu_engine(),
                                  saved->source.data_ptr())},
      {DNNL_ARG_WEIGHTS, dnnl::memory(p->forward_pd.weights_desc(), cpu_engine(),
                                      saved->weights.data_ptr())},
      {DNNL_ARG_DST, as_matrix(output, rows, out)}};
  if (bias.defined()) run.emplace(DNNL_ARG_BIAS, as_matrix(bias, 1, out));
  execute(p->forward, p->forward_pd, std::move(run));
  return output;
}

std::array<at::Tensor, 3> linear_training_backward(const at::Tensor& grad_output,
                                                   const at::Tensor& input,
                                                   const at::Tensor& weight, bool has_bias,
                                                   const LinearSaved& saved,
                                                   std::array<bool, 3> wanted) {
  const int64_t rows = rows_of(input), in = weight.size(1), out = weight.size(0);
  auto p = primitives_for(rows, in, out, has_bias);
  std::array<at::Tensor, 3> grads;
  const at::Tensor grad_rows = grad_output.to(at::kFloat).contiguous();
  const at::Tensor grad = to_bf16_matrix(grad_rows, rows, out);
  if (wanted[0]) {
    grads[0] = pooled_empty(input.sizes(), at::kFloat);
    execute(p->backward_data, p->data_pd,
            {{DNNL_ARG_SRC, as_matrix(grad, rows, out, dt::bf16)},
             {DNNL_ARG_WEIGHTS, as_matrix(saved.weights, out, in, dt::bf16)},
             {DNNL_ARG_DST, as_matrix(grads[0], rows, in)}});
  }
  if (wanted[1]) {
    grads[1] = pooled_empty({out, in}, at::kFloat);
    execute(p->backward_weights, p->weights_pd,
            {{DNNL_ARG_SRC, dnnl::memory(p->weights_pd.src_desc(), cpu_engine(),
                                         grad.data_ptr())},
             {DNNL_ARG_WEIGHTS, as_matrix(saved.source, rows, in, dt::bf16)},
             {DNNL_ARG_DST, as_matrix(grads[1], out, in)}});
  }
  // The bias's gradient from the fp32 output gradient, as stock sums it.
  if (has_bias && wanted[2]) grads[2] = at::sum(grad_rows.view({rows, out}), 0);
  return grads;
}

}  // namespace ipex_shim
