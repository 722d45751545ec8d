"""Model and input definitions shared by scripts/bench.py (parent and workers).

Everything here is deterministic given a seed, so that every benchmark worker
(each a separate process, some of them running under LD_PRELOAD=libipex_shim.so)
sees exactly the same weights and inputs.  In practice the parent builds the
model once (``build_reference_model``), saves the state_dict, and every worker
builds an *uninitialised skeleton* (``build_skeleton``) and loads that
state_dict.  That way any one-time setup that runs forward passes (the BN
statistics pass below) happens only in the parent, never under the shim.

Models:
  * ``bert``: a BERT-base-shaped encoder written with plain ops (nn.Linear,
    torch.matmul, softmax, layer_norm, gelu): 12 layers, hidden 768, 12 heads,
    feed-forward 3072, word/position/token-type embeddings.  Input: int64
    token ids [batch, seq]; output: last hidden states [batch, seq, 768].
  * ``bert_module``: the same encoder built from PyTorch's own modules
    (nn.TransformerEncoderLayer, batch_first, gelu, post-LN), which in eval
    without a gradient runs each layer as one op, _transformer_encoder_layer_fwd.
  * any torchvision classification model by name (resnet50, resnet18,
    mobilenet_v2, ...), built with ``weights=None``.  Input: float
    [batch, 3, H, W] synthetic images (see ``synthetic_images``); output:
    logits [batch, 1000].
"""

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

BERT_NAMES = ("bert", "bert-base", "bert_base")
BERT_MODULE_NAMES = ("bert_module",)

# BERT-base shape.
BERT_VOCAB = 30522
BERT_MAX_POS = 512
BERT_HIDDEN = 768
BERT_HEADS = 12
BERT_LAYERS = 12
BERT_FFN = 3072


def is_transformer(name):
    """True for the BERT-shaped encoders, False for torchvision CNNs."""
    return name.lower() in BERT_NAMES + BERT_MODULE_NAMES


# ---------------------------------------------------------------------------
# BERT-base-shaped encoder (plain ops, TorchScript-friendly)
# ---------------------------------------------------------------------------


class BertSelfAttention(nn.Module):
    def __init__(self, hidden, heads):
        super().__init__()
        assert hidden % heads == 0
        self.num_heads = heads
        self.head_dim = hidden // heads
        self.scale = 1.0 / math.sqrt(self.head_dim)
        self.query = nn.Linear(hidden, hidden)
        self.key = nn.Linear(hidden, hidden)
        self.value = nn.Linear(hidden, hidden)

    def _split(self, t, b: int, s: int):
        # [B, S, H] -> [B, heads, S, head_dim]
        return t.view(b, s, self.num_heads, self.head_dim).transpose(1, 2)

    def forward(self, x):
        b = x.size(0)
        s = x.size(1)
        q = self._split(self.query(x), b, s)
        k = self._split(self.key(x), b, s)
        v = self._split(self.value(x), b, s)
        scores = torch.matmul(q, k.transpose(-1, -2)) * self.scale
        probs = torch.softmax(scores, dim=-1)
        ctx = torch.matmul(probs, v)  # [B, heads, S, head_dim]
        return ctx.transpose(1, 2).reshape(b, s, self.num_heads * self.head_dim)


class BertLayer(nn.Module):
    def __init__(self, hidden, heads, ffn, eps=1e-12):
        super().__init__()
        self.attention = BertSelfAttention(hidden, heads)
        self.attn_out = nn.Linear(hidden, hidden)
        self.ln1 = nn.LayerNorm(hidden, eps=eps)
        self.intermediate = nn.Linear(hidden, ffn)
        self.output = nn.Linear(ffn, hidden)
        self.ln2 = nn.LayerNorm(hidden, eps=eps)

    def forward(self, x):
        x = self.ln1(x + self.attn_out(self.attention(x)))
        h = F.gelu(self.intermediate(x))
        return self.ln2(x + self.output(h))


