"""Memory: no growth over many calls; >2^31-entry requests handled or rejected cheaply."""

from __future__ import annotations

import gc
import os

import numpy as np
import pytest
import scipy.sparse as sp

from sparsegemm import CSRMatrix, linear, sparse_mm

CALLS = 10_000
MAX_GROWTH_BYTES = 1 << 20


def _rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _growth_over_calls(call, calls: int = CALLS) -> int:
    for _ in range(200):  # warm up: allocator pools, OpenMP threads, caches
        call()
    gc.collect()
    before = _rss_bytes()
    for _ in range(calls):
        call()
    gc.collect()
    return _rss_bytes() - before


pytestmark = pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="needs Linux /proc")


@pytest.fixture
def operands(rng):
    # Small, so 10,000 calls take a second or two; the leak check counts calls, not bytes.
    dense = np.where(rng.random((60, 50)) < 0.3, rng.uniform(-1, 1, (60, 50)), 0.0)
    return CSRMatrix.from_dense(dense.astype(np.float32)), dense


@pytest.mark.parametrize("n", [1, 9])
def test_products_do_not_leak(operands, rng, n):
    a, _ = operands
    b = rng.uniform(-1, 1, (50, n)).astype(np.float32)
    b_fortran = np.asfortranarray(b)  # takes the copy-to-scratch path
    out = np.empty((60, n), np.float32)
    x = np.ascontiguousarray(b.T)
    bias = np.ones(60, np.float32)

    def calls() -> None:
        sparse_mm(a, b, num_threads=2)
        sparse_mm(a, b_fortran, out=out, num_threads=2)
        linear(x, a, bias, num_threads=2)

    assert _growth_over_calls(calls) < MAX_GROWTH_BYTES


