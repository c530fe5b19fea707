r"""Making a trained model smaller (seed §2.1): pruning, quantization, distillation.

The article names six methods and gives no number for any of them. Each is here,
applied to a trained `TransformerClassifier`, with what it changes on disk:

1. **Magnitude pruning** (unstructured): zero the weights of smallest |w|, per
   matrix or globally; keep them zero while fine-tuning (`magnitude_masks`,
   `apply_masks`, `finetune(masks=...)`); or prune gradually with the cubic
   schedule of Zhu & Gupta 2017 (`cubic_sparsity`). On disk: a bitmap of the
   survivors plus their values. In NumPy the matrices stay dense, so the model
   does **not** run faster (the benchmark measures it).
2. **Structured pruning**: remove whole attention heads, ranked by the gates of
   Michel, Levy & Neubig 2019 (`head_importance`, `prune_heads`), and whole
   feed-forward neurons, ranked by their weights' norms (`prune_ffn`). The
   matrices really shrink, so the model is smaller *and* faster.
3. **int8 quantization**: per-output-channel symmetric scales
   (`functional.quantize_int8`). Two ways to run it: "store int8, compute
   float32" (dequantize when loading: only the file shrinks), and
   `Int8Classifier`, which multiplies int8 activations by int8 weights in
   int32 (`functional.int8_linear`), as integer hardware does.
4. **Binary weights**: one bit per weight times a per-channel scale
   (`functional.binarize`), stored with ``np.packbits``; trained with the
   straight-through estimator (`finetune(qat="binary")`).
5. **Quantization-aware training** (`finetune(qat="int8" | "binary")`): the
   forward pass sees the quantized weights, the backward pass updates float
   "shadow" weights through the straight-through estimator.
6. **Distillation** (Hinton et al. 2015): a small student learns from the
   teacher's soft labels (`functional.distillation_loss`, T²·KL, mixed with the
   hard-label loss by α) or hard labels (the teacher's argmax) —
   `finetune(teacher_logits=..., temperature=..., alpha=...)`.

A compressed model is saved with `save_compressed` in its own ``.npz`` format
(bitmap + values, int8 + scales, packed bits + scales), written atomically,
and read back by `load_compressed` (which `predict` and `evaluate` use).

The methods are independent families (errata E8: the seed's Mermaid graph
draws them as steps leading to transfer learning and zero-shot learning).
Pruning and quantization apply to any trained model and combine with each
other; distillation needs a teacher, and that is where pre-training comes in.

Shape legend as in `functional.py`; L is the number of layers.
"""

from __future__ import annotations

import copy
import json
import math
import os
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import functional as F
from .backend import to_numpy
from .checkpoint import CheckpointError, _default_registry, _file_mode, _fsync_directory
from .data import Dataset, batch_iterator
from .models import TransformerClassifier, _check_ids_and_mask
from .nn import FeedForward, Module, MultiHeadAttention, Parameter
from .optim import AdamW, clip_grad_norm, warmup_cosine

__all__ = ["weight_matrices", "magnitude_masks", "apply_masks", "sparsity_of", "cubic_sparsity",
           "head_importance", "prune_heads", "heads_to_prune", "prune_ffn", "structure_of",
           "Int8Classifier", "FinetuneConfig", "finetune", "teacher_logits",
           "save_compressed", "load_compressed", "is_compressed", "ENCODINGS", "FORMAT", "count_parameters",
           "time_inference"]

FORMAT = "numpy_transformer.compressed"
VERSION = 1


# --------------------------------------------------------------------------- #
# Which weights are compressed
# --------------------------------------------------------------------------- #

def weight_matrices(model, include_embedding=True):
    """(name, Parameter) of every 2-D weight: the matrices that hold almost all of the parameters.

    Biases, LayerNorm's gain and shift and the head gates stay in float32:
    they are a few hundred numbers, and quantizing them saves nothing.
    """
    return [(name, p) for name, p in model.named_parameters()
            if p.ndim == 2 and (include_embedding or not name.startswith("embed."))]


def _block_matrices(model):
    """The matrices inside the Transformer blocks (not the embedding, not the classifier head)."""
    return [(name, p) for name, p in weight_matrices(model) if name.startswith("encoder.blocks.")]


# --------------------------------------------------------------------------- #
# 1. Magnitude pruning
# --------------------------------------------------------------------------- #

