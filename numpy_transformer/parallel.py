"""Run the independent slices of one computation on several CPU threads.

Why this exists: BLAS matrix products already use every core, but everything
else NumPy does (``exp``, a row sum, a mask) runs on one core. And the
attention's batched products ``Q Kᵀ`` and ``W V`` are many *small* matrices,
(T, Dh) @ (Dh, T) for every sequence and head: OpenBLAS spends most of its
second thread's time waiting on the first. Measured on a 2-core machine, the
(32, 4, 128, 32) @ (32, 4, 32, 128) product took 1.39 ms with 2 BLAS threads
and 1.47 ms with 1, but 0.76 ms when two Python threads each computed half of
the sequences.

Python threads can do that because NumPy lets go of the interpreter lock
(the GIL) while a ufunc loop or a BLAS call runs. So a computation whose rows
are independent (attention: every sequence of the batch on its own) can be
cut into contiguous slices of rows, one per thread, each slice written into
its own part of a preallocated result. The result does not depend on how it
was cut.

The only function the formulas need is `for_each_slice`. Everything here is
for the CPU: CuPy arrays already run in parallel on the GPU, so callers pass
``parallel=False`` for them (see `functional.py`).

The number of threads: ``NUMPY_TRANSFORMER_THREADS`` if set, else the CPUs
this process may use, at most 4 (more threads than that gain little on
arrays of this size). `set_num_threads` changes it; 1 switches threading off.

One condition for a gain: OpenBLAS's own threads must not keep a core busy
while they wait for the next matrix product. By default they spin for about a
tenth of a second after each product, and a spinning thread takes half of
the core that one of ours needs: measured on 2 cores, a default training
step then gained nothing from our threads (137 against 139 ms), and 17%
with OpenBLAS told to sleep after 2^16 cycles (106-109 against 124-131 ms).
Importing ``numpy_transformer`` before NumPy sets that
(``OPENBLAS_THREAD_TIMEOUT=16``, see ``__init__.py``); `blas_threads_sleep_soon`
says whether it is in effect.
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

__all__ = ["for_each_slice", "get_num_threads", "set_num_threads", "num_threads", "blas_threads_sleep_soon"]

# A slice with less work than this many array elements is not worth a thread hand-off (tens of
# microseconds). The tests set it to 0 to force threading on tiny arrays.
MIN_ELEMENTS_PER_THREAD = 1 << 16

_MAX_DEFAULT_THREADS = 4
_THREAD_PREFIX = "numpy_transformer-slices"
_lock = threading.Lock()
_pool: ThreadPoolExecutor | None = None
_pool_size = 0
_num_threads: int | None = None        # None: the default, read once


def _default_num_threads() -> int:
    env = os.environ.get("NUMPY_TRANSFORMER_THREADS")
    if env:
        try:
            n = int(env)
        except ValueError:
            raise ValueError(f"NUMPY_TRANSFORMER_THREADS: expected a positive integer, got {env!r}") from None
        if n < 1:
            raise ValueError(f"NUMPY_TRANSFORMER_THREADS: expected a positive integer, got {env!r}")
        return n
    try:
        cpus = len(os.sched_getaffinity(0))     # the CPUs this process may run on (Linux)
    except AttributeError:
        cpus = os.cpu_count() or 1
    return max(1, min(cpus, _MAX_DEFAULT_THREADS))


def get_num_threads() -> int:
    """How many threads `for_each_slice` uses (1 = none besides the caller's)."""
    global _num_threads
    if _num_threads is None:
        _num_threads = _default_num_threads()
    return _num_threads


def set_num_threads(n: int | None) -> int:
    """Use ``n`` threads from now on (None: the default again). Returns the previous number."""
    global _num_threads
    if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
        raise ValueError(f"n: expected a positive integer or None, got {n!r}")
    previous = get_num_threads()
    _num_threads = n
    return previous


@contextmanager
def num_threads(n: int | None):
    """``with num_threads(1): ...`` runs the block with ``n`` threads, then restores the setting."""
    previous = set_num_threads(n)
    try:
        yield
    finally:
        set_num_threads(previous)


# OPENBLAS_THREAD_TIMEOUT n: an idle OpenBLAS thread spins for 2^n cycles before it sleeps. Up to 18 the
# training step kept its gain from our threads (measured 14, 16, 18); at 22 the gain was gone.
_SLEEP_SOON_TIMEOUT = 18


def blas_threads_sleep_soon() -> bool:
    """Whether OpenBLAS's idle threads sleep soon enough not to slow our threads down (see the top of this file).

    True when ``OPENBLAS_THREAD_TIMEOUT`` is at most 18. It only counts if it
    was in the environment when NumPy loaded OpenBLAS: set by the shell, or by
    ``import numpy_transformer`` before NumPy was imported (which never sets
    it once NumPy is loaded, so a value seen here came in time unless the
    program itself set it after importing NumPy).
    """
    value = os.environ.get("OPENBLAS_THREAD_TIMEOUT", "").strip()
    return value.isdigit() and int(value) <= _SLEEP_SOON_TIMEOUT


def _get_pool(n_workers: int) -> ThreadPoolExecutor:
    global _pool, _pool_size
    with _lock:
        if _pool is None or _pool_size < n_workers:
            if _pool is not None:
                _pool.shutdown(wait=False)
            _pool = ThreadPoolExecutor(max_workers=n_workers, thread_name_prefix=_THREAD_PREFIX)
            _pool_size = n_workers
        return _pool


def _forget_pool_after_fork():
    # A forked child has the pool object but not its threads: start afresh there.
    global _pool, _pool_size
    _pool, _pool_size = None, 0


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_pool_after_fork)


