"""numpy_transformer: a readable, gradient-checked Transformer in NumPy, for teaching.

Start with `functional` (the formulas, forward and backward side by side), then
`gradcheck` (how we know they are right). Importing the package never imports
CuPy or matplotlib.
"""

import os as _os
import sys as _sys

# Before NumPy loads its OpenBLAS: let BLAS's idle threads go to sleep after
# about 2^16 CPU cycles (tens of microseconds) instead of OpenBLAS's default
# 2^28 (a tenth of a second) of busy waiting. Between two matrix products the
# fast paths run element-wise work on all cores (`parallel.py`), and a BLAS
# thread still spinning on a core halves what our thread there gets. Only a
# default: a value already set in the environment wins, and if NumPy was
# imported first it is too late to matter (see `parallel.blas_threads_sleep_soon`).
_NUMPY_LOADED_FIRST = "numpy" in _sys.modules
if not _NUMPY_LOADED_FIRST:
    _os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "16")

from . import backend, functional, gradcheck  # noqa: E402
from .backend import get_array_module  # noqa: E402, gpu_available, to_device, to_numpy

__version__ = "0.1.0"

__all__ = ["backend", "functional", "gradcheck", "get_array_module", "gpu_available", "to_device", "to_numpy",
           "__version__"]
