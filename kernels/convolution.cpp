// Reads as oneDNN's convolution example: named dimensions, `any` layouts for the primitive,
// a reorder only where the user's layout differs from the chosen one, an argument map,
// execute. Primitives are created once per shape and reused; weights are packed once into
// the primitive's layout (and precision) through the weight cache.
#include "kernels/convolution.h"

#include <ATen/TensorOperators.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_strided.h>

#include "kernels/primitive_cache.h"
#include "kernels/weight_cache.h"

namespace ipex_shim {
namespace {

using tag = dnnl::memory::format_tag;
using dt = dnnl::memory::data_type;

bool channels_last(const at::Tensor& tensor) {
  auto format = tensor.suggest_memory_format();
  return format == at::MemoryFormat::ChannelsLast || format == at::MemoryFormat::ChannelsLast3d;
}

bool dense(const at::Tensor& tensor) {
  if (tensor.is_contiguous()) return true;
  if (tensor.dim() == 4) return tensor.is_contiguous(at::MemoryFormat::ChannelsLast);
  if (tensor.dim() == 5) return tensor.is_contiguous(at::MemoryFormat::ChannelsLast3d);
  return false;
}

struct ConvPrimitive {
  dnnl::primitive_desc pd;  // convolution_forward or deconvolution_forward
  dnnl::primitive primitive;
  dnnl::memory::desc src_user;
  dnnl::memory::desc dst_user;
  std::vector<int64_t> output_sizes;
  bool output_channels_last;
};

int64_t output_channels(const at::Tensor& weight, const ConvolutionArgs& args) {
  // PyTorch: (out, in/groups, k...) for a convolution, (in, out/groups, k...) transposed.
  return args.transposed ? weight.size(1) * args.groups : weight.size(0);
}

// The weight as oneDNN sees it, over the tensor's own memory: (out, in, k...) with a leading
// group dimension when grouped. A transposed convolution's weight is read with its first two
// dimensions swapped (strides only, no copy).
dnnl::memory::desc weight_user_desc(const at::Tensor& weight, const ConvolutionArgs& args) {
  const int64_t groups = args.groups;
  int64_t out_dim = 0, in_dim = 1;
  if (args.transposed) std::swap(out_dim, in_dim);
  // Along the grouped dimension (dim 0 of the tensor) the group index is the slower part.
  const int64_t group_stride = weight.stride(0) * (weight.size(0) / groups);
  dnnl::memory::dims dims, strides;
  if (groups > 1) {
    dims.push_back(groups);
    strides.push_back(group_stride);
  }
  for (int64_t d : {out_dim, in_dim}) {
    dims.push_back(d == 0 ? weight.size(0) / groups : weight.size(1));
    strides.push_back(weight.stride(d));
  }
  for (int64_t d = 2; d < weight.dim(); ++d) {
    dims.push_back(weight.size(d));
    strides.push_back(weight.stride(d));
  }
  return dnnl::memory::desc(dims, dt::f32, strides);
}

ConvPrimitive make_primitive(const at::Tensor& input, const at::Tensor& weight, bool has_bias,
                             const ConvolutionArgs& args, Precision precision,
                             const ConvolutionPostOps& post_ops) {
  const int64_t spatial = input.dim() - 2;
  const int64_t batch = input.size(0);
  const int64_t out_channels = output_channels(weight, args);

  std::vector<int64_t> output_sizes = {batch, out_channels};
  dnnl::memory::dims strides, dilates, padding_l, padding_r;
  for (int64_t d = 0; d < spatial; ++d) {
    const int64_t in = input.size(d + 2);
    const int64_t kernel = weight.size(d + 2);
    const int64_t stride = args.stride[d];
    const int64_t dilation = args.dilation[d];
    const int64_t pad = args.padding[d];
    strides.push_back(stride);
    dilates.push_back(dilation - 1);  // oneDNN counts the gaps, PyTorch the spacing
    padding_l.push_back(pad);
    if (args.transposed) {
      // The output grows by output_padding on the right: less right padding to crop.
      output_sizes.push_back((in - 1) * stride - 2 * pad + dilation * (kernel - 1) +
                             args.output_padding[d] + 1);
      padding_r.push_back(pad - args.output_padding[d]);
    } else {
      const int64_t out = (in + 2 * pad - dilation * (kernel - 1) - 1) / stride + 1;
      output_sizes.push_back(out);
      // PyTorch drops the input rows that do not fit a whole stride; oneDNN wants the right
      // padding that makes its output size formula land on the same `out`.
      padding_r.push_back((out - 1) * stride + dilation * (kernel - 1) + 1 - in - pad);
    }
  }

  const dt compute = to_dnnl(precision);
  auto src_md = dnnl::memory::desc(to_dims(input.sizes()), compute, tag::any);
  auto weights_md = dnnl::memory::desc(weight_user_desc(weight, args).dims(), compute, tag::any);
  auto bias_md = dnnl::memory::desc({out_channels}, dt::f32, tag::a);
  // The destination is reordered into the program's fp32 layout anyway; in BF16 the
  // primitive writes BF16 (half the bytes to write and to read back), as autocast's
  // convolution does. Measured on resnet50 batch 16: 615 -> 496 ms per pass.
  auto dst_md = dnnl::memory::desc(to_dims(output_sizes), compute, tag::any);

  dnnl::primitive_attr attr = base_attr();
  if (post_ops.relu) {
    dnnl::post_ops ops;
    ops.append_eltwise(1.f, dnnl::algorithm::eltwise_relu, 0.f, 0.f);
    attr.set_post_ops(ops);
  }
  dnnl::primitive_desc pd;
  dnnl::primitive primitive;
  const auto inference = dnnl::prop_kind::forward_inference;
  if (args.transposed) {
    const auto algorithm = dnnl::algorithm::deconvolution_direct;
    auto desc = has_bias ? dnnl::deconvolution_forward::desc(inference, algorithm, src_md,
                                                             weights_md, bias_md, dst_md, strides,
                                                             dilates, padding_l, padding_r)
                         : dnnl::deconvolution_forward::desc(inference, algorithm, src_md,
                                                             weights_md, dst_md, strides,
                                                             dilates, padding_l, padding_r);
    auto typed = dnnl::deconvolution_forward::primitive_desc(desc, attr, cpu_engine());
    pd = typed;
    primitive = dnnl::deconvolution_forward(typed);
  } else {
    const auto algorithm = dnnl::algorithm::convolution_direct;
    auto desc = has_bias ? dnnl::convolution_forward::desc(inference, algorithm, src_md,
                                                           weights_md, bias_md, dst_md, strides,
                                                           dilates, padding_l, padding_r)
                         : dnnl::convolution_forward::desc(inference, algorithm, src_md,
                                                           weights_md, dst_md, strides, dilates,
                                                           padding_l, padding_r);
    auto typed = dnnl::convolution_forward::primitive_desc(desc, attr, cpu_engine());
    pd = typed;
    primitive = dnnl::convolution_forward(typed);
  }

  const bool out_channels_last = channels_last(input) || channels_last(weight);
  // The output tensor we will hand back decides the destination's user layout.
  at::MemoryFormat format = !out_channels_last ? at::MemoryFormat::Contiguous
                            : spatial == 3     ? at::MemoryFormat::ChannelsLast3d
                                               : at::MemoryFormat::ChannelsLast;
  at::Tensor probe = at::empty(output_sizes, at::TensorOptions(at::kFloat).memory_format(format));
  return ConvPrimitive{pd,
                       primitive,
                       strided_desc(input),
                       strided_desc(probe),
                       output_sizes,
                       out_channels_last};
}

}  // namespace

at::Tensor from_layout(const at::Tensor& tensor, const dnnl::memory::desc& layout) {
  at::Tensor result = at::empty_strided(tensor.sizes(), tensor.strides(), tensor.options());
  dnnl::memory from = wrap(tensor, layout);
  dnnl::memory to = wrap(result, strided_desc(result));
  cached_reorder(layout, to.get_desc())->execute(thread_stream(), from, to);
  thread_stream().wait();
  return result;
}

Fallback convolution_support(const at::Tensor& input, const at::Tensor& weight,
                             const c10::optional<at::Tensor>& bias, const ConvolutionArgs& args) {
  if (!plain_float_cpu(input) || !plain_float_cpu(weight)) return Fallback::unsupported_dtype;
  if (bias && bias->defined() && !plain_float_cpu(*bias)) return Fallback::unsupported_dtype;
  const int64_t dim = input.dim();
  if (dim < 3 || dim > 5 || weight.dim() != dim) return Fallback::unsupported_shape;
  const int64_t spatial = dim - 2;
  if (static_cast<int64_t>(args.stride.size()) != spatial ||
      static_cast<int64_t>(args.padding.size()) != spatial ||
      static_cast<int64_t>(args.dilation.size()) != spatial)
    return Fallback::unsupported_shape;
  // Stock raises the proper error message for channel mismatches.
  if (args.groups < 1 || weight.size(0) % args.groups != 0) return Fallback::unsupported_shape;
  const int64_t in_channels = args.transposed ? weight.size(0) : weight.size(1) * args.groups;
  if (input.size(1) != in_channels) return Fallback::unsupported_shape;
  if (args.transposed && static_cast<int64_t>(args.output_padding.size()) != spatial)
    return Fallback::unsupported_shape;
  if (input.numel() == 0 || weight.numel() == 0) return Fallback::unsupported_shape;
  for (int64_t d = 0; d < spatial; ++d) {
    if (args.stride[d] < 1 || args.dilation[d] < 1 || args.padding[d] < 0)
      return Fallback::unsupported_shape;
    const int64_t span = args.dilation[d] * (weight.size(d + 2) - 1) + 1;
    if (args.transposed) {
      // oneDNN takes no negative right padding, which output_padding > padding would need.
      const int64_t extra = args.output_padding[d];
      if (extra < 0 || extra > args.padding[d]) return Fallback::unsupported_shape;
      if ((input.size(d + 2) - 1) * args.stride[d] + span + extra <= 2 * args.padding[d])
        return Fallback::unsupported_shape;
    } else if (input.size(d + 2) + 2 * args.padding[d] < span) {
      return Fallback::unsupported_shape;
    }
  }
  if (bias && bias->defined() &&
      (bias->dim() != 1 || bias->size(0) != output_channels(weight, args)))
    return Fallback::unsupported_shape;
  if (!dense(input)) return Fallback::unsupported_shape;
  return Fallback::none;
}

at::Tensor convolution_forward(const at::Tensor& input, const at::Tensor& weight,
                               const c10::optional<at::Tensor>& bias,
                               const ConvolutionArgs& args, Precision precision,
                               const ConvolutionPostOps& post_ops,
                               const ConvolutionHandoff& handoff) {
  static PrimitiveCache<ConvPrimitive>* primitives = new PrimitiveCache<ConvPrimitive>();
  const BatchNormFold* fold = post_ops.batch_norm;
  const bool has_bias = (bias && bias->defined()) || fold != nullptr;

  KeyBuilder key;
  key.add_range(input.sizes()).add_range(input.strides()).add_range(weight.sizes());
  key.add(channels_last(weight)).add(has_bias).add_range(args.stride).add_range(args.padding);
  key.add_range(args.dilation).add(args.groups).add(precision).add(post_ops.relu);
  key.add(args.transposed).add_range(args.output_padding);
  auto conv = primitives->get(key.take(), [&] {
    return make_primitive(input, weight, has_bias, args, precision, post_ops);
  });

  // src: the user's tensor, converted into the primitive's layout and precision if needed.
  // A tensor handed over in oneDNN's layout is read as such.
  const dnnl::memory::desc src_given =
      handoff.input_layout ? *handoff.input_layout : conv->src_user;
  dnnl::memory src = wrap(input, src_given);
  Reordered src_reordered;
  const dnnl::memory::desc src_desc = conv->pd.src_desc(0);
  if (src_desc != src_given) {
    src_reordered = allocate(src_desc);
    cached_reorder(src_given, src_desc)->execute(thread_stream(), src, src_reordered.memory);
    src = src_reordered.memory;
  }

  // weights: packed once per layout, until the weight changes.
  const dnnl::memory::desc weights_desc = conv->pd.weights_desc(0);
  KeyBuilder variant;
  variant.add(weights_desc).add(args.groups).add(args.transposed).add(fold != nullptr);
  std::vector<at::Tensor> depends_on;
  if (fold) {
    for (const at::Tensor* t : {&fold->gamma, &fold->beta, &fold->mean, &fold->var})
      if (t->defined()) depends_on.push_back(*t);
    if (bias && bias->defined()) depends_on.push_back(*bias);
    variant.add(fold->eps);
  }
  PackedWeight packed = weight_cache().get(weight, variant.take(), depends_on, [&] {
    at::Tensor source = weight;
    at::Tensor folded_bias;
    if (fold) {
      at::Tensor scale = (fold->var + fold->eps).rsqrt();
      if (fold->gamma.defined()) scale = scale * fold->gamma;
      std::vector<int64_t> per_channel(weight.dim(), 1);
      per_channel[0] = -1;
      source = (weight * scale.reshape(per_channel)).contiguous();
      folded_bias = bias && bias->defined() ? (*bias - fold->mean) * scale : -fold->mean * scale;
      if (fold->beta.defined()) folded_bias = folded_bias + fold->beta;
      folded_bias = folded_bias.contiguous();
    }
    dnnl::memory user = wrap(source, weight_user_desc(source, args));
    Reordered out = reorder_to(user, weights_desc);
    return PackedWeight{out.storage, out.memory, folded_bias};
  }, /*replaces_others=*/fold != nullptr);

  at::MemoryFormat format = !conv->output_channels_last ? at::MemoryFormat::Contiguous
                            : input.dim() == 5          ? at::MemoryFormat::ChannelsLast3d
                                                        : at::MemoryFormat::ChannelsLast;
  at::Tensor output =
      at::empty(conv->output_sizes, at::TensorOptions(at::kFloat).memory_format(format));
  dnnl::memory dst_user = wrap(output, conv->dst_user);
  const dnnl::memory::desc dst_desc = conv->pd.dst_desc(0);
  const bool keep = handoff.keep_output_layout && handoff.output_layout &&
                    dst_desc.get_size() <= output.nbytes();
  if (keep) {
    dst_user = wrap(output, dst_desc);
    *handoff.output_layout = dst_desc;
  }
  const bool dst_direct = keep || dst_desc == conv->dst_user;
  Reordered dst_buffer;
  dnnl::memory dst = dst_user;
  if (!dst_direct) {
    dst_buffer = allocate(dst_desc);
    dst = dst_buffer.memory;
  }

  std::unordered_map<int, dnnl::memory> arguments = {
      {DNNL_ARG_SRC, src}, {DNNL_ARG_WEIGHTS, packed.memory}, {DNNL_ARG_DST, dst}};
  at::Tensor bias_contiguous;
  if (has_bias) {
    bias_contiguous = fold ? packed.bias : bias->contiguous();
    arguments.emplace(DNNL_ARG_BIAS, wrap(bias_contiguous, conv->pd.weights_desc(1)));
  }
  execute(conv->primitive, conv->pd, std::move(arguments));

  if (!dst_direct) {
    cached_reorder(dst_desc, conv->dst_user)->execute(thread_stream(), dst, dst_user);
    thread_stream().wait();
  }
  return output;
}

}  // namespace ipex_shim
