"""PyTorch's transformer modules on their fast path: in eval without a gradient,
nn.MultiheadAttention (self-attention, batch_first) calls _native_multi_head_attention and
nn.TransformerEncoderLayer calls _transformer_encoder_layer_fwd, which the shim runs as their
parts (linear, matmul, softmax, layer_norm, activation).

Usage: attention.py OUT.pt calibrate|infer
Runs three passes of each case (seeded weights and inputs, the same in every process) and
saves {case: output of pass 3}. Cases:
  layer_relu        encoder layer, relu, post-norm
  layer_gelu_first  encoder layer, gelu, norm_first
  layer_pad         layer_relu with a key padding mask (bool)
  layer_pad_float   layer_relu with a float key padding mask (0 / -inf)
  stack             nn.TransformerEncoder of 2 gelu layers
  mha / mha_w       self-attention and its weights averaged over heads
  mha_heads_w       per-head weights, key padding mask
  mha_no_w          need_weights=False
  mha_cross         the op called with key and value not the query: the shim's parts do not
                    take it (stock runs it, counted)
  mha_grad          the op called with a weight that needs a gradient: stock
  empty             an encoder layer on a batch of 0 sequences (stock)
Prints, last, a JSON line: status()'s ops for the two fast-path ops, linear, matmul and the
activations, and status()["int8"] (under the shim; {} without it).
"""
import json
import sys

import torch
import torch.nn as nn

EMBED, HEADS, HIDDEN, BATCH, SEQ = 64, 4, 128, 3, 12


def layer(activation, norm_first, seed):
    torch.manual_seed(seed)
    module = nn.TransformerEncoderLayer(EMBED, HEADS, HIDDEN, dropout=0.0, activation=activation,
                                        norm_first=norm_first, batch_first=True).eval()
    with torch.no_grad():  # layer norms that are not the identity, biases that are not zero
        for name, p in module.named_parameters():
            if "norm" in name or "bias" in name:
                p.add_(0.1 * torch.randn_like(p))
    return module


def main():
    out_path, purpose = sys.argv[1], sys.argv[2]
    torch.manual_seed(1234)
    x = torch.randn(BATCH, SEQ, EMBED)
    pad = torch.zeros(BATCH, SEQ, dtype=torch.bool)
    pad[0, 9:] = True
    pad[2, 4:] = True
    pad_float = torch.zeros(BATCH, SEQ).masked_fill(pad, float("-inf"))
    if purpose == "calibrate":  # other inputs than the ones inference is scored on
        x = torch.randn(BATCH, SEQ, EMBED)

    relu = layer("relu", False, 1)
    gelu_first = layer("gelu", True, 2)
    torch.manual_seed(3)
    stack = nn.TransformerEncoder(layer("gelu", False, 3), 2, enable_nested_tensor=False).eval()
    torch.manual_seed(4)
    mha = nn.MultiheadAttention(EMBED, HEADS, batch_first=True).eval()
    m = mha
    other = torch.randn(BATCH, SEQ, EMBED)
    grad_weight = m.in_proj_weight.detach().clone().requires_grad_(True)

    cases = {
        "layer_relu": lambda: relu(x),
        "layer_gelu_first": lambda: gelu_first(x),
        "layer_pad": lambda: relu(x, src_key_padding_mask=pad),
        "layer_pad_float": lambda: relu(x, src_key_padding_mask=pad_float),
        "stack": lambda: stack(x),
        "mha": lambda: mha(x, x, x)[0],
        "mha_w": lambda: mha(x, x, x)[1],
        "mha_heads_w": lambda: mha(x, x, x, key_padding_mask=pad, average_attn_weights=False)[1],
        "mha_no_w": lambda: mha(x, x, x, need_weights=False)[0],
        "mha_cross": lambda: torch._native_multi_head_attention(
            x, other, other, EMBED, HEADS, m.in_proj_weight, m.in_proj_bias,
            m.out_proj.weight, m.out_proj.bias)[0],
        "empty": lambda: relu(torch.randn(0, SEQ, EMBED)),
    }
    results = {}
    with torch.no_grad():
        for name, case in cases.items():
            for _ in range(3):
                results[name] = case()
    # Outside no_grad, a weight that records a gradient: the op has no backward and the
    # shim's parts would make one; stock answers.
    results["mha_grad"] = torch._native_multi_head_attention(
        x, x, x, EMBED, HEADS, grad_weight, m.in_proj_bias, m.out_proj.weight,
        m.out_proj.bias, need_weights=False)[0].detach()
    torch.save(results, out_path)

    report = {}
    try:
        status = json.loads(torch.ops.ipex_shim.status())
        names = ("_native_multi_head_attention", "_transformer_encoder_layer_fwd", "linear",
                 "matmul", "relu", "gelu")
        report = {"ops": {n: status["ops"].get(n, {}) for n in names},
                  "int8": status.get("int8", {})}
    except (AttributeError, RuntimeError):
        pass
    print(json.dumps(report))


if __name__ == "__main__":
    main()
