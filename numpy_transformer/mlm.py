r"""Masked language modelling (BERT's pre-training objective, seed §2.2).

A causal language model (`models.TransformerLM`) reads left to right and
predicts the next character. A *masked* language model reads the whole text
at once, with some characters hidden, and predicts the hidden ones (Devlin et
al. 2019). The encoder is then *bidirectional*: every position sees both
sides, which is what a classifier wants from its features.

Two pieces live here:

* `mask_tokens` chooses the positions to predict and corrupts the input::

      choose 15 % of the real tokens            (padding and protected ids never)
        80 % of those -> [MASK]
        10 %          -> a random character
        10 %          -> kept as they are
      targets = the original id at a chosen position, ignore_index elsewhere

  The loss (`functional.cross_entropy` with ``ignore_index``) counts only the
  chosen positions. Why not always [MASK]? [MASK] never appears when the
  model is later fine-tuned; the random and kept 20 % force it to produce a
  useful representation of *every* input character, not only of [MASK].

* `TransformerMLM`: `TransformerLM` without the causal mask, with the same tied
  output layer (``logits = h E^T``), so that the two objectives share one
  architecture and one checkpoint layout (embedding, positional table,
  encoder blocks): `transfer.py` starts a classifier from either.

Shape legend as in `functional.py`: B batch, T sequence length, D width, V vocabulary.
"""

from __future__ import annotations

import numpy as np

from . import checkpoint
from . import functional as F
from .models import TransformerLM, _check_ids_and_mask

__all__ = ["IGNORE_INDEX", "mask_tokens", "TransformerMLM"]

IGNORE_INDEX = -100   # the value `functional.cross_entropy` skips


def mask_tokens(ids, valid, rng, mask_id, random_ids, mask_prob=0.15, protected_ids=(), ignore_index=IGNORE_INDEX):
    """Choose and corrupt the positions a masked language model must predict.

    Args:
        ids: (B, T) integer token ids.
        valid: (B, T) bool, True at real tokens (padding is never chosen).
        rng: numpy.random.Generator: every draw comes from it.
        mask_id: the id of [MASK].
        random_ids: (low, high): the replacement in the "random character" case
            is drawn uniformly from ids low .. high-1 (the characters, not the
            special tokens).
        mask_prob: the fraction of real tokens chosen (0.15 in BERT).
        protected_ids: ids never chosen even where ``valid`` ([CLS], [BOS] ...).
        ignore_index: the target written at positions that are not chosen.

    Returns:
        inputs (B, T): ``ids`` with the chosen positions corrupted (a new array);
        targets (B, T): the original id where chosen, ``ignore_index`` elsewhere;
        chosen (B, T) bool.

    Each real token is chosen independently with probability ``mask_prob``,
    then independently replaced by [MASK] (80 %), a random character (10 %) or
    kept (10 %). (BERT's released code chooses exactly round(15 %) per
    sequence; for the proportions over a batch the two agree.)
    """
    ids = np.asarray(ids)
    valid = np.asarray(valid)
    if ids.dtype.kind not in "iu" or ids.ndim != 2:
        raise TypeError(f"ids: expected a 2-D integer array (B, T), got {ids.dtype} of shape {ids.shape}")
    if valid.dtype != bool or valid.shape != ids.shape:
        raise ValueError(f"valid: expected a boolean array of shape {ids.shape}, got {valid.dtype} {valid.shape}")
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng: expected a numpy.random.Generator, got {type(rng).__name__}")
    if not 0.0 < mask_prob < 1.0:
        raise ValueError(f"mask_prob: expected a probability in (0, 1), got {mask_prob}")
    low, high = (int(v) for v in random_ids)
    if not 0 <= low < high:
        raise ValueError(f"random_ids: expected (low, high) with 0 <= low < high, got {random_ids}")

    candidates = valid & ~np.isin(ids, np.asarray(list(protected_ids), dtype=ids.dtype))   # (B, T)
    chosen = candidates & (rng.random(ids.shape) < mask_prob)                             # (B, T)
    how = rng.random(ids.shape)                                                           # (B, T) which corruption
    to_mask = chosen & (how < 0.8)
    to_random = chosen & (how >= 0.8) & (how < 0.9)
    inputs = ids.copy()
    inputs[to_mask] = mask_id
    inputs[to_random] = rng.integers(low, high, size=int(to_random.sum()))
    targets = np.where(chosen, ids, ignore_index).astype(np.int64)
    return inputs, targets, chosen


