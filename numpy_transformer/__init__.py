"""numpy_transformer: a readable, gradient-checked Transformer in NumPy, for teaching.

Start with `functional` (the formulas, forward and backward side by side), then
`gradcheck` (how we know they are right). Importing the package never imports
CuPy or matplotlib.
"""

from . import backend, functional, gradcheck
from .backend import get_array_module, gpu_available, to_device, to_numpy

__version__ = "0.1.0"

__all__ = ["backend", "functional", "gradcheck", "get_array_module", "gpu_available", "to_device", "to_numpy",
           "__version__"]
