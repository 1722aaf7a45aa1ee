"""Many Python threads calling sparse_mm and linear at once.

The bindings release the GIL during the compute, so calls really overlap. Every
row is computed by one thread in a fixed order, so concurrent results must be
bitwise identical to serial ones.
"""

from __future__ import annotations

import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

import sparsegemm
from sparsegemm import CSRMatrix, linear, sparse_mm

PYTHON_THREADS = 16
JOIN_TIMEOUT_S = 300  # a deadlock fails the test instead of hanging CI


def _problems(rng: np.random.Generator) -> list:
    """Calls covering both products, both kernel paths, both dtypes, bias and threads."""
    problems = []
    for dtype in (np.float32, np.float64):
        # 75k stored entries: enough work that num_threads=2 really uses two.
        dense = np.where(rng.random((300, 500)) < 0.5, rng.uniform(-1, 1, (300, 500)), 0.0)
        a = CSRMatrix.from_dense(dense.astype(dtype))
        bias = rng.uniform(-1, 1, 300).astype(dtype)
        for n in (1, 3, 17):
            b = rng.uniform(-1, 1, (500, n)).astype(dtype)
            x = np.ascontiguousarray(b.T)
            for threads in (1, 2):
                problems.append(lambda a=a, b=b, t=threads: sparse_mm(a, b, num_threads=t))
                problems.append(lambda a=a, x=x, t=threads, bias=bias: linear(x, a, bias,
                                                                              num_threads=t))
    return problems


def _run_concurrently(problems: list, expected: list, calls_per_thread: int) -> list[str]:
    barrier = threading.Barrier(PYTHON_THREADS)

    def worker(worker_index: int) -> list[str]:
        barrier.wait()
        errors = []
        for call in range(calls_per_thread):
            index = (worker_index * 7 + call) % len(problems)
            if not np.array_equal(problems[index](), expected[index]):
                errors.append(f"thread {worker_index}, call {call}: problem {index} differs")
        return errors

    with ThreadPoolExecutor(PYTHON_THREADS) as pool:
        futures = [pool.submit(worker, i) for i in range(PYTHON_THREADS)]
        return [error for future in futures for error in future.result(timeout=JOIN_TIMEOUT_S)]


@pytest.mark.parametrize("calls_per_thread", [
    40, pytest.param(1000, marks=pytest.mark.slow)])
def test_threads_match_serial_results(calls_per_thread, rng):
    problems = _problems(rng)
    expected = [call() for call in problems]
    assert _run_concurrently(problems, expected, calls_per_thread) == []


def _os_threads() -> int:
    return len(os.listdir("/proc/self/task"))


@pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="needs Linux /proc")
def test_thread_count_stays_bounded(rng):
    problems = _problems(rng)
    expected = [call() for call in problems]
    baseline = _os_threads()
    peak = [baseline]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], _os_threads())
            time.sleep(0.002)

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        assert _run_concurrently(problems, expected, 20) == []
    finally:
        done.set()
        sampler.join()
    # Each Python thread may lead an OpenMP team of at most 2 (the largest
    # num_threads above): 16 workers + 16 helpers + the sampler, nothing more.
    assert peak[0] <= baseline + 2 * PYTHON_THREADS + 1, (baseline, peak[0])


def test_gil_is_released_during_compute(rng):
    # A long call in a worker thread; the main thread keeps ticking meanwhile.
    # Had the call kept the GIL, the ticks would stop for the whole call.
    dense = np.where(rng.random((3000, 3000)) < 0.1, 1.0, 0.0)
    a = CSRMatrix.from_dense(dense)
    b = rng.uniform(-1, 1, (3000, 512))
    window = {}

    def long_call() -> None:
        window["start"] = time.perf_counter()
        sparse_mm(a, b, num_threads=1)
        window["end"] = time.perf_counter()

    worker = threading.Thread(target=long_call)
    ticks = []
    worker.start()
    while worker.is_alive():
        ticks.append(time.perf_counter())
    worker.join()
    duration = window["end"] - window["start"]
    inside = np.array([window["start"]] + [t for t in ticks if window["start"] < t < window["end"]]
                      + [window["end"]])
    longest_gap = float(np.diff(inside).max())
    assert duration > 0.05, "the call is too short to tell"
    assert longest_gap < duration / 2, \
        f"main thread stalled {longest_gap:.3f} s of a {duration:.3f} s call"


def test_threadpoolctl_sees_our_openmp_and_settings_are_untouched(rng):
    threadpoolctl = pytest.importorskip("threadpoolctl")
    a = CSRMatrix.from_dense(np.where(rng.random((300, 300)) < 0.3, 1.0, 0.0))
    b = rng.uniform(-1, 1, (300, 20))
    sparse_mm(a, b, num_threads=2)  # make sure the OpenMP runtime is started
    before = threadpoolctl.threadpool_info()
    assert any(info["user_api"] == "openmp" and "gomp" in info["filepath"] for info in before)
    expected = sparse_mm(a, b, num_threads=1)
    for threads in (1, 2, 3):
        np.testing.assert_array_equal(sparse_mm(a, b, num_threads=threads), expected)
    # Our calls name their thread count per region: no pool's setting changes.
    after = threadpoolctl.threadpool_info()
    assert [(i["filepath"], i["num_threads"]) for i in after] == \
        [(i["filepath"], i["num_threads"]) for i in before]
    # And limiting OpenMP globally changes neither our default nor our results.
    default = sparsegemm.get_num_threads()
    with threadpoolctl.threadpool_limits(limits=1, user_api="openmp"):
        assert sparsegemm.get_num_threads() == default
        np.testing.assert_array_equal(sparse_mm(a, b, num_threads=2), expected)


def test_concurrent_calls_next_to_torch_parallel_work(python_subprocess):
    pytest.importorskip("torch")
    code = f"""
import threading
import numpy as np
import torch
import sparsegemm
from sparsegemm import CSRMatrix, sparse_mm, linear

torch.set_num_threads(2)
sparsegemm.set_num_threads(2)
rng = np.random.default_rng(0)
dense = np.where(rng.random((400, 300)) < 0.2, rng.uniform(-1, 1, (400, 300)), 0.0)
dense = dense.astype(np.float32)
a = CSRMatrix.from_dense(dense)
b = rng.uniform(-1, 1, (300, 24)).astype(np.float32)
expected = sparse_mm(a, b)
expected_linear = linear(b.T.copy(), a)
errors = []
stop = threading.Event()

def torch_work():
    m = torch.randn(256, 256)
    while not stop.is_set():
        torch.mm(m, m)

def sparse_work():
    for _ in range(200):
        if not np.array_equal(sparse_mm(a, b), expected):
            errors.append("sparse_mm")
        if not np.array_equal(linear(b.T.copy(), a), expected_linear):
            errors.append("linear")

torch_threads = [threading.Thread(target=torch_work) for _ in range(2)]
sparse_threads = [threading.Thread(target=sparse_work) for _ in range({PYTHON_THREADS // 2})]
for t in torch_threads + sparse_threads:
    t.start()
for t in sparse_threads:
    t.join()
stop.set()
for t in torch_threads:
    t.join()
assert not errors, errors[:3]
assert torch.get_num_threads() == 2, torch.get_num_threads()
assert sparsegemm.get_num_threads() == 2
np.testing.assert_allclose(sparse_mm(a, b), dense.astype(np.float64) @ b, rtol=1e-4, atol=1e-4)
print("ok")
"""
    result = python_subprocess(code, timeout=JOIN_TIMEOUT_S)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip() == "ok"
