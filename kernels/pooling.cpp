#include "kernels/pooling.h"

#include <ATen/ops/empty.h>
#include <ATen/ops/aminmax.h>
#include <ATen/ops/avg_pool2d.h>

#include <cmath>
#include <limits>

#include <stdexcept>

#include "kernels/buffer_pool.h"
#include "kernels/channel_scale.h"
#include "kernels/convolution.h"
#include "kernels/int8.h"
#include "kernels/onednn_compat.h"
#include "kernels/onednn_context.h"
#include "kernels/primitive_cache.h"

namespace ipex_shim {
namespace {

struct PoolPrimitive {
  onednn::pooling_forward::primitive_desc pd;
  onednn::pooling_forward primitive;
  std::vector<int64_t> output_sizes;
};

// PyTorch's output size, ceil_mode included (a last window must start inside the input or
// its left padding).
int64_t pooled_size(int64_t in, int64_t kernel, int64_t stride, int64_t pad, int64_t dilation,
                    bool ceil_mode) {
  const int64_t span = dilation * (kernel - 1) + 1;
  const int64_t numerator = in + 2 * pad - span + (ceil_mode ? stride - 1 : 0);
  int64_t out = numerator / stride + 1;
  if (ceil_mode && (out - 1) * stride >= in + pad) --out;
  return out;
}

// A 2-D pooling's window geometry in oneDNN's terms, and PyTorch's output sizes.
struct PoolGeometry {
  std::vector<int64_t> output_sizes;
  onednn::PoolingWindow window;
};

PoolGeometry pool_geometry(const at::Tensor& input, c10::IntArrayRef kernel,
                           c10::IntArrayRef stride, c10::IntArrayRef padding,
                           c10::IntArrayRef dilation, bool ceil_mode) {
  PoolGeometry g;
  g.output_sizes = {input.size(0), input.size(1)};
  for (int64_t d = 0; d < 2; ++d) {
    const int64_t in = input.size(d + 2);
    const int64_t out = pooled_size(in, kernel[d], stride[d], padding[d], dilation[d], ceil_mode);
    g.output_sizes.push_back(out);
    g.window.strides.push_back(stride[d]);
    g.window.kernel.push_back(kernel[d]);
    g.window.dilates.push_back(dilation[d] - 1);
    g.window.padding_l.push_back(padding[d]);
    // PyTorch's output size (ceil_mode) may need more padding on the right than on the left.
    g.window.padding_r.push_back((out - 1) * stride[d] + dilation[d] * (kernel[d] - 1) + 1 - in -
                          padding[d]);
  }
  return g;
}

// A tensor the program made that oneDNN pools as it is: dense fp32, 4-D, contiguous in
// its suggested memory format.
Fallback plain_pool_input(const at::Tensor& input) {
  if (!plain_float_cpu(input)) return Fallback::unsupported_dtype;
  if (input.dim() != 4 || input.numel() == 0 ||
      !input.is_contiguous(input.suggest_memory_format()))
    return Fallback::unsupported_shape;
  return Fallback::none;
}

}  // namespace

Fallback max_pool_support(const at::Tensor& input, c10::IntArrayRef kernel,
                          c10::IntArrayRef stride, c10::IntArrayRef padding,
                          c10::IntArrayRef dilation) {
  if (input.dim() != 4) return Fallback::unsupported_shape;
  if (kernel.size() != 2 || stride.size() != 2 || padding.size() != 2 || dilation.size() != 2)
    return Fallback::unsupported_shape;
  for (size_t d = 0; d < 2; ++d) {
    if (kernel[d] < 1 || stride[d] < 1 || dilation[d] < 1 || padding[d] < 0 ||
        2 * padding[d] > kernel[d])
      return Fallback::unsupported_shape;
  }
  return Fallback::none;
}

namespace {

// Pools `source`, the bytes of `input` in some oneDNN layout, with `algorithm` into a new
// tensor of PyTorch's output sizes (in the input's memory format) whose bytes are the
// result in `*output_layout` (the source's type and layout).
at::Tensor pool_bytes(const at::Tensor& input, const dnnl::memory& source,
                      dnnl::algorithm algorithm, c10::IntArrayRef kernel,
                      c10::IntArrayRef stride, c10::IntArrayRef padding,
                      c10::IntArrayRef dilation, bool ceil_mode,
                      dnnl::memory::desc* output_layout) {
  const dnnl::memory::desc layout = source.get_desc();
  static PrimitiveCache<PoolPrimitive>* primitives = new PrimitiveCache<PoolPrimitive>();
  KeyBuilder key;
  key.add(layout).add(static_cast<int>(algorithm)).add_range(kernel).add_range(stride);
  key.add_range(padding).add_range(dilation).add(ceil_mode);
  auto pool = primitives->get(key.take(), [&] {
    const PoolGeometry g = pool_geometry(input, kernel, stride, padding, dilation, ceil_mode);
    const std::vector<int64_t>& output_sizes = g.output_sizes;
    // The destination in the source's own layout (format `any`): oneDNN's fast pooling
    // kernels want both alike.
    auto dst_md = dnnl::memory::desc(to_dims(output_sizes), onednn::data_type_of(layout),
                                     dnnl::memory::format_tag::any);
    auto pd = onednn::pooling_forward_primitive_desc(dnnl::prop_kind::forward_inference,
                                                     algorithm, layout, dst_md, g.window,
                                                     base_attr());
    return PoolPrimitive{pd, onednn::pooling_forward(pd), output_sizes};
  });
  // Strides as stock's pooling gives them (channels-last in, channels-last out): the
  // program sees them, and the next convolution's result format follows them.
  // (fp32-sized: the program's tensor, whose bytes hold the result in its layout)
  at::Tensor output =
      pooled_empty(pool->output_sizes, input.scalar_type(), input.suggest_memory_format());
  *output_layout = pool->pd.dst_desc();
  if (output_layout->get_size() > output.nbytes())  // a blocked layout padded beyond fp32
    throw std::runtime_error("pooling: the handed-over layout does not fit the result");
  execute(pool->primitive, pool->pd,
          {{DNNL_ARG_SRC, source}, {DNNL_ARG_DST, wrap(output, *output_layout)}});
  return output;
}

}  // namespace

at::Tensor max_pool_handed_over(const at::Tensor& input, const dnnl::memory::desc& layout,
                                c10::IntArrayRef kernel, c10::IntArrayRef stride,
                                c10::IntArrayRef padding, c10::IntArrayRef dilation,
                                bool ceil_mode, dnnl::memory::desc* output_layout) {
  return pool_bytes(input, wrap(input, layout), dnnl::algorithm::pooling_max, kernel, stride,
                    padding, dilation, ceil_mode, output_layout);
}

Fallback avg_pool_support(const at::Tensor& input, c10::IntArrayRef kernel,
                          c10::IntArrayRef stride, c10::IntArrayRef padding, bool ceil_mode,
                          bool divisor_override) {
  // ceil_mode's partial last windows and an explicit divisor count differently from
  // oneDNN's two averaging algorithms; stock computes those.
  if (ceil_mode || divisor_override) return Fallback::unsupported_shape;
  const int64_t ones[] = {1, 1};
  return max_pool_support(input, kernel, stride, padding, ones);
}

bool adaptive_as_average(const at::Tensor& input, c10::IntArrayRef output_size,
                         std::vector<int64_t>* kernel) {
  if (input.dim() != 4 || output_size.size() != 2) return false;
  kernel->clear();
  for (int64_t d = 0; d < 2; ++d) {
    const int64_t in = input.size(d + 2), out = output_size[d];
    if (out < 1 || in < out || in % out != 0) {
      kernel->clear();
      return false;
    }
    kernel->push_back(in / out);
  }
  return true;
}

at::Tensor avg_pool_handed_over(const at::Tensor& input, const dnnl::memory::desc& layout,
                                c10::IntArrayRef kernel, c10::IntArrayRef stride,
                                c10::IntArrayRef padding, bool count_include_pad,
                                dnnl::memory::desc* output_layout) {
  const int64_t ones[] = {1, 1};
  return pool_bytes(input, wrap(input, layout),
                    count_include_pad ? dnnl::algorithm::pooling_avg_include_padding
                                      : dnnl::algorithm::pooling_avg_exclude_padding,
                    kernel, stride, padding, ones, false, output_layout);
}

at::Tensor avg_pool_values(const at::Tensor& input, const dnnl::memory::desc& layout,
                           c10::IntArrayRef kernel, c10::IntArrayRef stride,
                           c10::IntArrayRef padding, bool count_include_pad, float scale,
                           dnnl::memory::desc* fp32_layout) {
  if (fp32_layout) *fp32_layout = dnnl::memory::desc();
  const dnnl::memory::data_type type = onednn::data_type_of(layout);
  ChannelRuns runs;
  if (input.dim() == 4 && kernel.size() == 2 && kernel[0] == input.size(2) &&
      kernel[1] == input.size(3) && padding.size() == 2 && padding[0] == 0 &&
      padding[1] == 0 && channel_runs_of(layout, &runs)) {
    // One window covering the whole image: channel averages straight from the bytes, exact
    // sums for INT8. oneDNN's way below (a reorder into fp32 first) wrote four times the INT8
    // bytes it read (0.45 ms of a resnet50 batch-16 INT8 pass on AMX, a 16x2048x7x7 input)
    // and took 200 us a call on efficientnet_v2_s's 4x960x14x14 BF16 squeeze-excitation
    // input, where these channel sums take 93 (profiler, 24 calls).
    at::Tensor averages = pooled_empty({input.size(0), input.size(1), 1, 1}, at::kFloat,
                                       input.suggest_memory_format());
    average_channel_runs(input.data_ptr(), type, scale, runs, averages.data_ptr<float>());
    return averages;
  }
  // A layout padded beyond the program's channels (24 channels in blocks of 16, as oneDNN 3
  // lays them out): its fp32 average would not fit the result's bytes, so the bytes become
  // values in the program's layout and stock's kernel averages those (callers hold the
  // exclude guard).
  const size_t stored_elements =
      layout.get_size() / dnnl::memory::data_type_size(onednn::data_type_of(layout));
  if (stored_elements > static_cast<size_t>(input.numel()))
    return at::avg_pool2d(from_layout(input, layout, scale), kernel, stride, padding,
                          /*ceil_mode=*/false, count_include_pad);
  // oneDNN 2.6 pools only within one type, and an average rounded back to INT8 (or BF16)
  // loses half a step: the bytes become fp32 values first, in their own layout (as many
  // bytes as the reorder into the program's layout they replace), and are averaged there.
  dnnl::memory source = wrap(input, layout);
  Reordered values;
  if (onednn::data_type_of(layout) != dnnl::memory::data_type::f32 || scale != 1.f) {
    const dnnl::memory::desc f32_layout =
        onednn::with_data_type(layout, dnnl::memory::data_type::f32);
    values = allocate(f32_layout);
    cached_scaled_reorder(layout, f32_layout, 1.f / scale)
        ->execute(thread_stream(), source, values.memory);
    source = values.memory;
  }
  const int64_t ones[] = {1, 1};
  dnnl::memory::desc pooled_layout;
  at::Tensor pooled = pool_bytes(input, source,
                                 count_include_pad ? dnnl::algorithm::pooling_avg_include_padding
                                                   : dnnl::algorithm::pooling_avg_exclude_padding,
                                 kernel, stride, padding, ones, false, &pooled_layout);
  const dnnl::memory::desc program_layout = strided_desc(pooled);
  if (pooled_layout == program_layout) return pooled;
  if (fp32_layout) {
    *fp32_layout = pooled_layout;
    return pooled;
  }
  return from_layout(pooled, pooled_layout);
}

namespace {

// The channel-blocked layout oneDNN's jit pooling reads for a plain NCHW tensor of
// `channels` (16 to a block with AVX-512, else 8), or `undef` when the channels do not fill
// whole blocks (the blocked copy would be larger than the tensor's result).
dnnl::memory::format_tag blocked_channels(int64_t channels) {
  const auto isa = static_cast<unsigned>(dnnl::get_effective_cpu_isa());
  const auto avx512 = static_cast<unsigned>(dnnl::cpu_isa::avx512_core);
  if ((isa & avx512) == avx512 && channels % 16 == 0) return dnnl::memory::format_tag::nChw16c;
  if (channels % 8 == 0) return dnnl::memory::format_tag::nChw8c;
  return dnnl::memory::format_tag::undef;
}

// Pools a plain fp32 tensor into a new one of stock's sizes and memory format. oneDNN's
// kernel for plain NCHW (simple_nchw) took 7.9 ms on squeezenet's 2x128x55x55 max pool where
// stock took 2.3: such an input is reordered into channel blocks for its jit kernels first.
at::Tensor pool_values(const at::Tensor& input, dnnl::algorithm algorithm,
                       c10::IntArrayRef kernel, c10::IntArrayRef stride,
                       c10::IntArrayRef padding, c10::IntArrayRef dilation, bool ceil_mode) {
  dnnl::memory source = wrap(input, strided_desc(input));
  Reordered blocked;
  if (input.suggest_memory_format() != at::MemoryFormat::ChannelsLast) {
    const dnnl::memory::format_tag tag = blocked_channels(input.size(1));
    if (tag == dnnl::memory::format_tag::undef)
      throw std::logic_error("pooling: channels do not fill whole blocks");
    blocked = reorder_to(source, dnnl::memory::desc(to_dims(input.sizes()),
                                                    dnnl::memory::data_type::f32, tag));
    source = blocked.memory;
  }
  dnnl::memory::desc pooled_layout;
  at::Tensor pooled = pool_bytes(input, source, algorithm, kernel, stride, padding, dilation,
                                 ceil_mode, &pooled_layout);
  if (pooled_layout == strided_desc(pooled)) return pooled;
  return from_layout(pooled, pooled_layout);
}

}  // namespace

Fallback plain_pool_inference_input(const at::Tensor& input) {
  if (const Fallback why = plain_pool_input(input); why != Fallback::none) return why;
  if (input.suggest_memory_format() != at::MemoryFormat::ChannelsLast &&
      blocked_channels(input.size(1)) == dnnl::memory::format_tag::undef)
    return Fallback::unsupported_shape;
  return Fallback::none;
}

at::Tensor max_pool_values(const at::Tensor& input, c10::IntArrayRef kernel,
                           c10::IntArrayRef stride, c10::IntArrayRef padding,
                           c10::IntArrayRef dilation, bool ceil_mode) {
  return pool_values(input, dnnl::algorithm::pooling_max, kernel, stride, padding, dilation,
                     ceil_mode);
}

at::Tensor avg_pool_plain(const at::Tensor& input, c10::IntArrayRef kernel,
                          c10::IntArrayRef stride, c10::IntArrayRef padding,
                          bool count_include_pad) {
  const int64_t ones[] = {1, 1};
  return pool_values(input,
                     count_include_pad ? dnnl::algorithm::pooling_avg_include_padding
                                       : dnnl::algorithm::pooling_avg_exclude_padding,
                     kernel, stride, padding, ones, false);
}

}  // namespace ipex_shim