def magnitude_masks(model, sparsity, scope="layer", include_embedding=True):
    r"""Boolean masks (True = keep) that zero the fraction ``sparsity`` of smallest |w|.

    * ``scope="layer"``: every matrix loses the same fraction (exactly
      ``floor(sparsity * n)`` weights of its n).
    * ``scope="global"``: one threshold for all matrices together; a matrix
      of small weights loses more than one of large weights.

    Returns dict name -> mask (the parameter's shape).
    """
    if not 0.0 <= sparsity < 1.0:
        raise ValueError(f"sparsity: expected a fraction in [0, 1), got {sparsity}")
    if scope not in ("layer", "global"):
        raise ValueError(f"scope: expected 'layer' or 'global', got {scope!r}")
    params = weight_matrices(model, include_embedding)
    masks = {}
    if scope == "global":
        magnitudes = np.concatenate([np.abs(to_numpy(p.data)).ravel() for _, p in params])
        k = int(math.floor(sparsity * magnitudes.size))
        threshold = np.partition(magnitudes, k - 1)[k - 1] if k > 0 else -1.0   # the k-th smallest |w|
        for name, p in params:
            masks[name] = np.abs(to_numpy(p.data)) > threshold
        return masks
    for name, p in params:
        w = np.abs(to_numpy(p.data)).ravel()
        k = int(math.floor(sparsity * w.size))
        keep = np.ones(w.size, dtype=bool)
        keep[np.argsort(w, kind="stable")[:k]] = False         # the k smallest, ties broken by position
        masks[name] = keep.reshape(p.shape)
    return masks


def apply_masks(model, masks, grads=False):
    """Zero the pruned weights (``p.data *= mask``), or with ``grads=True`` their gradients."""
    params = dict(model.named_parameters())
    for name, mask in masks.items():
        if name not in params:
            raise ValueError(f"masks: {name!r} is not a parameter of the model")
        p = params[name]
        if grads:
            p.grad *= mask
        else:
            p.data *= mask


def sparsity_of(model, include_embedding=True):
    """Fraction of exact zeros among the weight matrices."""
    params = weight_matrices(model, include_embedding)
    zeros = sum(int((to_numpy(p.data) == 0).sum()) for _, p in params)
    return zeros / sum(p.size for _, p in params)


def cubic_sparsity(step, final_sparsity, begin_step, end_step, initial_sparsity=0.0):
    r"""Gradual pruning schedule of Zhu & Gupta 2017, "To prune, or not to prune".

    .. math:: s_t = s_f + (s_i - s_f)\Big(1 - \frac{t - t_0}{t_1 - t_0}\Big)^3 \quad (t_0 \le t \le t_1)

    Sparsity rises fast at first, when there are many redundant weights, and
    slowly near the end, when each weight removed hurts more.
    """
    if end_step <= begin_step:
        raise ValueError(f"end_step: expected a step after begin_step={begin_step}, got {end_step}")
    frac = min(max((step - begin_step) / (end_step - begin_step), 0.0), 1.0)
    return final_sparsity + (initial_sparsity - final_sparsity) * (1.0 - frac) ** 3


# --------------------------------------------------------------------------- #
# 2. Structured pruning: heads and feed-forward neurons
# --------------------------------------------------------------------------- #

def _blocks(model):
    return model.encoder.blocks


def head_importance(model, data, tokenizer, max_len=128, batch_size=32, max_batches=20):
    r"""Importance of every head, :math:`I_h = \mathbb E_x |\partial L / \partial \xi_h|` (Michel et al. 2019).

    Gates :math:`\xi_h = 1` are attached to every attention layer (the model
    computes exactly the same outputs), the classification loss is
    back-propagated on up to ``max_batches`` batches of ``data`` (in a fixed
    order, no dropout), and the absolute gate gradients of each batch are
    averaged. Each layer's scores are then divided by their L2 norm, as in
    the paper, so that layers compare. The gates are removed again afterwards.
    Returns (L, H) float64.
    """
    blocks = _blocks(model)
    was_training = model.training
    model.eval()
    for block in blocks:
        attn = block.attn
        attn.gate = Parameter(np.ones(attn.n_heads, dtype=attn.W_o.dtype), decay=False)
    scores = [np.zeros(block.attn.n_heads) for block in blocks]
    try:
        n = 0
        for ids, mask, labels in batch_iterator(data, tokenizer, batch_size, max_len):
            model.zero_grad()
            loss, cache = F.cross_entropy(model(ids, mask), labels)
            model.backward(F.cross_entropy_backward(1.0, cache))
            for s, block in zip(scores, blocks):
                s += np.abs(to_numpy(block.attn.gate.grad))
            n += 1
            if n >= max_batches:
                break
    finally:
        for block in blocks:
            block.attn.gate = None
        model.zero_grad()
        model.train(was_training)
    out = np.zeros((len(blocks), max(len(s) for s in scores)))
    for i, s in enumerate(scores):
        s = s / max(n, 1)
        out[i, :len(s)] = s / max(np.linalg.norm(s), 1e-12)
    return out