def test_constructors_do_not_leak(operands):
    a, dense = operands
    scipy_matrix = sp.csr_array(dense)

    def calls() -> None:
        CSRMatrix.from_dense(dense, 0.5)
        CSRMatrix.from_scipy(scipy_matrix)
        CSRMatrix((a.data, a.indices, a.indptr), shape=a.shape).astype(np.float64)
        a.to_dense()
        a.to_scipy()

    assert _growth_over_calls(calls, CALLS // 5) < MAX_GROWTH_BYTES


def test_errors_do_not_leak(operands):
    a, _ = operands
    wrong = np.ones((7, 3), np.float32)

    def calls() -> None:
        with pytest.raises(ValueError):
            sparse_mm(a, wrong)
        with pytest.raises(ValueError):
            CSRMatrix((np.ones(1), np.array([5]), np.array([0, 1])), shape=(1, 2))

    assert _growth_over_calls(calls) < MAX_GROWTH_BYTES


def test_more_than_2_31_entries_rejected_by_length_checks():
    # indptr claims 2^31 + 1 entries while the arrays hold 1: rejected by the
    # length check, with nothing of that size allocated.
    before = _rss_bytes()
    indptr = np.array([0, 2**31 + 1], np.int64)
    with pytest.raises(ValueError, match=r"indptr\[-1\]"):
        CSRMatrix((np.ones(1), np.zeros(1, np.int32), indptr), shape=(1, 2**31 - 1))
    huge_row = np.array([0, 1, 2**33], np.int64)
    with pytest.raises(ValueError):
        CSRMatrix((np.ones(1), np.zeros(1, np.int32), huge_row), shape=(2, 4))
    assert _rss_bytes() - before < MAX_GROWTH_BYTES


def test_row_pointers_are_64_bit():
    # The format stores int64 row pointers, so counts past 2^31 are representable;
    # to_scipy keeps int32 only while they fit.
    matrix = CSRMatrix.from_dense(np.eye(3))
    assert matrix.indptr.dtype == np.int64
    assert matrix.to_scipy().indptr.dtype == np.int32


def test_linear_recycles_its_scratch_memory():
    # A 1024 x 384 linear packs x and its result through two 1.6 MB scratch
    # arrays. Allocated fresh each call, they are faulted in page by page again
    # (measured in a model: about 1,050 faults a call, half the call's time);
    # recycled per thread, only the result array (numpy's) may fault. glibc
    # keeps freed blocks or returns them depending on the heap's history, so
    # the child pins its mmap threshold: every large block is then returned.
    # One thread: where threads share a page's first write, each counts a fault.
    import subprocess
    import sys
    import textwrap

    script = textwrap.dedent("""
        import ctypes, resource
        import numpy as np
        from sparsegemm import CSRMatrix, linear
        M_MMAP_THRESHOLD = -3
        ctypes.CDLL(None).mallopt(M_MMAP_THRESHOLD, 128 * 1024)
        rng = np.random.default_rng(0)
        weight = CSRMatrix.from_dense(
            np.where(rng.random((384, 384)) < 0.1, 1.0, 0.0).astype(np.float32))
        x = rng.standard_normal((1024, 384)).astype(np.float32)
        out = linear(x, weight, num_threads=1)
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        for _ in range(20):
            out = linear(x, weight, num_threads=1)
        print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 20)
    """)
    faults_per_call = float(subprocess.run([sys.executable, "-c", script], check=True,
                                           capture_output=True, text=True).stdout)
    result_pages = 1024 * 384 * 4 // os.sysconf("SC_PAGE_SIZE")
    assert faults_per_call < 1.5 * result_pages, faults_per_call


HUGE_PAGE = 2 << 20


def _large_matrices(rng) -> dict:
    """Each format over a 1024 x 4096 weight at 50%: every value array is 8 MiB (float32),
    the bitmap 512 KiB (under a huge page)."""
    dense = np.where(rng.random((1024, 4096)) < 0.5, 0, rng.standard_normal((1024, 4096)))
    dense = dense.astype(np.float32)
    from sparsegemm import BitmapMatrix, BSRMatrix
    return {"dense": dense, "csr": CSRMatrix.from_dense(dense),
            "bsr": BSRMatrix.from_dense(dense, blocksize=(1, 4)),
            "bitmap": BitmapMatrix.from_dense(dense)}


def test_large_arrays_start_on_a_huge_page_and_small_ones_on_a_cache_line(rng):
    from sparsegemm import _core
    matrices = _large_matrices(rng)
    x = rng.standard_normal((3, 4096)).astype(np.float32)
    expected = x.astype(np.float64) @ matrices["dense"].T.astype(np.float64)
    for name in ("csr", "bsr", "bitmap"):
        matrix = matrices[name]
        values = matrix.data
        assert values.nbytes >= HUGE_PAGE
        alignment = HUGE_PAGE if _core.huge_pages_enabled() else 64
        assert values.ctypes.data % alignment == 0, name
        np.testing.assert_allclose(linear(x, matrix), expected, rtol=1e-4, atol=1e-3)
    bits = matrices["bitmap"].bits
    assert bits.nbytes < HUGE_PAGE and bits.ctypes.data % 64 == 0
    small = CSRMatrix.from_dense(np.eye(3, dtype=np.float32))
    assert small.data.ctypes.data % 64 == 0


def test_plain_allocations_when_huge_pages_are_turned_off(python_subprocess):
    code = """
import numpy as np, sparsegemm
from sparsegemm import _core
assert not _core.huge_pages_enabled()
rng = np.random.default_rng(0)
dense = np.where(rng.random((1024, 4096)) < 0.5, 0, rng.standard_normal((1024, 4096)))
dense = dense.astype(np.float32)
x = rng.standard_normal((2, 4096)).astype(np.float32)
for matrix in (sparsegemm.CSRMatrix.from_dense(dense), sparsegemm.BitmapMatrix.from_dense(dense)):
    assert matrix.data.ctypes.data % 64 == 0
    np.testing.assert_allclose(sparsegemm.linear(x, matrix), x @ dense.T, rtol=1e-4, atol=1e-3)
print("ok")
"""
    result = python_subprocess(code, env={"SPARSEGEMM_HUGE_PAGES": "off"})
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["ok"]
