"""Modules: thin objects that hold parameters and call the formulas in `functional.py`.

A `Module` is what a student will meet again in PyTorch: it has ``forward``,
``parameters()``, ``named_parameters()``, ``zero_grad()``, ``train()`` /
``eval()``, ``state_dict()`` / ``load_state_dict()`` and ``to(device)``, with
the same names and meanings. The difference is that here nothing is hidden:
``forward`` keeps the caches of the functional calls, and ``backward(dout)``
hands them back to the matching ``*_backward`` functions, in reverse order.

Two rules every module follows:

* ``backward(dout)`` returns the gradient with respect to the module's input
  and **adds** (``+=``) the gradients of its parameters into ``param.grad``.
  Accumulating is what makes shared parameters (tied embeddings) and
  gradient accumulation over several batches correct; call ``zero_grad()``
  before each step.
* ``dout`` is never modified: a residual connection hands the same array to
  two branches.

Shapes follow the legend of `functional.py` (B, T, D, H, Dh, F, V, C).
"""

from __future__ import annotations

from collections import OrderedDict

import numpy as np

from .backend import get_array_module, to_device, to_numpy

__all__ = ["Parameter", "Module"]


class Parameter:
    """A trainable array and its gradient.

    ``data`` and ``grad`` always have the same shape, dtype and device.
    ``decay`` says whether AdamW's weight decay applies: False for biases,
    LayerNorm's gain and shift, and embeddings (decaying them only pulls
    useful offsets towards zero).
    """

    def __init__(self, data, decay: bool = True):
        if not hasattr(data, "dtype") or data.dtype.kind != "f":
            raise TypeError(f"data: expected a floating-point array, got "
                            f"{getattr(data, 'dtype', type(data).__name__)}")
        self.data = data
        self.grad = get_array_module(data).zeros_like(data)
        self.decay = decay

    @property
    def shape(self):
        return self.data.shape

    @property
    def dtype(self):
        return self.data.dtype

    @property
    def size(self):
        return self.data.size

    @property
    def ndim(self):
        return self.data.ndim

    def zero_grad(self):
        self.grad[...] = 0

    def _convert(self, device=None, dtype=None):
        data = self.data
        if device is not None:
            data = to_device(data, device)
        if dtype is not None:
            data = data.astype(dtype)
        self.data = data
        self.grad = get_array_module(data).zeros_like(data)

    def __repr__(self):
        return f"Parameter(shape={tuple(self.shape)}, dtype={self.dtype})"


class Module:
    """Base class: finds its parameters and sub-modules among its attributes.

    Sub-classes assign ``Parameter`` and ``Module`` objects (or lists of
    modules) as attributes in ``__init__``; ``named_parameters`` walks them in
    the order they were assigned and names them with dots, as PyTorch does
    (``blocks.0.attn.W_qkv``).
    """

    def __init__(self):
        self.training = True

    # ---- the two passes ---------------------------------------------------
    def forward(self, *args, **kwargs):
        raise NotImplementedError

    def backward(self, dout):
        raise NotImplementedError

    def __call__(self, *args, **kwargs):
        return self.forward(*args, **kwargs)

    # ---- walking the tree -------------------------------------------------
    def named_children(self):
        """(name, module) pairs of direct sub-modules; list items are named by index."""
        for name, value in vars(self).items():
            if isinstance(value, Module):
                yield name, value
            elif isinstance(value, (list, tuple)) and value and all(isinstance(m, Module) for m in value):
                for i, m in enumerate(value):
                    yield f"{name}.{i}", m

    def modules(self):
        """This module and all its descendants, depth first."""
        yield self
        for _, child in self.named_children():
            yield from child.modules()

    def named_parameters(self, prefix: str = ""):
        """(dotted name, Parameter) pairs. A parameter shared by two modules appears once."""
        seen = set()
        for name, p in self._named_parameters(prefix):
            if id(p) not in seen:
                seen.add(id(p))
                yield name, p

    def _named_parameters(self, prefix):
        for name, value in vars(self).items():
            if isinstance(value, Parameter):
                yield prefix + name, value
        for name, child in self.named_children():
            yield from child._named_parameters(prefix + name + ".")

    def parameters(self):
        return [p for _, p in self.named_parameters()]

    def num_parameters(self) -> int:
        return int(sum(p.size for p in self.parameters()))

    def zero_grad(self):
        for p in self.parameters():
            p.zero_grad()

    # ---- modes --------------------------------------------------------------
    def train(self, mode: bool = True):
        """Training mode: dropout is active. Returns self, as in PyTorch."""
        for m in self.modules():
            m.training = mode
        return self

    def eval(self):
        """Evaluation mode: dropout is the identity."""
        return self.train(False)

    # ---- saving and loading ------------------------------------------------
    def state_dict(self):
        """An ordered dict name -> NumPy array (copies, on the CPU), ready for `np.savez`."""
        return OrderedDict((name, to_numpy(p.data).copy()) for name, p in self.named_parameters())

    def load_state_dict(self, state, strict: bool = True):
        """Copy arrays into the parameters, checking names, shapes and dtypes first.

        Nothing is changed unless every check passes; the error lists every
        missing key, unexpected key and shape mismatch at once.
        """
        own = OrderedDict(self.named_parameters())
        missing = [k for k in own if k not in state]
        unexpected = [k for k in state if k not in own]
        wrong = [f"{k}: expected shape {tuple(own[k].shape)}, got {tuple(np.shape(state[k]))}"
                 for k in own if k in state and tuple(np.shape(state[k])) != tuple(own[k].shape)]
        problems = []
        if strict and missing:
            problems.append(f"missing keys: {missing}")
        if strict and unexpected:
            problems.append(f"unexpected keys: {unexpected}")
        if wrong:
            problems.append("shape mismatch: " + "; ".join(wrong))
        if problems:
            raise ValueError("state_dict: does not fit this model - " + " | ".join(problems))
        for name, p in own.items():
            if name in state:
                xp = get_array_module(p.data)
                p.data[...] = xp.asarray(state[name], dtype=p.dtype)
        return self

    def to(self, device=None, dtype=None):
        """Move every parameter to ``device`` ("cpu" | "gpu") and/or cast to ``dtype``. Returns self."""
        for p in self.parameters():
            p._convert(device=device, dtype=dtype)
        for m in self.modules():
            m._after_to(device, dtype)
        return self

    def _after_to(self, device, dtype):
        """Hook for modules that hold non-parameter arrays (a PE table, say)."""

    def __repr__(self):
        lines = [f"{type(self).__name__}("]
        for name, child in self.named_children():
            lines.append(f"  ({name}): " + repr(child).replace("\n", "\n  "))
        lines.append(")")
        return "\n".join(lines) if len(lines) > 2 else f"{type(self).__name__}()"
