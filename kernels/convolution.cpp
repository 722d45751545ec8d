// Reads as oneDNN's convolution example: named dimensions, `any` layouts for the primitive,
// a reorder only where the user's layout differs from the chosen one, an argument map,
// execute. Primitives are created once per shape and reused; weights are packed once into
// the primitive's layout (and precision) through the weight cache.
#include "kernels/buffer_pool.h"
#include "kernels/convolution.h"

#include <ATen/TensorOperators.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_strided.h>
#include <c10/core/CPUAllocator.h>
#include <c10/core/MemoryFormat.h>
#include <c10/util/accumulate.h>

#include <stdexcept>

#include "kernels/parallel.h"
#include "kernels/primitive_cache.h"
#include "kernels/weight_cache.h"
#include "shim/runtime.h"
#include "shim/torch_compat.h"

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

// The destination's type: the compute type, or INT8's (u8/s8 when quantised, else fp32).
dt destination_type(Precision precision, const Int8Spec* int8) {
  if (!int8) return to_dnnl(precision);
  return int8->output_scale > 0.f ? activation_type(int8->output_uint8) : dt::f32;
}

// The scale of the primitive's result: an INT8 result's, or 0 for fp32 values.
float result_scale(const Int8Spec* int8) { return int8 ? int8->output_scale : 0.f; }

// The clamp's upper bound as the primitive keeps it (0: none).
float clamp_in_primitive(const ConvolutionPostOps& post_ops, const Int8Spec* int8) {
  if (!post_ops.relu || post_ops.relu_upper <= 0.f) return 0.f;
  return onednn::clip_bound_in_primitive(post_ops.relu_upper, result_scale(int8));
}

// Whether a handed-over INT8 addend's bytes go into the destination as they are, the sum
// post-op rescaling them, instead of through a rescaling reorder first (and then, as they lie:
// the sum may go over them in place). Where oneDNN reaches AMX the reorder cost more than the
// sum's scale (resnet50 batch 16 with oneDNN 2.6: 12 u8 rescaling reorders took 11.7 ms of a
// 61 ms pass; a layer1 1x1 convolution with its add took 1.8 ms copied as is against 3.3 ms
// reordered), and likewise on an AMD EPYC with avx512_bf16 and no AMX (resnet50 int8 batch
// 16: 106.0 against 119.2 ms with oneDNN 3.7, 127.3 against 137.4 with 2.6). On a Xeon with
// VNNI and no BF16 the sum's scale made oneDNN 2.6's brgconv_1x1 slower by more than the
// reorder cost (47.2 against 41.4 ms of resnet50's 1x1 convolutions a pass), so there, and
// below, the addend is requantised (int8_sum_reads_addends_as_they_are).
bool addend_bytes_as_they_are(const ConvolutionPostOps& post_ops, const Int8Spec* int8) {
  if (!post_ops.sum || !post_ops.sum_layout || result_scale(int8) <= 0.f) return false;
  if (!int8_sum_reads_addends_as_they_are()) return false;
  // The type the sum reads: s8 for an addend with its own calibrated scale, else the result's.
  const dt read = post_ops.sum_s8_scale > 0.f ? dt::s8 : activation_type(int8->output_uint8);
  return onednn::data_type_of(*post_ops.sum_layout) == read;
}

// The sum post-op's factor as the primitive keeps it (0: no sum). An addend copied as it is
// keeps its own scale; otherwise an s8 addend (sum_s8_scale) is rescaled by the sum, and any
// other addend is written into the destination in the result's own type and scale first.
float sum_post_op_scale(const ConvolutionPostOps& post_ops, const Int8Spec* int8) {
  if (!post_ops.sum) return 0.f;
  const float result = result_scale(int8);
  const float addend = addend_bytes_as_they_are(post_ops, int8)      ? post_ops.sum_scale
                       : result > 0.f && post_ops.sum_s8_scale > 0.f ? post_ops.sum_s8_scale
                       : result > 0.f                                ? result
                                                                     : 1.f;
  return onednn::sum_scale_in_primitive(addend, result);
}