def heads_to_prune(importance, fraction, n_heads=None):
    """The ``round(fraction * total)`` least important heads, keeping at least one per layer: {layer: [heads]}."""
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"fraction: expected a fraction of the heads in [0, 1), got {fraction}")
    importance = np.asarray(importance)
    L = importance.shape[0]
    n_heads = n_heads or [importance.shape[1]] * L
    ranked = sorted((importance[l, h], l, h) for l in range(L) for h in range(n_heads[l]))
    target = int(round(fraction * sum(n_heads)))
    removed = {l: [] for l in range(L)}
    for _, l, h in ranked:
        if sum(len(v) for v in removed.values()) >= target:
            break
        if len(removed[l]) < n_heads[l] - 1:
            removed[l].append(h)
    return {l: sorted(v) for l, v in removed.items() if v}


def _attention_options(attn):
    """The long-text options of ``attn`` (relative positions, local attention): a smaller layer keeps them."""
    return dict(position=attn.position, local_window=attn.local_window, local_causal=attn.local_causal,
                global_tokens=attn.global_tokens, local_block_size=attn.local_block_size)


def _smaller_attention(attn, keep):
    """A MultiHeadAttention with only the heads ``keep`` of ``attn``: its weights copied, nothing retrained."""
    H, Dh, D = attn.n_heads, attn.head_dim, attn.d_model
    if attn.position == "alibi":
        # ALiBi's slopes are a function of the number of heads: the kept heads would get other slopes
        raise ValueError("model: removing heads from ALiBi attention would change the kept heads' slopes; "
                         "head pruning supports position=None or 'rope'")
    A = H * Dh
    keep = sorted(keep)
    dtype = attn.W_o.dtype
    new = MultiHeadAttention(D, len(keep), fused_qkv=attn.fused_qkv, bias=attn.b_o is not None,
                             attention_dropout=attn.attention_dropout, rng=attn.rng, dtype=dtype, head_dim=Dh,
                             **_attention_options(attn))
    cols = np.concatenate([np.arange(h * Dh, (h + 1) * Dh) for h in keep])      # the heads' columns in one of q, k, v
    if attn.fused_qkv:
        qkv_cols = np.concatenate([part * A + cols for part in range(3)])       # [q | k | v], each [head 0 | ...]
        new.W_qkv.data[...] = attn.W_qkv.data[:, qkv_cols]                       # (D, 3 H' Dh)
        if attn.b_qkv is not None:
            new.b_qkv.data[...] = attn.b_qkv.data[qkv_cols]
    else:
        for name in ("q", "k", "v"):
            getattr(new, f"W_{name}").data[...] = getattr(attn, f"W_{name}").data[:, cols]
            if attn.b_o is not None:
                getattr(new, f"b_{name}").data[...] = getattr(attn, f"b_{name}").data[cols]
    new.W_o.data[...] = attn.W_o.data[cols]                                       # (H' Dh, D): the heads' rows
    if attn.b_o is not None:
        new.b_o.data[...] = attn.b_o.data
    new.train(attn.training)
    new.use_fast_paths(attn.fast)
    return new


def prune_heads(model, remove):
    """A copy of ``model`` without the heads ``remove`` = {layer: [head, ...]}; W_qkv and W_o really shrink."""
    model = copy.deepcopy(model)
    for l, heads in remove.items():
        attn = _blocks(model)[l].attn
        bad = [h for h in heads if not 0 <= h < attn.n_heads]
        if bad or len(set(heads)) >= attn.n_heads:
            raise ValueError(f"remove: layer {l} has heads 0..{attn.n_heads - 1} and must keep one, got {heads}")
        _blocks(model)[l].attn = _smaller_attention(attn, [h for h in range(attn.n_heads) if h not in heads])
    return model


def ffn_neuron_scores(ffn):
    r"""Neuron j of the feed-forward layer reads column j of W1 and writes row j of W2; score :math:`\|W_1[:, j]\|\,\|W_2[j, :]\|`."""
    W1, W2 = to_numpy(ffn.W1.data), to_numpy(ffn.W2.data)
    return np.linalg.norm(W1, axis=0) * np.linalg.norm(W2, axis=1)          # (F,)


def prune_ffn(model, fraction):
    """A copy of ``model`` whose feed-forward layers keep the ``1 - fraction`` neurons of largest score."""
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"fraction: expected a fraction of the neurons in [0, 1), got {fraction}")
    model = copy.deepcopy(model)
    for block in _blocks(model):
        ffn = block.ffn
        n_keep = max(1, ffn.d_ff - int(round(fraction * ffn.d_ff)))
        keep = np.sort(np.argsort(-ffn_neuron_scores(ffn), kind="stable")[:n_keep])
        new = FeedForward(ffn.d_model, n_keep, activation=ffn.activation, dropout=ffn.drop.p,
                          rng=ffn.drop.rng if ffn.drop.rng is not None else np.random.default_rng(0),
                          dtype=ffn.W1.dtype)
        new.W1.data[...] = ffn.W1.data[:, keep]
        new.b1.data[...] = ffn.b1.data[keep]
        new.W2.data[...] = ffn.W2.data[keep]
        new.b2.data[...] = ffn.b2.data
        new.train(ffn.training)
        new.use_fast_paths(ffn.fast)
        block.ffn = new
    return model


