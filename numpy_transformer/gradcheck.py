r"""Numerical gradients, to check every handwritten backward pass.

The idea fits in one line. For a function ``out = f(x)`` and *any* upstream
gradient ``dout``, the scalar ``L = sum(f(x) * dout)`` has gradient
``dL/dx = backward(dout)``. We can estimate that gradient with nothing but
forward passes, by nudging one element of ``x`` at a time in both directions
(a *central* difference):

.. math:: \frac{\partial L}{\partial x_i} \approx \frac{L(x + h e_i) - L(x - h e_i)}{2h}
          \qquad \text{error } O(h^2)

By default we use the same idea twice, with steps ``h`` and ``2h``, and
combine the two so that the ``h²`` error terms cancel (Richardson
extrapolation; ``order=4``):

.. math:: \frac{\partial L}{\partial x_i} \approx
          \frac{-L(x+2he_i) + 8L(x+he_i) - 8L(x-he_i) + L(x-2he_i)}{12h}
          \qquad \text{error } O(h^4)

With ``h = 1e-3`` in float64 this agrees with a correct backward pass to
about 1e-12 in absolute terms (the plain form manages about 1e-10), so a
tolerance of 1e-5 on the relative error leaves no room for a wrong formula
while never failing a right one. Keep inputs a few ``h`` away from kinks
(``ReLU`` at 0): there the function has no derivative to estimate.

We compare with the relative error

.. math:: \mathrm{rel} = \frac{|a - n|}{\max(|a| + |n|,\ \text{floor})}

where ``a`` is analytic and ``n`` numeric; the floor (1e-6) keeps a gradient
that should be exactly zero from looking "100 % wrong" because of 1e-12 noise.

Use float64 for checks: in float32, rounding error in ``L`` divided by ``h``
is larger than the quantity we are measuring.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .backend import to_numpy

__all__ = ["numerical_gradient", "GradCheckResult", "GradCheckError", "check_gradients", "relative_error"]


def relative_error(analytic, numeric, floor=1e-6):
    """Elementwise ``|a - n| / max(|a| + |n|, floor)``."""
    a = np.asarray(analytic, dtype=np.float64)
    n = np.asarray(numeric, dtype=np.float64)
    return np.abs(a - n) / np.maximum(np.abs(a) + np.abs(n), floor)


def numerical_gradient(f, inputs, dout, name, h=1e-3, order=4):
    r"""Central-difference gradient of ``sum(f(**inputs) * dout)`` w.r.t. ``inputs[name]``.

    ``f`` takes keyword arguments and returns one array shaped like ``dout``.
    The array ``inputs[name]`` is perturbed in place and restored, one
    element at a time; the other inputs are held fixed. ``order`` is 2 (the
    textbook two-point formula) or 4 (the default, see the module docstring).
    Returns an array shaped like ``inputs[name]`` (float64, on the CPU).
    """
    if order not in (2, 4):
        raise ValueError(f"order: expected 2 or 4, got {order}")
    x = inputs[name]
    if x.dtype.kind != "f":
        raise TypeError(f"inputs[{name!r}]: can only differentiate a float array, got dtype {x.dtype}")
    if x.dtype != np.float64:
        raise TypeError(f"inputs[{name!r}]: numerical gradients need float64 (float32 rounding swamps the "
                        f"finite difference; use x.astype(np.float64)), got {x.dtype}")
    if not x.flags.c_contiguous:
        raise ValueError(f"inputs[{name!r}]: expected a C-contiguous array (it is perturbed in place "
                         "through a flat view); pass a copy made with ascontiguousarray")
    dout64 = np.asarray(to_numpy(dout), dtype=np.float64)
    flat = x.reshape(-1)  # a view: writing into it writes into x

    def loss_at(i, step):
        old = flat[i].item()
        flat[i] = old + step
        value = float((np.asarray(to_numpy(f(**inputs)), dtype=np.float64) * dout64).sum())
        flat[i] = old
        return value

    grad = np.zeros(x.size, dtype=np.float64)
    for i in range(x.size):
        if order == 2:
            grad[i] = (loss_at(i, h) - loss_at(i, -h)) / (2 * h)
        else:
            grad[i] = (-loss_at(i, 2 * h) + 8 * loss_at(i, h)
                       - 8 * loss_at(i, -h) + loss_at(i, -2 * h)) / (12 * h)
    return grad.reshape(x.shape)


@dataclass
class GradCheckResult:
    """The worst relative error of one input, where it happens, and both values there."""

    name: str
    max_rel_error: float
    index: tuple
    analytic: float
    numeric: float
    tolerance: float
    shape: tuple = field(default=())

    @property
    def ok(self) -> bool:
        return self.max_rel_error <= self.tolerance

    def __str__(self) -> str:
        verdict = "ok" if self.ok else "WRONG"
        return (f"{self.name:>12s} {str(self.shape):>16s}  worst rel. error {self.max_rel_error:.2e} "
                f"at index {self.index}: analytic {self.analytic:+.6e} vs numeric {self.numeric:+.6e}  [{verdict}]")


# The seed of the default random ``dout`` (see check_gradients).
_DOUT_SEED = 2_718_281_828


class GradCheckError(AssertionError):
    """Raised by `check_gradients` when some gradient is wrong; carries the results."""

    def __init__(self, message, results):
        super().__init__(message)
        self.results = results


def check_gradients(forward, backward, inputs, wrt=None, dout=None, rng=None, h=1e-3, order=4, tol=1e-5,
                    raise_on_failure=True):
    r"""Compare a backward function with central differences, input by input.

    Args:
        forward: ``forward(**inputs) -> out`` (one array).
        backward: ``backward(dout, **inputs) -> dict name -> gradient``, the
            analytic gradients to check (it usually calls the forward function
            again to get its cache, then the ``*_backward`` function).
        inputs: dict name -> array; float64 arrays for a meaningful check.
        wrt: names to check (default: every float array in ``inputs``).
        dout: the upstream gradient; a random normal one by default, so that
            no symmetry of the function can hide a wrong backward.
        rng: numpy.random.Generator for ``dout`` (default: a fixed seed that
            is not 0, so that ``dout`` is not a copy of an input drawn with seed 0).
        tol: the largest relative error accepted.

    Returns: dict name -> GradCheckResult. If some input fails and
    ``raise_on_failure``, raises GradCheckError whose message lists every
    input with its worst element, analytic and numeric values.
    """
    for key, value in inputs.items():
        if hasattr(value, "dtype") and value.dtype.kind == "f" and value.dtype != np.float64:
            raise TypeError(f"inputs[{key!r}]: gradient checks need float64 (float32 rounding "
                            f"swamps the finite difference), got {value.dtype}")
    if wrt is None:
        wrt = [k for k, v in inputs.items() if hasattr(v, "dtype") and v.dtype.kind == "f"]
    out = forward(**inputs)
    if dout is None:
        # Not seed 0: inputs are often drawn with default_rng(0) too, and then dout
        # would *equal* x, which makes x^T dout symmetric and hides a transposed dW.
        rng = np.random.default_rng(_DOUT_SEED) if rng is None else rng
        dout = rng.standard_normal(np.shape(out))
    analytic = backward(dout, **inputs)
    results = {}
    for name in wrt:
        if name not in analytic or analytic[name] is None:
            raise KeyError(f"backward: returned no gradient for {name!r} (returned {sorted(analytic)})")
        a = np.asarray(to_numpy(analytic[name]), dtype=np.float64)
        x = inputs[name]
        if a.shape != tuple(x.shape):
            raise ValueError(f"backward: the gradient for {name!r} has shape {a.shape}, but the input "
                             f"has shape {tuple(x.shape)}; a gradient always has its input's shape")
        n = numerical_gradient(forward, inputs, dout, name, h=h, order=order)
        rel = relative_error(a, n)
        worst = np.unravel_index(int(np.argmax(rel)), rel.shape) if rel.size else ()
        results[name] = GradCheckResult(
            name=name,
            max_rel_error=float(rel[worst]) if rel.size else 0.0,
            index=tuple(int(i) for i in worst),
            analytic=float(a[worst]) if rel.size else 0.0,
            numeric=float(n[worst]) if rel.size else 0.0,
            tolerance=tol,
            shape=tuple(x.shape),
        )
    failed = [r for r in results.values() if not r.ok]
    if failed and raise_on_failure:
        lines = "\n".join(str(r) for r in results.values())
        raise GradCheckError(f"{len(failed)} of {len(results)} gradients are wrong (tolerance {tol:g}):\n{lines}",
                             results)
    return results