// An INT8 convolution's scales; the weights' are known once they are packed.
onednn::ProductScales product_scales(const Int8Spec& int8, const ConvolutionArgs& args,
                                     const at::Tensor& weight_scales = at::Tensor()) {
  onednn::ProductScales scales;
  scales.src = int8.input_scale;
  if (weight_scales.defined()) {
    const float* values = weight_scales.data_ptr<float>();
    scales.weights.assign(values, values + weight_scales.numel());
  }
  // Output channels: the weights' dimension 0, or 1 after a leading group dimension.
  scales.weights_mask = args.groups > 1 ? (1 << 0) | (1 << 1) : 1 << 0;
  scales.dst = int8.output_scale;
  return scales;
}

// A float tensor of `sizes` in `format` over `owner`'s memory, with a storage of its own
// (INT8 op identities follow storages, so the result must not take the addend's) that keeps
// `owner`'s alive; a resize moves it to memory of its own. Made as at::empty makes its
// tensors, without a call through the dispatcher.
at::Tensor over_memory_of(const at::Tensor& owner, c10::IntArrayRef sizes,
                          at::MemoryFormat format) {
  const c10::Storage& storage = owner.storage();
  auto* keep = new c10::Storage(storage);
  c10::DataPtr bytes(compat::storage_bytes(storage), keep,
                     [](void* context) { delete static_cast<c10::Storage*>(context); },
                     c10::Device(c10::DeviceType::CPU));
  c10::Storage alias(c10::Storage::use_byte_size_t(), static_cast<int64_t>(storage.nbytes()),
                     std::move(bytes), c10::GetCPUAllocator(), /*resizable=*/true);
  at::Tensor tensor = at::detail::make_tensor<c10::TensorImpl>(
      std::move(alias), c10::DispatchKeySet(c10::DispatchKey::CPU),
      caffe2::TypeMeta::Make<float>());
  tensor.unsafeGetTensorImpl()->set_sizes_contiguous(sizes);
  tensor.unsafeGetTensorImpl()->empty_tensor_restride(format);
  return tensor;
}

// Whether two tensors' storages share any byte (the source of a convolution must not be the
// memory its result is written over).
bool memory_overlaps(const at::Tensor& a, const at::Tensor& b) {
  const auto a_begin = reinterpret_cast<uintptr_t>(compat::storage_bytes(a.storage()));
  const auto b_begin = reinterpret_cast<uintptr_t>(compat::storage_bytes(b.storage()));
  return a_begin < b_begin + b.storage().nbytes() && b_begin < a_begin + a.storage().nbytes();
}

struct ConvPrimitive {
  dnnl::primitive_desc pd;  // convolution_forward or deconvolution_forward
  dnnl::primitive primitive;
  dnnl::memory::desc src_user;
  dnnl::memory::desc dst_user;
  std::vector<int64_t> output_sizes;
  bool output_channels_last;
  // The primitive's own descriptors, queried once: each query copies one, and a batch-1
  // pass makes dozens of calls.
  dnnl::memory::desc src, weights, bias, dst, scratchpad;
  std::string weights_key;  // `weights` as KeyBuilder adds it
};

// `to` gets `from`'s values: the same bytes when both have one layout (a parallel copy, at
// memory speed), else a reorder without scaling.
void copy_bytes(dnnl::memory from, dnnl::memory to) {
  const dnnl::memory::desc from_desc = from.get_desc(), to_desc = to.get_desc();
  if (from_desc != to_desc) {
    cached_reorder(from_desc, to_desc)->execute(thread_stream(), from, to);
    return;
  }
  parallel_copy(to.get_data_handle(), from.get_data_handle(),
                static_cast<int64_t>(from_desc.get_size()));
}