def structure_of(model):
    """Per block: heads, head width and feed-forward width (what the config no longer says after pruning)."""
    return [{"n_heads": b.attn.n_heads, "head_dim": b.attn.head_dim, "d_ff": b.ffn.d_ff} for b in _blocks(model)]


def _apply_structure(model, structure):
    """Shrink a freshly built model's blocks to ``structure`` (weights to be loaded afterwards)."""
    blocks = _blocks(model)
    if len(structure) != len(blocks):
        raise ValueError(f"structure: expected {len(blocks)} blocks, got {len(structure)}")
    for block, s in zip(blocks, structure):
        attn, ffn = block.attn, block.ffn
        if (s["n_heads"], s["head_dim"]) != (attn.n_heads, attn.head_dim):
            block.attn = MultiHeadAttention(attn.d_model, s["n_heads"], fused_qkv=attn.fused_qkv,
                                            bias=attn.b_o is not None, attention_dropout=attn.attention_dropout,
                                            rng=attn.rng, dtype=attn.W_o.dtype, head_dim=s["head_dim"],
                                            **_attention_options(attn))
        if s["d_ff"] != ffn.d_ff:
            block.ffn = FeedForward(ffn.d_model, s["d_ff"], activation=ffn.activation, dropout=ffn.drop.p,
                                    rng=ffn.drop.rng if ffn.drop.rng is not None else np.random.default_rng(0),
                                    dtype=ffn.W1.dtype)


# --------------------------------------------------------------------------- #
# 3. int8 inference: int8 x int8 products accumulated in int32
# --------------------------------------------------------------------------- #

class Int8Classifier(Module):
    r"""A `TransformerClassifier` whose matrix products run in int8 (inference only).

    Every weight matrix is stored as int8 with a per-output-channel scale
    (`functional.quantize_int8`); every product ``x @ W`` becomes
    `functional.int8_linear`: the activations are quantized with one dynamic
    scale per tensor, multiplied in integers, accumulated in int32 and
    rescaled. The embedding lookup gathers int8 rows and rescales them.
    LayerNorm, softmax, the attention products ``q k^T`` and ``weights v``,
    GELU/ReLU and the residual sums stay in float32, as they do in int8
    inference engines. The forward below follows `TransformerBlock.forward`
    and `TransformerClassifier.forward` line by line.

    ``Int8Classifier(model)`` quantizes a trained float model (post-training
    quantization); it keeps the float model's LayerNorms, positional encoding
    and pooling, and, for a fine-tuned language model
    (`transfer.TransferClassifier`), its causal mask and "last" pooling.
    """

    def __init__(self, model, quantized=None):
        super().__init__()
        for i, block in enumerate(model.encoder.blocks):
            attn = block.attn
            if attn.position is not None or attn.local_window is not None:
                what = (f"position={attn.position!r}" if attn.position is not None
                        else f"local_window={attn.local_window}")
                raise ValueError(f"model: Int8Classifier runs plain full attention with absolute positions; "
                                 f"block {i} has {what} (RoPE, ALiBi and local attention are not supported, "
                                 f"keep such models in float32)")
        self.model = model
        self.model.eval()
        self.training = False
        # name -> (q int8, scale): from a float model, or as read from an int8 checkpoint
        self.quantized = quantized if quantized is not None else {
            name: F.quantize_int8(to_numpy(p.data)) for name, p in weight_matrices(model)}

    @property
    def config(self):
        return self.model.config

    @property
    def attention_weights(self):
        """[(B, H, T, T)] * L from the last forward, as `TransformerClassifier.attention_weights`."""
        return self.model.attention_weights

    def train(self, mode=True):            # inference only: stays in eval mode
        return self

    def parameters(self):
        return []

    def _linear(self, x, name, b):
        q, s = self.quantized[name]
        return F.int8_linear(x, q, s, None if b is None else b.data)

    def _attention(self, x, mask, attn, prefix):
        B, T, _ = x.shape
        H, Dh = attn.n_heads, attn.head_dim
        qkv = self._linear(x, prefix + "W_qkv", attn.b_qkv)                         # (B, T, 3 H Dh)
        q, k, v = qkv.reshape(B, T, 3, H, Dh).transpose(2, 0, 3, 1, 4)              # 3 x (B, H, T, Dh)
        heads, weights, _ = F.scaled_dot_product_attention(q, k, v, mask)            # float32
        attn.last_attention = weights
        return self._linear(F.merge_heads(heads), prefix + "W_o", attn.b_o)         # (B, T, D)

    def _ffn(self, x, ffn, prefix):
        hidden = self._linear(x, prefix + "W1", ffn.b1)                             # (B, T, F)
        a, _ = (F.relu if ffn.activation == "relu" else F.gelu)(hidden)
        return self._linear(a, prefix + "W2", ffn.b2)                               # (B, T, D)

    def forward(self, ids, mask=None):
        model = self.model
        if not model.encoder.blocks[0].attn.fused_qkv:
            raise ValueError("model: Int8Classifier expects fused_qkv=True (the default)")
        _check_ids_and_mask(ids, mask, model.vocab_size, model.max_len)
        q, s = self.quantized["embed.E"]
        x = F.dequantize_int8(q[np.asarray(ids)], s)                                # (B, T, D) from int8 rows
        x = model.pos(x * model._embed_scale if model.scale_embeddings else x)
        attend = None if mask is None else F.padding_mask(np.asarray(mask))             # (B, 1, 1, T)
        if getattr(model, "causal", False):                                             # a fine-tuned causal LM
            causal = F.causal_mask(np.asarray(ids).shape[1])                            # (T, T)
            attend = causal if attend is None else causal & attend                      # (B, 1, T, T)
        for i, block in enumerate(model.encoder.blocks):
            p = f"encoder.blocks.{i}."
            attn = lambda h: self._attention(h, attend, block.attn, p + "attn.")   # noqa: E731
            ffn = lambda h: self._ffn(h, block.ffn, p + "ffn.")                     # noqa: E731
            if block.norm == "post":
                h = block.norm1(x + attn(x))
                x = block.norm2(h + ffn(h))
            elif block.norm == "pre":
                h = x + attn(block.norm1(x))
                x = h + ffn(block.norm2(h))
            else:
                xn = block.norm1(x)
                x = x + attn(xn) + ffn(xn)
        if model.encoder.final_norm is not None:
            x = model.encoder.final_norm(x)
        m = np.ones(x.shape[:2], x.dtype) if mask is None else np.asarray(mask).astype(x.dtype)   # (B, T)
        if model.pooling == "cls":
            pooled = x[:, 0]
        elif model.pooling == "last":                                                   # the last real token
            pooled = x[np.arange(x.shape[0]), m.sum(axis=1).astype(np.int64) - 1]      # (B, D)
        else:
            pooled = (x * (m / m.sum(axis=1, keepdims=True))[:, :, None]).sum(axis=1)   # (B, D)
        return self._linear(pooled, "head.W", model.head.b)                         # (B, C)

    def num_parameters(self):
        return self.model.num_parameters()