class _OneBlasThread:
    """While any slices run, BLAS uses one thread: each of our threads then runs its own products.

    A product called from two of our threads at once, each asking OpenBLAS
    for both cores, made OpenBLAS's threads wait on each other: measured on 2
    cores, the (16, 8, 256, 32) @ (16, 8, 32, 256) product (plus an exp) cut
    in two halves took 19-20 ms that way, 16-24 ms whole, and 8-9 ms with
    BLAS limited to one thread while the halves ran. The limit goes through
    threadpoolctl (if installed; without it nothing is limited) and is set by
    the first of overlapping callers and lifted by the last one. The setting
    is the BLAS library's, for the whole process: a product that another
    thread of your program starts meanwhile also runs on one thread.
    """

    def __init__(self):
        self._lock = threading.Lock()
        self._users = 0
        self._controller = None      # threadpoolctl's, made on first use (it inspects the loaded libraries)
        self._limiter = None

    def __enter__(self):
        with self._lock:
            if self._users == 0:
                if self._controller is None:
                    try:
                        from threadpoolctl import ThreadpoolController
                        self._controller = ThreadpoolController().select(user_api="blas")
                    except ImportError:
                        self._controller = False
                if self._controller:
                    self._limiter = self._controller.limit(limits=1)
            self._users += 1

    def __exit__(self, *exc):
        with self._lock:
            self._users -= 1
            if self._users == 0 and self._limiter is not None:
                self._limiter.restore_original_limits()
                self._limiter = None


_one_blas_thread = _OneBlasThread()


def _slices(n_rows: int, n_parts: int) -> list[slice]:
    """Cut range(n_rows) into ``n_parts`` contiguous slices whose lengths differ by at most one."""
    bounds = [n_rows * i // n_parts for i in range(n_parts + 1)]
    return [slice(bounds[i], bounds[i + 1]) for i in range(n_parts)]


def for_each_slice(fn, n_rows: int, elements_per_row: int = 1, parallel: bool = True) -> None:
    """Call ``fn(rows)`` for contiguous slices ``rows`` that together cover ``range(n_rows)``.

    ``fn`` must treat its rows independently and write its results into
    preallocated arrays (its slice of them): it returns nothing, and the
    slices may run at the same time on different threads. The caller's
    thread runs the first slice itself, and BLAS uses one thread while the
    slices run (see `_OneBlasThread`). Exceptions raised in any slice reach
    the caller (the first one, after all slices ended).

    ``elements_per_row`` (how many array elements one row's work touches)
    decides whether threads pay: with too little work per thread, or with
    ``parallel=False`` (non-NumPy arrays), ``fn(slice(0, n_rows))`` runs once,
    in the caller's thread.
    """
    # A slice that itself calls for_each_slice runs its inner slices in line: a pool thread waiting for
    # work queued behind itself would wait forever.
    on_pool_thread = threading.current_thread().name.startswith(_THREAD_PREFIX)
    threads = get_num_threads() if parallel and not on_pool_thread else 1
    rows_per_thread = max(1, -(-MIN_ELEMENTS_PER_THREAD // max(elements_per_row, 1)))   # ceiling division
    n_parts = max(1, min(threads, n_rows // rows_per_thread))
    if n_parts == 1:
        fn(slice(0, n_rows))
        return
    parts = _slices(n_rows, n_parts)
    error = None
    with _one_blas_thread:
        futures = [_get_pool(n_parts - 1).submit(fn, rows) for rows in parts[1:]]
        try:
            fn(parts[0])
        except BaseException as e:      # noqa: BLE001 -- re-raised below, after the other slices finished
            error = e
        for f in futures:
            try:
                f.result()
            except BaseException as e:  # noqa: BLE001
                error = error or e
    if error is not None:
        raise error
