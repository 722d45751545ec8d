#pragma once

#include <ATen/core/Tensor.h>

#include <tuple>

namespace ipex_shim {

// Kernels the override table registers for the transformer fast path: the ops that
// nn.MultiheadAttention (self-attention) and nn.TransformerEncoderLayer call in eval without
// a gradient. Each runs as its parts (linear, matmul, softmax, layer_norm, the activation) on
// the shim's own kernels and weight cache, the products in the mode's precision: in int8
// mode and calibration through the dispatcher, whose INT8 entries are the parts' own; in
// fp32 and bf16 mode called directly, BF16 handed from product to product.
std::tuple<at::Tensor, at::Tensor> native_multi_head_attention_override(
    const at::Tensor& query, const at::Tensor& key, const at::Tensor& value, int64_t embed_dim,
    int64_t num_heads, const at::Tensor& qkv_weight, const at::Tensor& qkv_bias,
    const at::Tensor& proj_weight, const at::Tensor& proj_bias,
    const c10::optional<at::Tensor>& mask, bool need_weights, bool average_attn_weights,
    c10::optional<int64_t> mask_type);

at::Tensor transformer_encoder_layer_override(
    const at::Tensor& src, int64_t embed_dim, int64_t num_heads, const at::Tensor& qkv_weight,
    const at::Tensor& qkv_bias, const at::Tensor& proj_weight, const at::Tensor& proj_bias,
    bool use_gelu, bool norm_first, double eps, const at::Tensor& norm_weight_1,
    const at::Tensor& norm_bias_1, const at::Tensor& norm_weight_2, const at::Tensor& norm_bias_2,
    const at::Tensor& ffn_weight_1, const at::Tensor& ffn_bias_1, const at::Tensor& ffn_weight_2,
    const at::Tensor& ffn_bias_2, const c10::optional<at::Tensor>& mask,
    c10::optional<int64_t> mask_type);

// softmax.int (F.softmax, torch.softmax) of an fp32 tensor over its last, contiguous
// dimension, without a gradient: oneDNN's kernel (about half of stock's time on attention
// scores), an fp32 result. Anything else, and calibration, run stock, counted with the reason.
at::Tensor softmax_override(const at::Tensor& self, int64_t dim,
                            c10::optional<at::ScalarType> dtype);

}  // namespace ipex_shim
