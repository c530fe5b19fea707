"""parallel.for_each_slice: every row exactly once, in contiguous slices, errors reach the caller."""

import threading

import pytest
from hypothesis import given
from hypothesis import strategies as st

from numpy_transformer import parallel


@pytest.fixture
def no_minimum(monkeypatch):
    monkeypatch.setattr(parallel, "MIN_ELEMENTS_PER_THREAD", 0)


def _record(n_rows, threads, elements_per_row=1, parallel_ok=True):
    seen, lock = [], threading.Lock()

    def fn(rows):
        with lock:
            seen.append((rows, threading.current_thread()))

    with parallel.num_threads(threads):
        parallel.for_each_slice(fn, n_rows, elements_per_row=elements_per_row, parallel=parallel_ok)
    return seen


@given(n_rows=st.integers(0, 50), threads=st.integers(1, 6))
def test_slices_cover_every_row_once_in_contiguous_pieces(n_rows, threads):
    old = parallel.MIN_ELEMENTS_PER_THREAD
    parallel.MIN_ELEMENTS_PER_THREAD = 0
    try:
        seen = _record(n_rows, threads)
    finally:
        parallel.MIN_ELEMENTS_PER_THREAD = old
    rows = sorted((s.start, s.stop) for s, _ in seen)
    assert len(rows) == max(1, min(threads, n_rows))
    assert rows[0][0] == 0 and rows[-1][1] == n_rows
    assert all(a[1] == b[0] for a, b in zip(rows, rows[1:]))          # contiguous, no overlap
    lengths = [stop - start for start, stop in rows]
    assert max(lengths) - min(lengths) <= 1                           # balanced


def test_the_caller_runs_the_first_slice_and_helpers_the_rest(no_minimum):
    seen = _record(8, 3)
    by_start = {s.start: t for s, t in seen}
    assert by_start[0] is threading.current_thread()
    assert all(t is not threading.current_thread() for start, t in by_start.items() if start)


def test_small_work_or_parallel_false_runs_once_in_the_callers_thread(monkeypatch):
    monkeypatch.setattr(parallel, "MIN_ELEMENTS_PER_THREAD", 1000)
    for seen in (_record(10, 4, elements_per_row=10),            # 100 elements: not worth a thread
                 _record(10, 4, elements_per_row=10**6, parallel_ok=False)):
        assert [(s.start, s.stop) for s, _ in seen] == [(0, 10)]
        assert seen[0][1] is threading.current_thread()
    assert len(_record(10, 4, elements_per_row=500)) == 4        # 2 rows of 500 per thread: enough
    assert len(_record(10, 4, elements_per_row=300)) == 2        # 4 rows of 300 per thread: 2 threads


@pytest.mark.parametrize("failing_start", [0, 4])
def test_an_error_in_any_slice_reaches_the_caller_after_all_slices_ended(no_minimum, failing_start):
    finished = []

    def fn(rows):
        if rows.start == failing_start:
            raise KeyError(f"slice at {rows.start}")
        finished.append(rows.start)

    with parallel.num_threads(2), pytest.raises(KeyError, match=f"slice at {failing_start}"):
        parallel.for_each_slice(fn, 8)
    assert finished == [4 - failing_start]


def test_set_num_threads_validates_and_num_threads_restores(monkeypatch):
    before = parallel.get_num_threads()
    with parallel.num_threads(5):
        assert parallel.get_num_threads() == 5
    assert parallel.get_num_threads() == before
    for bad in (0, -1, 1.5, True, "2"):
        with pytest.raises(ValueError, match="positive integer"):
            parallel.set_num_threads(bad)


def test_the_default_comes_from_the_environment_or_the_cpus(monkeypatch):
    monkeypatch.setattr(parallel, "_num_threads", None)
    monkeypatch.setenv("NUMPY_TRANSFORMER_THREADS", "3")
    assert parallel.get_num_threads() == 3
    monkeypatch.setattr(parallel, "_num_threads", None)
    monkeypatch.delenv("NUMPY_TRANSFORMER_THREADS")
    assert 1 <= parallel.get_num_threads() <= 4
    for bad in ("0", "two"):
        monkeypatch.setattr(parallel, "_num_threads", None)
        monkeypatch.setenv("NUMPY_TRANSFORMER_THREADS", bad)
        with pytest.raises(ValueError, match="NUMPY_TRANSFORMER_THREADS: expected a positive integer"):
            parallel.get_num_threads()
    monkeypatch.setattr(parallel, "_num_threads", None)


def test_a_slice_that_cuts_its_own_rows_again_runs_them_in_line_instead_of_deadlocking(no_minimum):
    inner = []

    def outer(rows):
        parallel.for_each_slice(lambda r: inner.append((rows.start + r.start, rows.start + r.stop)),
                                rows.stop - rows.start)

    def run():
        with parallel.num_threads(2):
            parallel.for_each_slice(outer, 8)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(timeout=20)
    assert not t.is_alive(), "nested for_each_slice deadlocked"
    assert sorted(inner) == [(0, 2), (2, 4), (4, 8)]     # the caller's half cut again; the pool thread's in line


def test_blas_runs_on_one_thread_while_slices_run_and_gets_its_threads_back_after(no_minimum):
    threadpoolctl = pytest.importorskip("threadpoolctl")
    blas = threadpoolctl.ThreadpoolController().select(user_api="blas")
    if not blas.lib_controllers:
        pytest.skip("no BLAS library that threadpoolctl can see")
    seen = []

    def fn(rows):
        seen.append(blas.info()[0]["num_threads"] if rows.start == 0 else None)

    with threadpoolctl.threadpool_limits(limits=2, user_api="blas"):
        before = blas.info()[0]["num_threads"]
        with parallel.num_threads(2):
            parallel.for_each_slice(fn, 4)
            with pytest.raises(ZeroDivisionError):
                parallel.for_each_slice(lambda rows: 1 / 0, 4)
        after = blas.info()[0]["num_threads"]
    assert 1 in seen
    assert after == before