# --------------------------------------------------------------------------- #
# 4. Fine-tuning with masks, quantization-aware training, distillation
# --------------------------------------------------------------------------- #

@dataclass
class FinetuneConfig:
    """A short training run counted in steps (the same run on every machine)."""

    steps: int = 300
    batch_size: int = 32
    lr: float = 3e-4
    warmup_steps: int = 30
    weight_decay: float = 0.01
    clip: float = 1.0
    max_len: int = 128
    seed: int = 0
    temperature: float = 2.0     # distillation only
    alpha: float = 0.5           # weight of the soft-label loss; 1 - alpha on the hard labels

    def __post_init__(self):
        if isinstance(self.steps, bool) or not isinstance(self.steps, (int, np.integer)) or self.steps < 0:
            raise ValueError(f"steps: expected a non-negative integer, got {self.steps!r}")
        if not 0.0 <= self.alpha <= 1.0:
            raise ValueError(f"alpha: expected a weight in [0, 1], got {self.alpha}")
        if not self.temperature > 0:
            raise ValueError(f"temperature: expected a positive number, got {self.temperature}")


_QUANTIZERS = {"int8": (F.fake_quantize_int8, F.fake_quantize_int8_backward),
               "binary": (F.binarize, F.binarize_backward)}


def qat_targets(model, qat):
    """Which matrices quantization-aware training quantizes: all of them for int8; the blocks' for binary.

    Binary networks keep the first and last layers at higher precision
    (Rastegari et al. 2016 keep them in float); here the embedding and the
    classifier head stay int8.
    """
    return weight_matrices(model) if qat == "int8" else _block_matrices(model)


