"""Shared test setup: hypothesis profiles, the GPU marker, the strict CuPy stand-in.

Hypothesis profiles (pick one with HYPOTHESIS_PROFILE=name):

- ``dev`` (default): no deadline (the first call of a NumPy function can be
  slow, which is not a bug), 25 examples per test unless a test asks for more.
- ``ci`` (loaded when CI=true): the same, derandomized, so a CI failure is
  reproducible and never flaky.
- ``thorough``: 300 examples, for a long run before a release.
"""

import os

import pytest
from hypothesis import settings

from numpy_transformer.backend import gpu_available

settings.register_profile("dev", deadline=None, max_examples=25)
settings.register_profile("ci", deadline=None, max_examples=25, derandomize=True, print_blob=True)
settings.register_profile("thorough", deadline=None, max_examples=300)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE")
                      or ("ci" if os.environ.get("CI", "").lower() == "true" else "dev"))


def pytest_collection_modifyitems(config, items):
    """Skip ``@pytest.mark.gpu`` tests, saying why, where CuPy or a CUDA device is missing."""
    gpu_items = [item for item in items if item.get_closest_marker("gpu")]
    if gpu_items and not gpu_available():
        skip = pytest.mark.skip(reason="needs CuPy and a usable CUDA device: gpu_available() is False "
                                       "(install with .venv/bin/pip install -r requirements-gpu.txt)")
        for item in gpu_items:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def strict():
    """The strict CPU stand-in for CuPy (tests/strict_backend.py), registered with the backend."""
    import strict_backend

    return strict_backend.strict
