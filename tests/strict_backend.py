"""A strict CPU stand-in for CuPy, so that GPU-only breakage shows up on a laptop.

Code written for NumPy alone often breaks on CuPy in one way: it mixes a
device array with a host array (``np.exp(cupy_array)``, ``cupy_array * mask``
where ``mask`` came from ``np.tril``, ``float(cupy_vector)`` ...). CuPy raises
``TypeError`` there; NumPy would happily carry on. ``StrictArray`` is a NumPy
array that behaves like CuPy in exactly those places:

- any ufunc or NumPy function that mixes a ``StrictArray`` with a plain,
  non-0-d ``numpy.ndarray`` raises ``TypeError`` (Python scalars, NumPy
  scalars and 0-d arrays are allowed, as CuPy allows scalars);
- implicit conversion to Python objects is refused where we can intercept it
  (``float``/``int``/``complex`` of a non-0-d array, ``tolist``);
- ``.get()`` returns a plain NumPy copy, as ``cupy.ndarray.get()`` does, so
  ``backend.to_numpy`` works;
- results of reductions are 0-d arrays, never NumPy scalars (CuPy has no scalars).

``strict`` is the matching "module": ``strict.exp``, ``strict.zeros``,
``strict.where``, ``strict.add.at`` ... forward to NumPy, refuse plain host
arrays like CuPy's functions do, and wrap every array result as
``StrictArray``. ``strict.asarray`` / ``strict.array`` are the host -> device
copies (like ``cupy.asarray``) and accept anything.

Importing this module registers the pair with
``numpy_transformer.backend.register_array_type``, so
``get_array_module(strict_array)`` returns ``strict``.
"""

from __future__ import annotations

import numpy as np

from numpy_transformer import backend

__all__ = ["StrictArray", "strict", "to_strict", "is_strict"]


class StrictArray(np.ndarray):
    """A NumPy array that refuses to be mixed with host NumPy arrays, like a CuPy array."""

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        where = f"numpy.{ufunc.__name__}" + ("" if method == "__call__" else f".{method}")
        _refuse_host_arrays((inputs, kwargs), where)
        result = getattr(ufunc, method)(*_unwrap(inputs), **_unwrap(kwargs))
        if "out" in kwargs and method != "at":
            # In-place forms (y += b) return the given output arrays themselves.
            outs = kwargs["out"]
            return outs[0] if len(outs) == 1 else outs
        return _wrap(result)

    def __array_function__(self, func, types, args, kwargs):
        if not all(issubclass(t, np.ndarray) for t in types):
            return NotImplemented
        _refuse_host_arrays((args, kwargs), f"numpy.{func.__name__}")
        return _wrap(func(*_unwrap(args), **_unwrap(kwargs)))

    # Implicit conversions CuPy refuses or that would silently copy to the host.
    def _refuse_conversion(self, what):
        raise TypeError(f"StrictArray: implicit conversion of a device array of shape {self.shape} to {what} "
                        "is not allowed (CuPy refuses it too); use to_numpy(a) or a 0-d array")

    def __float__(self):
        if self.ndim:
            self._refuse_conversion("float")
        return float(self.view(np.ndarray))

    def __int__(self):
        if self.ndim:
            self._refuse_conversion("int")
        return int(self.view(np.ndarray))

    def __complex__(self):
        if self.ndim:
            self._refuse_conversion("complex")
        return complex(self.view(np.ndarray))

    def tolist(self):
        self._refuse_conversion("a Python list")

    def get(self):
        """Copy to the host as a plain ``numpy.ndarray`` (``cupy.ndarray.get``)."""
        return np.array(self.view(np.ndarray), copy=True)


def is_strict(a) -> bool:
    return isinstance(a, StrictArray)


def _is_host_array(a) -> bool:
    """A plain NumPy array that is not 0-d: what CuPy refuses to mix with device arrays."""
    return isinstance(a, np.ndarray) and not isinstance(a, StrictArray) and a.ndim > 0


def _refuse_host_arrays(obj, where):
    if _is_host_array(obj):
        raise TypeError(f"{where}: got a host numpy.ndarray of shape {obj.shape} where a device array was "
                        "expected (CuPy raises TypeError here too); move it with xp.asarray / to_device first")
    if isinstance(obj, (list, tuple)):
        for item in obj:
            _refuse_host_arrays(item, where)
    elif isinstance(obj, dict):
        for item in obj.values():
            _refuse_host_arrays(item, where)


def _unwrap(obj):
    """StrictArray -> plain ndarray view (so NumPy does the work without recursing back here)."""
    if isinstance(obj, StrictArray):
        return obj.view(np.ndarray)
    if isinstance(obj, tuple):
        return tuple(_unwrap(item) for item in obj)
    if isinstance(obj, list):
        return [_unwrap(item) for item in obj]
    if isinstance(obj, dict):
        return {key: _unwrap(value) for key, value in obj.items()}
    return obj


def _wrap(obj):
    """Every array result (and every NumPy scalar, as a 0-d array) becomes a StrictArray."""
    if isinstance(obj, np.ndarray):
        return obj.view(StrictArray)
    if isinstance(obj, np.generic):
        return np.asarray(obj).view(StrictArray)
    if isinstance(obj, tuple):
        return tuple(_wrap(item) for item in obj)
    if isinstance(obj, list):
        return [_wrap(item) for item in obj]
    return obj


def to_strict(a) -> StrictArray:
    """Host -> "device": a StrictArray copy of ``a`` (``cupy.asarray``)."""
    return np.array(_unwrap(a), copy=True).view(StrictArray)


class _StrictFunction:
    """A NumPy function or ufunc as CuPy's would be: no host arrays in, device arrays out.

    Attribute access forwards too, so ``strict.add.at(...)`` and
    ``strict.maximum.reduce(...)`` work and are just as strict.
    """

    def __init__(self, func, name):
        self._func = func
        self._name = name

    def __call__(self, *args, **kwargs):
        _refuse_host_arrays((args, kwargs), f"strict.{self._name}")
        return _wrap(self._func(*_unwrap(args), **_unwrap(kwargs)))

    def __getattr__(self, attr):
        value = getattr(self._func, attr)
        return _StrictFunction(value, f"{self._name}.{attr}") if callable(value) else value

    def __repr__(self):
        return f"<strict stand-in for numpy.{self._name}>"


class _StrictModule:
    """The CuPy-like module that owns StrictArrays: ``xp`` when ``get_array_module`` sees one."""

    __name__ = "strict"

    @staticmethod
    def asarray(a, dtype=None):
        """Host -> device copy; accepts NumPy arrays, lists and scalars (``cupy.asarray``)."""
        return np.asarray(_unwrap(a), dtype=dtype).view(StrictArray)

    array = asarray
    ndarray = StrictArray

    def __getattr__(self, name):
        value = getattr(np, name)
        if isinstance(value, type) or not callable(value):
            return value  # dtypes (strict.float32), constants (strict.pi), classes
        return _StrictFunction(value, name)

    def __repr__(self):
        return "<module 'strict' (a CPU stand-in for CuPy, tests/strict_backend.py)>"


strict = _StrictModule()

if not any(array_type is StrictArray for array_type, _ in backend._EXTRA_ARRAY_TYPES):
    backend.register_array_type(StrictArray, strict)