// `int8`: quantised (src u8/s8, weights s8, dst fp32 or u8/s8 as the spec says) with
// `scales` (their weights' empty: the layout query for packing).
ConvPrimitive make_primitive(const at::Tensor& input, const at::Tensor& weight, bool has_bias,
                             const ConvolutionArgs& args, Precision precision,
                             const ConvolutionPostOps& post_ops, const Int8Spec* int8 = nullptr,
                             const onednn::ProductScales* scales = nullptr) {
  const int64_t spatial = input.dim() - 2;
  const int64_t out_channels = output_channels(weight, args);
  const ConvolutionGeometry g = convolution_geometry(input, weight, args);
  const std::vector<int64_t>& output_sizes = g.output_sizes;

  const dt compute = to_dnnl(precision);
  const dt src_type = int8 ? activation_type(int8->input_uint8) : compute;
  const dt weights_type = int8 ? dt::s8 : compute;
  // The destination is reordered into the program's fp32 layout anyway; in BF16 the
  // primitive writes BF16 (half the bytes to write and to read back), as autocast's
  // convolution does. Measured on resnet50 batch 16: 615 -> 496 ms per pass.
  const dt dst_type = destination_type(precision, int8);
  auto src_md = dnnl::memory::desc(to_dims(input.sizes()), src_type, tag::any);
  auto weights_md =
      dnnl::memory::desc(onednn::dims_of(weight_user_desc(weight, args)), weights_type, tag::any);
  auto bias_md = dnnl::memory::desc({out_channels}, dt::f32, tag::a);
  auto dst_md = dnnl::memory::desc(to_dims(output_sizes), dst_type, tag::any);
  // BF16 2-D: oneDNN's choice for `any` here (avx512_core_bf16 without AMX) is brgconv on
  // NHWC; its jit_bf16 kernels on 16-channel blocks were faster for resnet50's 1x1
  // convolutions (78 against 91 ms a pass at batch 16, ONEDNN_VERBOSE), and a whole pass
  // with blocked layouts took 151-154 against 160-174 ms in alternating runs. Channel
  // counts of 16 multiples only, so a handed-over result still fits its fp32 tensor, and
  // no groups but depthwise ones (bf16_blocks_fit).
  // With AMX, `any` gives brgconv's AMX kernels on NHWC, which blocked layouts do not reach
  // (jit_bf16 instead): resnet50 batch 16 took 550 ms a pass blocked against fp32's 365.
  const bool blocked = !int8 && precision == Precision::bf16 && spatial == 2 &&
                       !args.transposed && !onednn_reaches_amx() &&
                       bf16_blocks_fit(input, out_channels, args);
  if (blocked) {
    src_md = dnnl::memory::desc(to_dims(input.sizes()), src_type, tag::aBcd16b);
    dst_md = dnnl::memory::desc(to_dims(output_sizes), dst_type, tag::aBcd16b);
  }

  dnnl::primitive_attr attr = base_attr();
  if (scales) onednn::set_product_scales(attr, *scales);
  if (post_ops.relu || post_ops.sum || post_ops.activation != ConvolutionPostOps::Activation::none) {
    dnnl::post_ops ops;
    // The destination is filled with the addend before the primitive runs.
    const bool int8_result = int8 && int8->output_scale > 0.f;
    if (post_ops.sum && int8_result && post_ops.sum_s8_scale > 0.f) {
      ops.append_sum(sum_post_op_scale(post_ops, int8), 0, dt::s8);
    } else if (post_ops.sum) {
      ops.append_sum(sum_post_op_scale(post_ops, int8));
    }
    if (const float upper = clamp_in_primitive(post_ops, int8); upper > 0.f) {
      onednn::append_eltwise(ops, dnnl::algorithm::eltwise_clip, 0.f, upper);
    } else if (post_ops.relu) {
      onednn::append_eltwise(ops, dnnl::algorithm::eltwise_relu, 0.f, 0.f);
    } else if (post_ops.activation != ConvolutionPostOps::Activation::none) {
      onednn::append_scale_sensitive(ops,
                                     post_ops.activation == ConvolutionPostOps::Activation::silu
                                         ? onednn::ScaleSensitiveActivation::silu
                                         : onednn::ScaleSensitiveActivation::hardswish,
                                     result_scale(int8));
    }
    attr.set_post_ops(ops);
  }
  dnnl::primitive_desc pd;
  dnnl::primitive primitive;
  const auto inference = dnnl::prop_kind::forward_inference;
  const dnnl::memory::desc* bias = has_bias ? &bias_md : nullptr;
  if (args.transposed) {
    auto typed = onednn::deconvolution_forward_primitive_desc(inference, src_md, weights_md, bias,
                                                              dst_md, g.window, attr);
    pd = typed;
    primitive = dnnl::deconvolution_forward(typed);
  } else {
    auto typed = onednn::convolution_forward_primitive_desc(inference, src_md, weights_md, bias,
                                                            dst_md, g.window, attr);
    if (blocked && served_by_reference(typed)) {
      // The blocks asked for reach no JIT kernel for this shape: oneDNN's own choice then.
      src_md = dnnl::memory::desc(to_dims(input.sizes()), src_type, tag::any);
      dst_md = dnnl::memory::desc(to_dims(output_sizes), dst_type, tag::any);
      typed = onednn::convolution_forward_primitive_desc(inference, src_md, weights_md, bias,
                                                         dst_md, g.window, attr);
    }
    pd = typed;
    primitive = dnnl::convolution_forward(typed);
  }

  // Channels-last results where stock's are (shim/torch_compat.h: which convolutions differs
  // between torch releases).
  const bool out_channels_last = compat::convolution_keeps_channels_last(spatial, args.transposed) &&
                                 (channels_last(input) || channels_last(weight));
  // The output tensor we will hand back decides the destination's user layout.
  at::MemoryFormat format = !out_channels_last ? at::MemoryFormat::Contiguous
                            : spatial == 3     ? at::MemoryFormat::ChannelsLast3d
                                               : at::MemoryFormat::ChannelsLast;
  at::Tensor probe = at::empty(output_sizes, at::TensorOptions(at::kFloat).memory_format(format));
  KeyBuilder weights_key;
  weights_key.add(pd.weights_desc(0));
  return ConvPrimitive{pd,
                       primitive,
                       strided_desc(input),
                       strided_desc(probe),
                       output_sizes,
                       out_channels_last,
                       pd.src_desc(0),
                       pd.weights_desc(0),
                       has_bias ? pd.weights_desc(1) : dnnl::memory::desc(),
                       pd.dst_desc(0),
                       pd.scratchpad_desc(),
                       weights_key.take()};
}

}  // namespace