namespace ipex_shim {
namespace {

struct PlainMaxPool {
  onednn::pooling_forward::primitive_desc forward_pd;
  onednn::pooling_forward forward;
  // Training only: the backward, which reads the forward's workspace.
  c10::optional<onednn::pooling_backward::primitive_desc> backward_pd;
  c10::optional<onednn::pooling_backward> backward;
  std::vector<int64_t> output_sizes;
  at::MemoryFormat format;
};

std::shared_ptr<const PlainMaxPool> plain_max_pool(const at::Tensor& input,
                                                   c10::IntArrayRef kernel,
                                                   c10::IntArrayRef stride,
                                                   c10::IntArrayRef padding,
                                                   c10::IntArrayRef dilation, bool ceil_mode,
                                                   bool training) {
  static PrimitiveCache<PlainMaxPool>* primitives = new PrimitiveCache<PlainMaxPool>();
  const dnnl::memory::desc source = strided_desc(input);
  KeyBuilder key;
  key.add(source).add_range(kernel).add_range(stride).add_range(padding).add_range(dilation);
  key.add(ceil_mode).add(training);
  return primitives->get(key.take(), [&] {
    const PoolGeometry g = pool_geometry(input, kernel, stride, padding, dilation, ceil_mode);
    const at::MemoryFormat format = input.suggest_memory_format();
    const auto tag = format == at::MemoryFormat::ChannelsLast ? dnnl::memory::format_tag::nhwc
                                                               : dnnl::memory::format_tag::nchw;
    const dnnl::memory::desc destination(to_dims(g.output_sizes), onednn::data_type_of(source),
                                         tag);
    const auto prop =
        training ? dnnl::prop_kind::forward_training : dnnl::prop_kind::forward_inference;
    const auto forward_pd = onednn::pooling_forward_primitive_desc(
        prop, dnnl::algorithm::pooling_max, source, destination, g.window, base_attr());
    PlainMaxPool pool{forward_pd, onednn::pooling_forward(forward_pd), {}, {}, g.output_sizes,
                      format};
    if (training) {
      pool.backward_pd.emplace(onednn::pooling_backward_primitive_desc(
          dnnl::algorithm::pooling_max, source, destination, g.window, forward_pd, base_attr()));
      pool.backward.emplace(*pool.backward_pd);
    }
    return pool;
  });
}

}  // namespace

Fallback max_pool_plain_support(const at::Tensor& input, c10::IntArrayRef kernel,
                                c10::IntArrayRef stride, c10::IntArrayRef padding,
                                c10::IntArrayRef dilation) {
  if (const Fallback why = max_pool_support(input, kernel, stride, padding, dilation);
      why != Fallback::none)
    return why;
  return plain_pool_input(input);
}

bool max_pool_needs_stock(const at::Tensor& input) {
  // One pass for both (about 2 ms on resnet's 100 MB stem activation, against 60 ms that
  // the kernel saves over stock's): a NaN makes both extremes NaN.
  // Over the dense storage as one flat run (a reduction over a channels-last tensor's
  // logical order took 15 ms where this takes 2).
  const auto extremes =
      at::aminmax(input.as_strided({input.numel()}, {1}, input.storage_offset()));
  const float lowest = std::get<0>(extremes).item<float>();
  return std::isnan(lowest) || lowest == -std::numeric_limits<float>::infinity();
}

at::Tensor max_pool_plain(const at::Tensor& input, c10::IntArrayRef kernel,
                          c10::IntArrayRef stride, c10::IntArrayRef padding,
                          c10::IntArrayRef dilation, bool ceil_mode, at::Tensor* workspace) {
  auto pool = plain_max_pool(input, kernel, stride, padding, dilation, ceil_mode,
                             workspace != nullptr);
  at::Tensor output = pooled_empty(pool->output_sizes, input.scalar_type(), pool->format);
  std::unordered_map<int, dnnl::memory> args{
      {DNNL_ARG_SRC, wrap(input, pool->forward_pd.src_desc())},
      {DNNL_ARG_DST, wrap(output, pool->forward_pd.dst_desc())}};
  if (workspace) {
    const dnnl::memory::desc layout = pool->forward_pd.workspace_desc();
    *workspace = pooled_empty({static_cast<int64_t>(layout.get_size())}, at::kByte);
    args.emplace(DNNL_ARG_WORKSPACE, wrap(*workspace, layout));
  }
  execute(pool->forward, pool->forward_pd, std::move(args));
  return output;
}

at::Tensor max_pool_plain_backward(const at::Tensor& grad_output, const at::Tensor& input,
                                   const at::Tensor& workspace, c10::IntArrayRef kernel,
                                   c10::IntArrayRef stride, c10::IntArrayRef padding,
                                   c10::IntArrayRef dilation, bool ceil_mode) {
  auto pool = plain_max_pool(input, kernel, stride, padding, dilation, ceil_mode, true);
  const at::Tensor grad = grad_output.to(input.scalar_type()).contiguous(pool->format);
  at::Tensor grad_input = pooled_empty(input.sizes(), input.scalar_type(), pool->format);
  execute(*pool->backward, *pool->backward_pd,
          {{DNNL_ARG_DIFF_DST, wrap(grad, pool->backward_pd->diff_dst_desc())},
           {DNNL_ARG_DIFF_SRC, wrap(grad_input, pool->backward_pd->diff_src_desc())},
           {DNNL_ARG_WORKSPACE, wrap(workspace, pool->forward_pd.workspace_desc())}});
  return grad_input;
}

}  // namespace ipex_shim