def finetune(model, train: Dataset, tokenizer, config: FinetuneConfig | None = None, masks=None,
             sparsity_schedule=None, qat=None, teacher_logits=None, hard_labels=False, log=None, scope="layer"):
    r"""Train ``model`` for ``config.steps`` steps of AdamW (warm-up then cosine decay).

    One loop, four uses, each an option:

    * ``masks`` {name: bool array}: pruned weights stay pruned. After backward
      their gradient is zeroed, after the update their value is zeroed again
      (AdamW's decay and momentum never bring them back).
    * ``sparsity_schedule(step) -> sparsity``: gradual magnitude pruning; the
      masks are recomputed every 10 steps from the current weights (``scope``
      "layer" or "global", as in `magnitude_masks`).
    * ``qat`` "int8" | "binary": quantization-aware training. Before each
      forward the float weights are kept aside and the quantized ones put in
      their place; backward gives the gradient for the quantized weights, the
      straight-through estimator turns it into one for the float weights,
      which the optimizer updates. At the end the model holds the *float*
      weights: quantize them again to deploy (`save_compressed`).
    * ``teacher_logits`` (N, C), rows in ``train``'s order: distillation,
      :math:`L = \alpha\,T^2\,\mathrm{KL}(p^t_T \| p^s_T) + (1-\alpha)\,\mathrm{CE}(z^s, y)`,
      where y are the true labels, or the teacher's argmax with ``hard_labels``
      (then the loss is that cross-entropy alone).

    Returns the list of training losses. Runs in train mode (dropout on), ends in eval mode.
    """
    config = config or FinetuneConfig()
    log = log or (lambda *_: None)
    rng = np.random.default_rng(config.seed)
    params = model.parameters()
    optimizer = AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    if qat and qat not in _QUANTIZERS:
        raise ValueError(f"qat: expected None, 'int8' or 'binary', got {qat!r}")
    quantize, quantize_backward = _QUANTIZERS[qat] if qat else (None, None)
    targets = qat_targets(model, qat) if qat else []
    if teacher_logits is not None and len(teacher_logits) != len(train):
        raise ValueError(f"teacher_logits: expected one row per training text ({len(train)}), got {len(teacher_logits)}")
    if masks:
        apply_masks(model, masks)
    losses, step = [], 0
    model.train()
    while step < config.steps:
        for ids, mask, labels, idx in batch_iterator(train, tokenizer, config.batch_size, config.max_len, rng=rng,
                                                     return_indices=True):
            if step >= config.steps:
                break
            step += 1
            optimizer.lr = warmup_cosine(step, config.lr, min(config.warmup_steps, config.steps),
                                         config.steps, config.lr * 0.01)
            if sparsity_schedule is not None and (step == 1 or step % 10 == 0):
                masks = magnitude_masks(model, sparsity_schedule(step), scope)
                apply_masks(model, masks)
            # 1. QAT: the forward pass sees the quantized weights
            shadows = []
            for _, p in targets:
                w_hat, cache = quantize(p.data)
                shadows.append((p, p.data, cache))
                p.data = w_hat
            model.zero_grad()
            logits = model(ids, mask)                                                  # (B, C)
            # 2. the loss: hard labels, distillation, or both
            if teacher_logits is not None and hard_labels:
                labels = teacher_logits[idx].argmax(axis=1)
            loss, cache = F.cross_entropy(logits, labels)
            dlogits = F.cross_entropy_backward(1.0, cache)
            if teacher_logits is not None and not hard_labels:
                soft, soft_cache = F.distillation_loss(logits, teacher_logits[idx].astype(logits.dtype),
                                                       config.temperature)
                loss = config.alpha * soft + (1.0 - config.alpha) * loss
                dlogits = (1.0 - config.alpha) * dlogits + F.distillation_loss_backward(config.alpha, soft_cache)
            model.backward(dlogits)
            # 3. QAT: back to the float weights; the straight-through estimator gives their gradient
            for p, w, cache in shadows:
                p.data = w
                p.grad[...] = quantize_backward(p.grad, cache)
            # 4. pruned weights get no gradient, and stay zero after the update
            if masks:
                apply_masks(model, masks, grads=True)
            clip_grad_norm(params, config.clip)
            optimizer.step()
            if masks:
                apply_masks(model, masks)
            losses.append(float(loss))
            if not math.isfinite(losses[-1]):
                raise FloatingPointError(f"loss became {losses[-1]} at step {step}; try a smaller lr")
            if step % 100 == 0:
                log(f"step {step:5d}  loss {np.mean(losses[-100:]):.4f}")
    model.eval()
    return losses


def teacher_logits(teacher, data: Dataset, tokenizer, max_len=128, batch_size=128):
    """The teacher's logits (N, C) for every text of ``data``, in ``data``'s order (eval mode, no dropout)."""
    was_training = teacher.training
    teacher.eval()
    out = None
    for ids, mask, _, idx in batch_iterator(data, tokenizer, batch_size, max_len, return_indices=True):
        z = to_numpy(teacher(ids, mask)).astype(np.float32)
        if out is None:
            out = np.zeros((len(data), z.shape[1]), dtype=np.float32)
        out[idx] = z
    teacher.train(was_training)
    return out


# --------------------------------------------------------------------------- #
# 5. Compressed checkpoints
# --------------------------------------------------------------------------- #

#: How one weight matrix can be stored, and the arrays each encoding writes:
#: "float32" values; "sparse" a packed bitmap of the non-zeros + their float32
#: values; "int8" int8 values + float32 scales per output column; "int8_sparse"
#: a bitmap + the int8 values of the non-zeros + scales; "binary" packed sign
#: bits + float32 scales.
ENCODINGS = ("float32", "sparse", "int8", "int8_sparse", "binary")