class TransformerMLM(TransformerLM):
    r"""A bidirectional encoder with a tied output layer: BERT's masked-LM model, at our scale.

    .. math::
        H = \mathrm{Encoder}(\mathrm{Drop}(E[\tilde x]\sqrt D + PE),\ M_{pad}), \quad z = H E^\top \in \mathbb R^{T\times V}

    The same constructor, parameters and names as `TransformerLM`; the only
    difference is the attention mask: padding only, no causal triangle, so
    position t sees the characters on both sides of a [MASK]. (BERT adds a
    dense + GELU + LayerNorm transform before the output layer; with our
    pre-LN encoder's final LayerNorm we go straight to the tied layer.)
    ``backward`` is `TransformerLM`'s: the mask changes which weights the
    forward pass uses, not the shape of the computation.
    """

    def forward(self, ids, mask=None, positions=None):
        """ids (B, T) int (already corrupted by `mask_tokens`), mask (B, T) bool or None -> logits (B, T, V).

        ``positions`` (B, T) bool: compute the output layer only where True
        (the chosen positions of `mask_tokens`) and return logits (N, V) for
        those N positions, in row-major order. The loss counts nothing else,
        and the output layer (V = several thousand) is the largest product of
        the model, so this saves most of its cost; the result is the same.
        """
        _check_ids_and_mask(ids, mask, self.vocab_size, self.max_len)
        xp = self._xp()
        ids = xp.asarray(ids)
        attend = None if mask is None else F.padding_mask(xp.asarray(mask))     # (B, 1, 1, T): keys only
        x = self._embed_forward(ids)                                            # (B, T, D)
        h = self.encoder(x, attend)                                             # (B, T, D)
        B, T, D = h.shape
        self._positions = None
        if positions is not None:
            positions = xp.asarray(positions)
            if positions.shape != (B, T) or positions.dtype != bool:
                raise ValueError(f"positions: expected a boolean array of shape {(B, T)}, got "
                                 f"{positions.dtype} {tuple(positions.shape)}")
            self._positions = (positions, h.shape, h.dtype)
            h = h[positions]                                                    # (B, T, D) -> (N, D)
        rows = h.reshape(-1, D)                                                 # (B*T or N, D)
        if self.tie_weights:
            logits, self._cache = F.linear(rows, self.embed.E.data.T)           # (rows, D) -> (rows, V)
        else:
            logits = self.head(rows)
            self._cache = True
        return logits if positions is not None else logits.reshape(B, T, -1)   # (N, V) or (B, T, V)

    def backward(self, dlogits):
        """dlogits (B, T, V), or (N, V) after ``positions`` -> gradient at the embedding output (B, T, D)."""
        if self._cache is None:
            raise RuntimeError("TransformerMLM.backward: call forward first")
        V = dlogits.shape[-1]
        drows = dlogits.reshape(-1, V)
        if self.tie_weights:
            # in the forward pass this was: logits = h @ E^T
            dh, dEt, _ = F.linear_backward(drows, self._cache)                  # (rows, D), (D, V)
            self.embed.E.grad += dEt.T
        else:
            dh = self.head.backward(drows)
        if self._positions is not None:
            positions, shape, dtype = self._positions
            full = self._xp().zeros(shape, dtype=dh.dtype)                      # (B, T, D): zero where not chosen
            full[positions] = dh                                                # in the forward pass: h = h[positions]
            dh = full
        else:
            dh = dh.reshape(dlogits.shape[:-1] + (-1,))
        return self._embed_backward(self.encoder.backward(dh))

    def generate(self, *args, **kwargs):
        raise TypeError("TransformerMLM.generate: a masked language model fills in [MASK] positions; "
                        "it does not generate left to right (use TransformerLM)")


checkpoint.register_model(TransformerMLM)   # so that `checkpoint.load` rebuilds MLM checkpoints