int64_t output_channels(const at::Tensor& weight, const ConvolutionArgs& args) {
  // PyTorch: (out, in/groups, k...) for a convolution, (in, out/groups, k...) transposed.
  return args.transposed ? weight.size(1) * args.groups : weight.size(0);
}

bool bf16_blocks_fit(const at::Tensor& input, int64_t out_channels, const ConvolutionArgs& args) {
  if (input.size(1) % 16 != 0 || out_channels % 16 != 0) return false;
  // Ungrouped, or depthwise (one channel a group: oneDNN's depthwise kernels take the blocks).
  return args.groups == 1 || (args.groups == input.size(1) && args.groups == out_channels);
}

bool served_by_reference(const dnnl::primitive_desc_base& pd) {
  const std::string implementation = pd.impl_info_str();
  return implementation.rfind("ref", 0) == 0;
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

ConvolutionGeometry convolution_geometry(const at::Tensor& input, const at::Tensor& weight,
                                         const ConvolutionArgs& args) {
  ConvolutionGeometry g;
  g.output_sizes = {input.size(0), output_channels(weight, args)};
  for (int64_t d = 0; d < input.dim() - 2; ++d) {
    const int64_t in = input.size(d + 2);
    const int64_t kernel = weight.size(d + 2);
    const int64_t stride = args.stride[d];
    const int64_t dilation = args.dilation[d];
    const int64_t pad = args.padding[d];
    g.window.strides.push_back(stride);
    g.window.dilates.push_back(dilation - 1);  // oneDNN counts the gaps, PyTorch the spacing
    g.window.padding_l.push_back(pad);
    if (args.transposed) {
      // The output grows by output_padding on the right: less right padding to crop.
      g.output_sizes.push_back((in - 1) * stride - 2 * pad + dilation * (kernel - 1) +
                               args.output_padding[d] + 1);
      g.window.padding_r.push_back(pad - args.output_padding[d]);
    } else {
      const int64_t out = (in + 2 * pad - dilation * (kernel - 1) - 1) / stride + 1;
      g.output_sizes.push_back(out);
      // PyTorch drops the input rows that do not fit a whole stride; oneDNN wants the right
      // padding that makes its output size formula land on the same `out`.
      g.window.padding_r.push_back((out - 1) * stride + dilation * (kernel - 1) + 1 - in - pad);
    }
  }
  return g;
}

at::Tensor from_layout(const at::Tensor& tensor, const dnnl::memory::desc& layout, float scale) {
  at::Tensor result = at::empty_strided(tensor.sizes(), tensor.strides(), tensor.options());
  dnnl::memory from = wrap(tensor, layout);
  dnnl::memory to = wrap(result, strided_desc(result));
  cached_scaled_reorder(layout, to.get_desc(), 1.f / scale)->execute(thread_stream(), from, to);
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

Fallback int8_convolution_support(const at::Tensor& input, const ConvolutionArgs& args) {
  if (input.dim() < 3 || input.dim() > 5) return Fallback::unsupported_shape;
  return Fallback::none;
}

at::Tensor convolution_forward(const at::Tensor& input, const at::Tensor& weight,
                               const c10::optional<at::Tensor>& bias,
                               const ConvolutionArgs& args, Precision precision,
                               const ConvolutionPostOps& post_ops,
                               const ConvolutionHandoff& handoff, const Int8Spec* int8) {
  static PrimitiveCache<ConvPrimitive>* primitives = new PrimitiveCache<ConvPrimitive>();
  // INT8: the primitives that give the weights' layout, by the same keys.
  static PrimitiveCache<ConvPrimitive>* layouts = new PrimitiveCache<ConvPrimitive>();
  const BatchNormFold* fold = post_ops.batch_norm;
  const bool has_bias = (bias && bias->defined()) || fold != nullptr;

  KeyBuilder shape_key;
  shape_key.add_range(input.sizes()).add_range(input.strides()).add_range(weight.sizes());
  shape_key.add(channels_last(weight)).add(has_bias).add_range(args.stride);
  shape_key.add_range(args.padding).add_range(args.dilation).add(args.groups);
  shape_key.add(precision).add(post_ops.relu).add(post_ops.sum != nullptr).add(args.transposed);
  shape_key.add(clamp_in_primitive(post_ops, int8)).add(static_cast<int>(post_ops.activation));
  // Where the primitive keeps the scales, silu's and hardswish's post-ops hold the result's.
  if (post_ops.activation != ConvolutionPostOps::Activation::none &&
      onednn::primitive_keeps_product_scales())
    shape_key.add(result_scale(int8));
  // The sum's factor is the primitive's own (the product's scales alone do not fix it:
  // inputs and results scaled alike give the same output multipliers).
  shape_key.add(post_ops.sum ? post_ops.sum_s8_scale : 0.f).add(sum_post_op_scale(post_ops, int8));
  shape_key.add_range(args.output_padding).add(int8 != nullptr);
  if (int8) {
    shape_key.add(int8->input_uint8).add(int8->output_scale > 0.f).add(int8->output_uint8);
  }
  std::string key = shape_key.take();

  // INT8: the weights' layout comes from a primitive without the weights' scales (they
  // depend on the packed weights, which depend on the layout). Where the primitive takes
  // the scales at execution, that primitive is the one that runs.
  std::shared_ptr<const ConvPrimitive> layout;
  if (int8) {
    layout = layouts->get(key, [&] {
      const onednn::ProductScales unknown = product_scales(*int8, args);
      return make_primitive(input, weight, has_bias, args, precision, post_ops, int8, &unknown);
    });
  }

  // weights: packed once per layout (the primitive's `weights`), until the weight changes.
  dnnl::memory::desc weights_desc;
  auto pack_weights = [&](const ConvPrimitive& chosen) {
    weights_desc = chosen.weights;
    KeyBuilder variant;
    variant.add_bytes(chosen.weights_key).add(args.groups).add(args.transposed);
    variant.add(fold != nullptr);
    std::vector<at::Tensor> depends_on;
    if (fold) {
      for (const at::Tensor* t : {&fold->gamma, &fold->beta, &fold->mean, &fold->var})
        if (t->defined()) depends_on.push_back(*t);
      variant.add(fold->eps);
    }
    if (int8) {
      // The bias as the product adds it may depend on the input's scale (onednn::int8_bias).
      if (bias && bias->defined()) depends_on.push_back(*bias);
      variant.add(int8->input_scale).add(int8->weight_per_channel);
    } else if (fold && bias && bias->defined()) {
      depends_on.push_back(*bias);
    }
    return weight_cache().get(weight, variant.take(), depends_on, [&] {
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
      if (!int8) {
        Reordered out = reorder_to(user, weights_desc);
        return PackedWeight{out.storage, out.memory, folded_bias, at::Tensor(), dnnl::memory()};
      }
      at::Tensor quantisation =
          args.transposed
              ? transposed_weight_scales(source, args.groups, int8->weight_per_channel)
              : weight_scales(source, int8->weight_per_channel);
      // Where oneDNN halves the weights on the way into its layout (kernels/int8.h), it is
      // told twice the scale, so that what it keeps is round(w * scale) as elsewhere; the
      // bias and the result take the scale it is told.
      if (const float factor = weights_reorder_factor(weights_desc); factor != 1.f)
        quantisation = quantisation / factor;
      // q_w = round(w * scale[oc]), into the primitive's layout in one reorder.
      const onednn::ProductScales quantised = product_scales(*int8, args, quantisation);
      Reordered out = allocate(weights_desc);
      onednn::ScaledReorder(user.get_desc(), weights_desc, quantised.weights,
                            quantised.weights_mask)
          .execute(thread_stream(), user, out.memory);
      thread_stream().wait();
      at::Tensor int8_bias;
      const at::Tensor& float_bias = fold ? folded_bias : (has_bias ? *bias : at::Tensor());
      if (float_bias.defined())
        int8_bias = onednn::int8_bias(float_bias, int8->input_scale, quantisation);
      return PackedWeight{out.storage, out.memory, int8_bias, quantisation,
                          onednn::weight_scales_argument(quantised.weights)};
    }, /*replaces_others=*/fold != nullptr && !int8);
  };

  PackedWeight packed;
  std::shared_ptr<const ConvPrimitive> conv;
  if (int8) {
    packed = pack_weights(*layout);
    if (!onednn::primitive_keeps_product_scales()) {
      conv = layout;
    } else {
      const onednn::ProductScales scales = product_scales(*int8, args, packed.scales);
      KeyBuilder kept;
      kept.add_range(onednn::product_scales_kept(scales));
      conv = primitives->get(key + kept.take(), [&] {
        return make_primitive(input, weight, has_bias, args, precision, post_ops, int8, &scales);
      });
      if (conv->weights != weights_desc)
        throw std::runtime_error("INT8 convolution: weights layout differs with scales");
    }
  } else {
    conv = primitives->get(key, [&] {
      return make_primitive(input, weight, has_bias, args, precision, post_ops);
    });
    packed = pack_weights(*conv);
  }

  // src: the user's tensor, converted into the primitive's layout and type if needed (and
  // quantised or requantised in the same reorder). A tensor handed over in oneDNN's layout
  // is read as such.
  const dnnl::memory::desc src_given =
      handoff.input_layout ? *handoff.input_layout : conv->src_user;
  const float src_scale = (int8 ? int8->input_scale : 1.f) / handoff.input_scale;
  dnnl::memory src = wrap(input, src_given);
  Reordered src_reordered;
  const dnnl::memory::desc& src_desc = conv->src;
  if (src_desc != src_given || src_scale != 1.f) {
    src_reordered = allocate(src_desc);
    cached_scaled_reorder(src_given, src_desc, src_scale)
        ->execute(thread_stream(), src, src_reordered.memory);
    src = src_reordered.memory;
  }

  at::MemoryFormat format = !conv->output_channels_last ? at::MemoryFormat::Contiguous
                            : input.dim() == 5          ? at::MemoryFormat::ChannelsLast3d
                                                        : at::MemoryFormat::ChannelsLast;
  const dnnl::memory::desc& dst_desc = conv->dst;
  const int64_t output_bytes = c10::multiply_integers(conv->output_sizes) *
                               static_cast<int64_t>(sizeof(float));
  const bool keep = handoff.keep_output_layout && handoff.output_layout &&
                    static_cast<int64_t>(dst_desc.get_size()) <= output_bytes;
  // How the addend reaches the destination: into its buffer in `addend_target` (the
  // destination's layout, in the type the sum reads), scaled by `addend_factor` on the way; a
  // factor of 1 between the same types is a copy of its bytes (or a reorder without scaling
  // where the layouts differ). Where those bytes would be the addend's own, in its own memory,
  // the sum goes over them there instead (sum_in_place).
  const bool int8_result = int8 && int8->output_scale > 0.f;
  const bool s8_addend = int8_result && post_ops.sum_s8_scale > 0.f;
  const dnnl::memory::desc addend_target =
      s8_addend ? onednn::with_data_type(dst_desc, dt::s8) : dst_desc;
  const dnnl::memory::desc addend_given =
      !post_ops.sum          ? dnnl::memory::desc()
      : post_ops.sum_layout ? *post_ops.sum_layout
                             : strided_desc(*post_ops.sum);
  const float addend_factor =
      addend_bytes_as_they_are(post_ops, int8) ? 1.f
      : s8_addend ? post_ops.sum_s8_scale / post_ops.sum_scale
                  : (int8_result ? int8->output_scale : 1.f) / post_ops.sum_scale;
  const bool addend_copied = addend_factor == 1.f && post_ops.sum &&
                             onednn::data_type_of(addend_given) ==
                                 onednn::data_type_of(addend_target);
  const bool in_place = addend_copied && post_ops.sum_in_place && keep &&
                        post_ops.sum_layout && addend_given == addend_target &&
                        post_ops.sum->storage_offset() == 0 &&
                        static_cast<int64_t>(post_ops.sum->storage().nbytes()) >= output_bytes &&
                        !memory_overlaps(*post_ops.sum, input);
  at::Tensor output = in_place ? over_memory_of(*post_ops.sum, conv->output_sizes, format)
                               : pooled_empty(conv->output_sizes, at::kFloat, format);
  dnnl::memory dst_user = wrap(output, conv->dst_user);
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

  if (post_ops.sum && !in_place) {
    dnnl::memory addend = wrap(*post_ops.sum, addend_given);
    dnnl::memory target(addend_target, cpu_engine(), dst.get_data_handle());
    if (addend_copied) {
      copy_bytes(addend, target);
    } else {
      cached_scaled_reorder(addend_given, addend_target, addend_factor)
          ->execute(thread_stream(), addend, target);
    }
  }
  onednn::Arguments arguments = {
      {DNNL_ARG_SRC, src}, {DNNL_ARG_WEIGHTS, packed.memory}, {DNNL_ARG_DST, dst}};
  if (int8) {
    arguments.merge(onednn::product_scale_arguments(int8->input_scale, packed.scales_argument,
                                                    int8->output_scale));
  }
  at::Tensor bias_contiguous;
  if (has_bias) {
    bias_contiguous = fold || int8 ? packed.bias : bias->contiguous();
    arguments.emplace(DNNL_ARG_BIAS, wrap(bias_contiguous, conv->bias));
  }
  execute(conv->primitive, conv->scratchpad, std::move(arguments));

  if (!dst_direct) {
    // An INT8 result that was not kept comes back as values.
    const float dequantise = int8 && int8->output_scale > 0.f ? 1.f / int8->output_scale : 1.f;
    cached_scaled_reorder(dst_desc, conv->dst_user, dequantise)
        ->execute(thread_stream(), dst, dst_user);
    thread_stream().wait();
  }
  return output;
}

}  // namespace ipex_shim