def _encode(w, encoding):
    """Arrays (suffix -> array) that store matrix ``w`` in ``encoding``."""
    if encoding == "float32":
        return {"values": w.astype(np.float32)}
    if encoding == "sparse":
        nz = w != 0
        return {"bits": np.packbits(nz.ravel()), "values": w[nz].astype(np.float32)}
    if encoding in ("int8", "int8_sparse"):
        q, s = F.quantize_int8(w.astype(np.float32))
        if encoding == "int8":
            return {"q": q, "scale": s}
        nz = w != 0
        return {"bits": np.packbits(nz.ravel()), "q": q[nz], "scale": s}
    if encoding == "binary":
        w_hat, (_, sign, alpha, _) = F.binarize(w.astype(np.float32))
        return {"bits": np.packbits((sign > 0).ravel()), "scale": alpha}
    raise ValueError(f"encoding: expected one of {list(ENCODINGS)}, got {encoding!r}")


def _decode(arrays, encoding, shape):
    """The float32 matrix back from its arrays; for int8 also (q, scale)."""
    n = int(np.prod(shape))
    if encoding == "float32":
        return arrays["values"].reshape(shape), None
    if encoding == "sparse":
        nz = np.unpackbits(arrays["bits"], count=n).astype(bool)
        w = np.zeros(n, dtype=np.float32)
        w[nz] = arrays["values"]
        return w.reshape(shape), None
    if encoding == "int8":
        q = arrays["q"].reshape(shape)
        return F.dequantize_int8(q, arrays["scale"]), (q, arrays["scale"])
    if encoding == "int8_sparse":
        nz = np.unpackbits(arrays["bits"], count=n).astype(bool)
        q = np.zeros(n, dtype=np.int8)
        q[nz] = arrays["q"]
        q = q.reshape(shape)
        return F.dequantize_int8(q, arrays["scale"]), (q, arrays["scale"])
    if encoding == "binary":
        sign = np.where(np.unpackbits(arrays["bits"], count=n).astype(bool), 1.0, -1.0).astype(np.float32)
        return sign.reshape(shape) * arrays["scale"], None
    raise CheckpointError(f"unknown encoding {encoding!r}; expected one of {list(ENCODINGS)}")