class BertEncoder(nn.Module):
    """BERT-base-shaped encoder: embeddings + N post-LN transformer layers."""

    def __init__(self, vocab=BERT_VOCAB, max_pos=BERT_MAX_POS, hidden=BERT_HIDDEN,
                 heads=BERT_HEADS, layers=BERT_LAYERS, ffn=BERT_FFN, eps=1e-12):
        super().__init__()
        self.word_embeddings = nn.Embedding(vocab, hidden)
        self.position_embeddings = nn.Embedding(max_pos, hidden)
        self.token_type_embeddings = nn.Embedding(2, hidden)
        self.emb_ln = nn.LayerNorm(hidden, eps=eps)
        self.layers = nn.ModuleList([BertLayer(hidden, heads, ffn, eps) for _ in range(layers)])
        self.register_buffer("position_ids", torch.arange(max_pos).unsqueeze(0), persistent=False)

    def init_weights(self):
        # BERT's initialisation: N(0, 0.02) weights, zero biases, LN = identity.
        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.Embedding)):
                nn.init.normal_(m.weight, mean=0.0, std=0.02)
                if isinstance(m, nn.Linear) and m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, input_ids):
        s = input_ids.size(1)
        pos = self.position_ids[:, :s]
        # All tokens are segment 0: add token-type row 0 to every position.
        x = (self.word_embeddings(input_ids) + self.position_embeddings(pos)
             + self.token_type_embeddings.weight[0])
        x = self.emb_ln(x)
        for layer in self.layers:
            x = layer(x)
        return x


class BertModuleEncoder(BertEncoder):
    """The BERT-base-shaped encoder with nn.TransformerEncoderLayer for its layers (same
    embeddings, same shapes), as a program written with PyTorch's modules has it."""

    def __init__(self, vocab=BERT_VOCAB, max_pos=BERT_MAX_POS, hidden=BERT_HIDDEN,
                 heads=BERT_HEADS, layers=BERT_LAYERS, ffn=BERT_FFN, eps=1e-12):
        super().__init__(vocab, max_pos, hidden, heads, 0, ffn, eps)
        self.layers = nn.ModuleList([
            nn.TransformerEncoderLayer(hidden, heads, ffn, dropout=0.0, activation="gelu",
                                       layer_norm_eps=eps, batch_first=True)
            for _ in range(layers)])

    def init_weights(self):
        super().init_weights()
        for m in self.modules():
            if isinstance(m, nn.MultiheadAttention):
                nn.init.normal_(m.in_proj_weight, mean=0.0, std=0.02)
                nn.init.zeros_(m.in_proj_bias)


# ---------------------------------------------------------------------------
# Construction
# ---------------------------------------------------------------------------


def _torchvision_ctor(name):
    import torchvision
    models = torchvision.models
    if hasattr(models, "list_models"):
        available = models.list_models(module=models)
        if name not in available:
            raise ValueError("unknown model %r (not 'bert' and not a torchvision "
                             "classification model; e.g. %s)" % (name, ", ".join(available[:8])))
        return models.get_model_builder(name)
    ctor = getattr(models, name, None)
    if ctor is None or not callable(ctor):
        raise ValueError("unknown model %r" % name)
    return ctor


def build_skeleton(name):
    """The model's module structure (weights are whatever the ctor draws).

    Workers call this and then load the parent's state_dict."""
    if name.lower() in BERT_MODULE_NAMES:
        return BertModuleEncoder()
    if is_transformer(name):
        return BertEncoder()
    ctor = _torchvision_ctor(name)
    kwargs = {"weights": None}
    if name in ("inception_v3", "googlenet"):
        kwargs["aux_logits"] = False  # plain tensor output in all modes
        kwargs["init_weights"] = True
    return ctor(**kwargs)


def default_image_size(name):
    return 299 if name == "inception_v3" else 224


