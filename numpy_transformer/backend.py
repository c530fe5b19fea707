"""Which array library does the work: NumPy on the CPU, CuPy on the GPU.

The rule is simple: **the arrays decide**. Every formula in `functional.py`
starts with ``xp = get_array_module(x)`` and then writes ``xp.exp``,
``xp.zeros`` ... so the same line runs on NumPy arrays and on CuPy arrays.
There is no global "current backend" that a function reads behind the
caller's back, and importing this package never imports CuPy: CuPy is loaded
only when somebody asks for the GPU (``to_device(a, "gpu")``) or hands us a
CuPy array.

Why not ``try: import cupy as np``? Because then the library switches silently
with the machine, and a checkpoint saved on a GPU box fails to load on a
laptop. Here, moving data is always explicit: ``to_device`` and ``to_numpy``.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys

import numpy as np

__all__ = [
    "GPUUnavailableError",
    "GPU_INSTALL_HINT",
    "get_array_module",
    "gpu_available",
    "to_device",
    "to_numpy",
    "device_of",
    "register_array_type",
]

GPU_INSTALL_HINT = (
    "The GPU backend needs CuPy and a working NVIDIA GPU. Install CuPy for CUDA 12 "
    "with `.venv/bin/pip install -r requirements-gpu.txt` (or `pip install -e .[gpu]`), "
    "then check that `python -c 'import cupy; print(cupy.is_available())'` prints True."
)


class GPUUnavailableError(RuntimeError):
    """Raised when the GPU is asked for but CuPy or a usable device is missing."""


# Extra array types and the module that works on them. CuPy is found through
# sys.modules instead (see below); this hook exists so the tests can plug in a
# CPU stand-in for CuPy whose arrays refuse to be mixed with NumPy's.
_EXTRA_ARRAY_TYPES: list[tuple[type, object]] = []


def register_array_type(array_type: type, module) -> None:
    """Declare that arrays of ``array_type`` are handled by ``module``."""
    _EXTRA_ARRAY_TYPES.append((array_type, module))


def _import_cupy():
    """Import CuPy on demand, turning every failure into one clear error."""
    try:
        cupy = importlib.import_module("cupy")
    except Exception as exc:  # ImportError, or a CUDA library failing to load
        raise GPUUnavailableError(f"CuPy could not be imported ({exc}). {GPU_INSTALL_HINT}") from exc
    try:
        ok = bool(cupy.is_available())
    except Exception:  # a broken driver raises instead of answering False
        ok = False
    if not ok:
        raise GPUUnavailableError(f"CuPy is installed but sees no usable CUDA device. {GPU_INSTALL_HINT}")
    return cupy


def gpu_available() -> bool:
    """True when CuPy imports and can run on a CUDA device. Never raises."""
    if importlib.util.find_spec("cupy") is None:
        return False
    try:
        _import_cupy()
    except GPUUnavailableError:
        return False
    return True


def _module_of(a):
    """The module owning one array, or None for NumPy arrays and non-arrays."""
    for array_type, module in _EXTRA_ARRAY_TYPES:
        if isinstance(a, array_type):
            return module
    # An array cannot be a CuPy array unless CuPy was imported, so looking in
    # sys.modules (instead of importing) keeps this free on CPU-only machines.
    cupy = sys.modules.get("cupy")
    if cupy is not None and isinstance(a, cupy.ndarray):
        return cupy
    return None


def get_array_module(*arrays):
    """Return ``numpy`` or ``cupy``: the library that owns the given arrays.

    Non-array arguments (Python numbers, None) are ignored. Mixing a NumPy and
    a CuPy array is an error: it would otherwise copy silently between devices.
    """
    modules = {_module_of(a) for a in arrays if isinstance(a, np.ndarray) or hasattr(a, "__cuda_array_interface__")
               or _module_of(a) is not None}
    if len(modules) > 1:
        raise TypeError("arrays: expected all NumPy or all GPU arrays, got a mix of both; "
                        "move them with to_device(a, 'cpu' | 'gpu') first")
    module = modules.pop() if modules else None
    return np if module is None else module


def device_of(a) -> str:
    """'gpu' for a CuPy array, 'cpu' otherwise."""
    return "cpu" if get_array_module(a) is np else "gpu"


def to_numpy(a) -> np.ndarray:
    """Copy an array to the host as a NumPy array (a no-op for NumPy arrays).

    CuPy arrays refuse implicit conversion (``np.asarray(cupy_array)`` raises),
    so anything that leaves the device - plotting, saving, printing - goes
    through here and says so.
    """
    if type(a) is np.ndarray:
        return a
    if hasattr(a, "get"):  # cupy.ndarray, and the tests' CPU stand-in for it
        return a.get()
    return np.asarray(a)


def to_device(a, device: str):
    """Return ``a`` on ``device`` ("cpu" or "gpu"), copying only if needed."""
    if device not in ("cpu", "gpu"):
        raise ValueError(f"device: expected 'cpu' or 'gpu', got {device!r}")
    if device == "cpu":
        return to_numpy(a)
    cupy = _import_cupy()
    return cupy.asarray(a)