def _write_atomic(path, arrays):
    """np.savez to a temporary file beside ``path``, then rename (as `checkpoint.save`): never half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, _file_mode())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    _fsync_directory(path.parent)
    return path


def save_compressed(path, model, tokenizer=None, encoding="int8", method=None, compute=None, encodings=None,
                    extra=None):
    """Save ``model`` with its weight matrices encoded (see `ENCODINGS`); the rest stays float32.

    ``encoding`` applies to every weight matrix, unless ``encodings`` {name: encoding}
    says otherwise for some. ``compute`` "float32" (default) or "int8" (only
    when every matrix is int8): how `load_compressed` will run the model.
    Head- and FFN-pruned models keep their smaller shapes (``structure``).
    Returns the Path written.
    """
    if isinstance(model, Int8Classifier):
        model = model.model
    if encoding not in ENCODINGS:
        raise ValueError(f"encoding: expected one of {list(ENCODINGS)}, got {encoding!r}")
    encodings = dict(encodings or {})
    matrices = {name for name, _ in weight_matrices(model)}
    for name, enc in encodings.items():
        if name not in matrices:
            raise ValueError(f"encodings: {name!r} is not a weight matrix of the model")
        if enc not in ENCODINGS:
            raise ValueError(f"encodings: {name!r}: expected one of {list(ENCODINGS)}, got {enc!r}")
    compute = compute or "float32"
    if compute not in ("float32", "int8"):
        raise ValueError(f"compute: expected 'float32' or 'int8', got {compute!r}")
    arrays, tensors = {}, {}
    for name, p in model.named_parameters():
        w = to_numpy(p.data)
        enc = encodings.get(name, encoding) if name in matrices else "float32"
        if compute == "int8" and name in matrices and enc not in ("int8", "int8_sparse"):
            raise ValueError(f"compute: 'int8' needs every weight matrix in int8, but {name} is {enc}")
        for suffix, a in _encode(w, enc).items():
            arrays[f"{name}/{suffix}"] = a
        tensors[name] = {"encoding": enc, "shape": list(w.shape)}
    header = {"format": FORMAT, "version": VERSION, "method": method or encoding, "compute": compute,
              "model": {"class": type(model).__name__, "config": model.config, "structure": structure_of(model)},
              "tensors": tensors,
              "tokenizer": tokenizer.to_dict() if hasattr(tokenizer, "to_dict") else tokenizer,
              "extra": extra or {}}
    arrays["header"] = np.frombuffer(json.dumps(header, ensure_ascii=False).encode("utf-8"), dtype=np.uint8)
    return _write_atomic(path, arrays)


def _read_header(path):
    with np.load(path, allow_pickle=False) as npz:
        if "header" not in npz.files:
            return None
        try:
            return json.loads(npz["header"].tobytes().decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError, ValueError):
            return None


def is_compressed(path):
    """True when ``path`` is a readable ``.npz`` written by `save_compressed` (False for anything else)."""
    try:
        header = _read_header(path)
    except (OSError, ValueError, zipfile.BadZipFile, EOFError):
        return False
    return isinstance(header, dict) and header.get("format") == FORMAT


@dataclass
class CompressedCheckpoint:
    """What `load_compressed` returns: like `checkpoint.Checkpoint`, plus the method."""

    model: object
    tokenizer: dict | None
    method: str
    extra: dict = field(default_factory=dict)
    header: dict = field(default_factory=dict, repr=False)


def _classifier_class(path, name):
    """The classifier class a compressed file names: `TransformerClassifier` or a registered subclass of it.

    A fine-tuned model (`transfer.TransferClassifier`, what ``train --init-from``
    and ``make demo`` write) is a `TransformerClassifier` with a causal mask and
    more poolings; its module registers it with `checkpoint.register_model`, so
    this layer finds it without importing upward.
    """
    cls = _default_registry().get(name)
    if cls is None or not issubclass(cls, TransformerClassifier):
        raise CheckpointError(f"{path}: expected a TransformerClassifier (or a fine-tuned subclass of it), "
                              f"got {name!r}")
    return cls


def load_compressed(path, compute=None):
    """Read a file written by `save_compressed` and rebuild a model that runs.

    ``compute`` (default: what the file says) "float32": every matrix is
    decoded to float32 into a `TransformerClassifier` (shrunk to the saved
    structure); "int8": an `Int8Classifier` that multiplies in int8.
    Every problem raises a `checkpoint.CheckpointError` naming the file.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file")
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {name: npz[name] for name in npz.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise CheckpointError(f"{path}: cannot read it as an .npz archive ({exc})") from None
    try:
        header = json.loads(arrays.pop("header").tobytes().decode("utf-8"))
    except (KeyError, UnicodeDecodeError, json.JSONDecodeError):
        header = None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a compressed checkpoint (expected header format {FORMAT!r})")
    if header.get("version", 0) > VERSION:
        raise CheckpointError(f"{path}: written by a newer numpy_transformer (compressed format version "
                              f"{header.get('version')}); this one reads up to {VERSION}")
    cls = _classifier_class(path, header["model"]["class"])
    compute = compute or header.get("compute", "float32")
    try:
        model = cls.from_config(header["model"]["config"])
        _apply_structure(model, header["model"]["structure"])
        state, quantized = {}, {}
        for name, record in header["tensors"].items():
            parts = {k.split("/", 1)[1]: a for k, a in arrays.items() if k.split("/", 1)[0] == name}
            w, q = _decode(parts, record["encoding"], tuple(record["shape"]))
            state[name] = w
            if q is not None:
                quantized[name] = q
        model.load_state_dict(state)
    except CheckpointError as exc:
        raise CheckpointError(f"{path}: {exc}") from None
    except (KeyError, ValueError, TypeError) as exc:
        raise CheckpointError(f"{path}: the compressed weights do not fit the model ({exc})") from None
    model.eval()
    if compute == "int8":
        missing = [name for name, _ in weight_matrices(model) if name not in quantized]
        if missing:
            raise CheckpointError(f"{path}: compute 'int8' needs int8 weights, but {missing} are not int8")
        model = Int8Classifier(model, quantized)
    return CompressedCheckpoint(model=model, tokenizer=header.get("tokenizer"), method=header.get("method", "?"),
                                extra=header.get("extra") or {}, header=header)


# --------------------------------------------------------------------------- #
# 6. Measuring: file size, parameters, inference time
# --------------------------------------------------------------------------- #

def count_parameters(model):
    """Numbers the model holds (zeros of a pruned matrix included: they still occupy a dense array)."""
    model = model.model if isinstance(model, Int8Classifier) else model
    return model.num_parameters()


def time_inference(model, tokenizer, texts, batch_size, max_len=128, repeats=1, clock=None):
    """Seconds per text to classify ``texts`` in batches of ``batch_size`` (eval mode), the best of ``repeats``.

    The texts are cut into batches in their given order (no sorting by
    length), as a service answering requests would see them. ``clock``
    defaults to wall-clock time (`time.perf_counter`); on a shared machine
    pass `time.process_time` (this process's CPU time: with one thread, the
    work done, whatever else runs). Compare only times measured in the same run.
    """
    import time
    clock = clock or time.perf_counter
    batches = [tokenizer.encode_batch(list(texts[i:i + batch_size]), max_len, add_cls=True)
               for i in range(0, len(texts), batch_size)]
    model.eval()
    best = math.inf
    for _ in range(repeats):
        start = clock()
        for ids, mask in batches:
            model(ids, mask)
        best = min(best, clock() - start)
    return best / len(texts)
