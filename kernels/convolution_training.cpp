#include "kernels/convolution_training.h"

#include <ATen/ops/empty.h>

#include "kernels/buffer_pool.h"
#include "kernels/onednn_compat.h"
#include "kernels/onednn_context.h"
#include "kernels/primitive_cache.h"
#include "shim/runtime.h"

namespace ipex_shim {
namespace {

using tag = dnnl::memory::format_tag;
using dt = dnnl::memory::data_type;

struct TrainingPrimitives {
  dnnl::convolution_forward::primitive_desc forward_pd;
  dnnl::convolution_forward forward;
  dnnl::convolution_backward_data::primitive_desc data_pd;
  dnnl::convolution_backward_data backward_data;
  dnnl::convolution_backward_weights::primitive_desc weights_pd;
  dnnl::convolution_backward_weights backward_weights;
  std::vector<int64_t> output_sizes;
};

// Stock's memory format for the result and the input's gradient: channels-last when a 2-D
// convolution's input or weight is (its 1-D and 3-D results are contiguous).
at::MemoryFormat result_format(const at::Tensor& input, const at::Tensor& weight) {
  const auto channels_last = at::MemoryFormat::ChannelsLast;
  return input.dim() == 4 && (input.suggest_memory_format() == channels_last ||
                              weight.suggest_memory_format() == channels_last)
             ? channels_last
             : at::MemoryFormat::Contiguous;
}

std::shared_ptr<const TrainingPrimitives> primitives_for(const at::Tensor& input,
                                                         const at::Tensor& weight,
                                                         bool has_bias,
                                                         const ConvolutionArgs& args) {
  static PrimitiveCache<TrainingPrimitives>* cache = new PrimitiveCache<TrainingPrimitives>();
  const bool channels_last = result_format(input, weight) == at::MemoryFormat::ChannelsLast;
  KeyBuilder key;
  key.add_range(input.sizes()).add_range(weight.sizes()).add_range(args.stride);
  key.add_range(args.padding).add_range(args.dilation).add(args.groups).add(has_bias);
  key.add(channels_last);
  return cache->get(key.take(), [&] {
    const ConvolutionGeometry g = convolution_geometry(input, weight, args);
    const int64_t spatial = input.dim() - 2;
    const int64_t out_channels = output_channels(weight, args);
    // Activations and their gradients: channels-last programs' own layout (NHWC, so that
    // the reorders are casts and the result is written in place), and NHWC for every 2-D
    // convolution where oneDNN reaches AMX (its AMX kernels' layout); otherwise 16-channel
    // blocks where the channels allow (the layout oneDNN's avx512 BF16 kernels run fastest
    // on without AMX, and stock's training convolutions use; ungrouped or depthwise, see
    // bf16_blocks_fit), else oneDNN's choice.
    const bool nhwc = channels_last || (spatial == 2 && onednn_reaches_amx());
    const bool blocked = spatial == 2 && bf16_blocks_fit(input, out_channels, args);
    const tag activations = nhwc ? tag::nhwc : blocked ? tag::aBcd16b : tag::any;
    const auto src = dnnl::memory::desc(to_dims(input.sizes()), dt::bf16, activations);
    const auto dst = dnnl::memory::desc(to_dims(g.output_sizes), dt::f32, activations);
    const auto diff_dst = dnnl::memory::desc(to_dims(g.output_sizes), dt::bf16, activations);
    const auto diff_src = dnnl::memory::desc(to_dims(input.sizes()), dt::f32, activations);
    const dnnl::memory::dims weight_dims = onednn::dims_of(weight_user_desc(weight, args));
    const auto weights = dnnl::memory::desc(weight_dims, dt::bf16, tag::any);
    const auto diff_weights = dnnl::memory::desc(weight_dims, dt::f32, tag::any);
    const auto bias = dnnl::memory::desc({out_channels}, dt::f32, tag::a);
    const dnnl::memory::desc* with_bias = has_bias ? &bias : nullptr;
    const auto forward_pd = onednn::convolution_forward_primitive_desc(
        dnnl::prop_kind::forward_training, src, weights, with_bias, dst, g.window, base_attr());
    const auto data_pd = onednn::convolution_backward_data_primitive_desc(
        diff_src, weights, diff_dst, g.window, forward_pd, base_attr());
    const auto weights_pd = onednn::convolution_backward_weights_primitive_desc(
        src, diff_weights, with_bias, diff_dst, g.window, forward_pd, base_attr());
    return TrainingPrimitives{forward_pd,
                              dnnl::convolution_forward(forward_pd),
                              data_pd,
                              dnnl::convolution_backward_data(data_pd),
                              weights_pd,
                              dnnl::convolution_backward_weights(weights_pd),
                              g.output_sizes};
  });
}

// `from` reordered into `layout` in a new buffer (kept alive by `*keep`), or `from` itself
// when it already is in that layout.
dnnl::memory in_layout(dnnl::memory from, const dnnl::memory::desc& layout, at::Tensor* keep) {
  if (from.get_desc() == layout) return from;
  Reordered to = allocate(layout);
  cached_reorder(from.get_desc(), layout)->execute(thread_stream(), from, to.memory);
  *keep = to.storage;
  return to.memory;
}

// Has `run(memory)` write `user` through a primitive whose destination layout is `layout`:
// directly when the two agree, else into a buffer reordered into `user` afterwards.
template <class Run>
void run_into(dnnl::memory user, const dnnl::memory::desc& layout, Run run) {
  if (user.get_desc() == layout) {
    run(user);
    return;
  }
  Reordered buffer = allocate(layout);
  run(buffer.memory);
  cached_reorder(layout, user.get_desc())->execute(thread_stream(), buffer.memory, user);
}

}  // namespace

Fallback convolution_training_support(const at::Tensor& input, const at::Tensor& weight,
                                      const c10::optional<at::Tensor>& bias,
                                      const ConvolutionArgs& args) {
  if (args.transposed) return Fallback::unsupported_shape;
  if (const Fallback why = convolution_support(input, weight, bias, args); why != Fallback::none)
    return why;
  // Contiguous tensors, or channels-last ones of a 2-D convolution (3-D channels-last
  // programs keep stock's path).
  const auto dense_for = [](const at::Tensor& t) {
    return t.is_contiguous() ||
           (t.dim() == 4 && t.is_contiguous(at::MemoryFormat::ChannelsLast));
  };
  if (!dense_for(input) || !dense_for(weight)) return Fallback::unsupported_shape;
  if (bias && bias->defined() && !bias->is_contiguous()) return Fallback::unsupported_shape;
  return Fallback::none;
}

at::Tensor convolution_training_forward(const at::Tensor& input, const at::Tensor& weight,
                                        const at::Tensor& bias, const ConvolutionArgs& args,
                                        ConvolutionSaved* saved) {
  auto p = primitives_for(input, weight, bias.defined(), args);
  // The input and weights to BF16 in the primitive's layouts (one reorder each); the input's
  // stays for the backward.
  Reordered source = allocate(p->forward_pd.src_desc());
  dnnl::memory user_input = wrap(input, strided_desc(input));
  cached_reorder(user_input.get_desc(), source.memory.get_desc())
      ->execute(thread_stream(), user_input, source.memory);
  at::Tensor weights_buffer;
  const dnnl::memory weights = in_layout(wrap(weight, weight_user_desc(weight, args)),
                                         p->forward_pd.weights_desc(), &weights_buffer);
  saved->source = source.storage;
  at::Tensor output = pooled_empty(p->output_sizes, at::kFloat, result_format(input, weight));
  run_into(wrap(output, strided_desc(output)), p->forward_pd.dst_desc(), [&](dnnl::memory dst) {
    std::unordered_map<int, dnnl::memory> run{
        {DNNL_ARG_SRC, source.memory}, {DNNL_ARG_WEIGHTS, weights}, {DNNL_ARG_DST, dst}};
    if (bias.defined()) run.emplace(DNNL_ARG_BIAS, wrap(bias, p->forward_pd.bias_desc()));
    execute(p->forward, p->forward_pd, std::move(run));
  });
  thread_stream().wait();
  return output;
}

std::array<at::Tensor, 3> convolution_training_backward(const at::Tensor& grad_output,
                                                        const at::Tensor& input,
                                                        const at::Tensor& weight, bool has_bias,
                                                        const ConvolutionArgs& args,
                                                        const ConvolutionSaved& saved,
                                                        std::array<bool, 3> wanted) {
  auto p = primitives_for(input, weight, has_bias, args);
  std::array<at::Tensor, 3> grads;
  // The result's gradient to BF16 once, in the layout the backward-data primitive reads
  // (and again only if the weights' backward wants another).
  at::Tensor grad_buffer, grad_buffer2;
  const dnnl::memory grad = in_layout(wrap(grad_output, strided_desc(grad_output)),
                                      p->data_pd.diff_dst_desc(), &grad_buffer);
  if (wanted[0]) {
    at::Tensor weights_buffer;
    const dnnl::memory weights = in_layout(wrap(weight, weight_user_desc(weight, args)),
                                           p->data_pd.weights_desc(), &weights_buffer);
    grads[0] = pooled_empty(input.sizes(), at::kFloat, result_format(input, weight));
    run_into(wrap(grads[0], strided_desc(grads[0])), p->data_pd.diff_src_desc(), [&](dnnl::memory to) {
      execute(p->backward_data, p->data_pd,
              {{DNNL_ARG_DIFF_DST, grad}, {DNNL_ARG_WEIGHTS, weights}, {DNNL_ARG_DIFF_SRC, to}});
    });
  }
  if (wanted[1] || (has_bias && wanted[2])) {
    const dnnl::memory weights_grad_source =
        in_layout(grad, p->weights_pd.diff_dst_desc(), &grad_buffer2);
    at::Tensor source_buffer;
    const dnnl::memory source =
        in_layout(dnnl::memory(p->forward_pd.src_desc(), cpu_engine(), saved.source.data_ptr()),
                  p->weights_pd.src_desc(), &source_buffer);
    at::Tensor bias_grad;
    if (has_bias) bias_grad = at::empty({output_channels(weight, args)}, weight.options());
    // The weights' gradient in the weight's own memory format.
    at::Tensor weight_grad = at::empty(
        weight.sizes(), weight.options().memory_format(weight.suggest_memory_format()));
    dnnl::memory user = wrap(weight_grad, weight_user_desc(weight_grad, args));
    at::Tensor diff_buffer;
    dnnl::memory diff = user;
    if (p->weights_pd.diff_weights_desc() != user.get_desc()) {
      Reordered buffer = allocate(p->weights_pd.diff_weights_desc());
      diff_buffer = buffer.storage;
      diff = buffer.memory;
    }
    std::unordered_map<int, dnnl::memory> run{
        {DNNL_ARG_SRC, source}, {DNNL_ARG_DIFF_DST, weights_grad_source},
        {DNNL_ARG_DIFF_WEIGHTS, diff}};
    if (has_bias) run.emplace(DNNL_ARG_DIFF_BIAS, wrap(bias_grad, p->weights_pd.diff_bias_desc()));
    execute(p->backward_weights, p->weights_pd, std::move(run));
    if (diff_buffer.defined())
      cached_reorder(diff.get_desc(), user.get_desc())->execute(thread_stream(), diff, user);
    if (wanted[1]) grads[1] = weight_grad;
    if (has_bias && wanted[2]) grads[2] = bias_grad;
  }
  thread_stream().wait();
  return grads;
}

}  // namespace ipex_shim