def make_input(name, batch, seed, image_size=224, seq=128):
    """A seeded input batch: token ids for bert, synthetic images for CNNs."""
    g = torch.Generator().manual_seed(seed)
    if is_transformer(name):
        return torch.randint(0, BERT_VOCAB, (batch, seq), generator=g, dtype=torch.long)
    return synthetic_images(batch, image_size, g)


def synthetic_images(batch, size, g):
    """Smooth multi-scale random images with a per-image gain and per-channel offset.

    i.i.d. N(0,1) pixels are a poor test input: all such images have the same
    statistics, so a random-weight CNN maps them to almost the same pooled
    features and the outputs differ only by tiny amounts (any bf16/int8 error
    then swamps them).  Summing upsampled noise at a few scales and varying
    gain/offset per image gives images that differ the way real ones do (in
    low-frequency content, contrast and colour), roughly zero-mean/unit-scale
    like normalised ImageNet inputs."""
    out = torch.zeros(batch, 3, size, size)
    for res, amp in ((4, 1.0), (16, 0.7), (56, 0.5)):
        noise = torch.randn(batch, 3, res, res, generator=g) * amp
        out += F.interpolate(noise, size=(size, size), mode="bicubic", align_corners=False)
    out += 0.2 * torch.randn(batch, 3, size, size, generator=g)
    out /= out.flatten(1).std(1).view(batch, 1, 1, 1)
    gain = torch.exp(0.4 * torch.randn(batch, 1, 1, 1, generator=g))
    return out * gain + 0.5 * torch.randn(batch, 3, 1, 1, generator=g)


def build_reference_model(name, seed, image_size=224, bn_batches=4, bn_batch_size=8):
    """Build the model deterministically from ``seed`` and return it in eval mode.

    torchvision models get ``weights=None``.  Their BatchNorm running
    statistics would then be the trivial (mean 0, var 1), which makes a deep
    random ResNet produce nearly degenerate outputs; so we run ``bn_batches``
    forward passes in train mode on seeded random data with cumulative
    averaging (momentum=None), giving BN layers real statistics, and then
    center the classifier (see ``_center_classifier``)."""
    torch.manual_seed(seed)
    model = build_skeleton(name)
    for module in model.modules():
        # A head torchvision initialises to zeros (vit_b_16's) makes every output 0, and
        # every cosine against it meaningless: seeded random weights instead.
        if isinstance(module, nn.Linear) and not module.weight.detach().any():
            nn.init.normal_(module.weight, std=module.in_features ** -0.5)
    if is_transformer(name):
        model.init_weights()
        return model.eval()
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if bns and bn_batches > 0:
        saved = [m.momentum for m in bns]
        for m in bns:
            m.reset_running_stats()
            m.momentum = None  # cumulative moving average over the passes
        model.train()
        with torch.no_grad():
            for i in range(bn_batches):
                model(make_input(name, bn_batch_size, seed + 1000 + i, image_size=image_size))
        for m, mom in zip(bns, saved):
            m.momentum = mom
    model.eval()
    _center_classifier(model, name, seed, image_size, bn_batch_size)
    return model


def _center_classifier(model, name, seed, image_size, batch):
    """Subtract the mean penultimate feature's contribution from the last
    nn.Linear's bias.

    With random weights the pooled features of different images are nearly
    identical up to a large common component, so the logits' argmax is the
    same class for almost every image; top-1 agreement would then be
    meaningless.  Centering the classifier on seeded random data makes the
    argmax depend on the input (the margins stay small, so top-1 agreement is
    a sensitive, pessimistic proxy compared with a trained model)."""
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if not linears or linears[-1].bias is None:
        return
    fc = linears[-1]
    feats = []
    hook = fc.register_forward_hook(lambda mod, inp, out: feats.append(inp[0].detach()))
    try:
        with torch.no_grad():
            model(make_input(name, batch, seed + 2000, image_size=image_size))
    finally:
        hook.remove()
    if feats and feats[0].dim() == 2:
        with torch.no_grad():
            fc.bias -= fc.weight @ feats[0].mean(0)
