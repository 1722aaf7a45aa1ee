"""Shared fixtures and reference helpers for the sparsegemm test suite.

Every product is checked against a float64 scipy reference that, like the
kernels, sums only *stored* entries (so ``0 * inf`` never arises from a
structural zero). The allowed error of each output entry is the classical
bound for a sum of ``k`` products in the kernel's precision, with ``k`` the
entries stored in that row of the sparse matrix (not its column count, which
would let a dropped entry pass on a wide matrix), so a test can only fail on a
real error, never on rounding.

Fixtures other test files can reuse:

* ``isa`` -- parametrised over :func:`sparsegemm.available_isas`; the test
  body runs with the kernels forced to that level.
* ``isa_with_extensions`` -- as ``isa``, plus 'avx512-plain' (the avx512
  level with its VBMI2/VNNI kernels turned off) and 'avx512-bitmapwalk' (the
  int8 walk by stored columns off) where the CPU has those extensions: the
  int8 and bfloat16 bitmap kernels differ between them.
* ``rng`` -- a seeded ``numpy.random.Generator``.
* ``random_sparse`` -- factory for a random dense array with a sparsity pattern.
* ``check_sparse_mm`` / ``check_linear`` -- compare a result with the float64
  reference (session-scoped, so hypothesis tests may use them).
"""

from __future__ import annotations

import os
from typing import Any, Callable

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import HealthCheck, settings

import sparsegemm

# Hypothesis: no deadlines (the machine is shared and noisy); example counts are
# set per test module so CI stays fast.
settings.register_profile(
    "sparsegemm",
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.load_profile("sparsegemm")

def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--runslow", action="store_true", default=False,
                     help="also run tests marked @pytest.mark.slow")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--runslow"):
        return
    skip_slow = pytest.mark.skip(reason="slow: run with --runslow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip_slow)


@pytest.fixture(params=sparsegemm.available_isas())
def isa(request: pytest.FixtureRequest) -> str:
    """Each SIMD level this CPU supports ('scalar' always), forced for the test."""
    with sparsegemm.use_isa(request.param):
        assert sparsegemm.get_isa() == request.param
        yield request.param


def _isa_variants() -> list[str]:
    variants = list(sparsegemm.available_isas())
    if sparsegemm._core.avx512_extensions_supported():
        variants.append("avx512-plain")
        variants.append("avx512-bitmapwalk")
    if sparsegemm._core.amx_supported():
        variants.append("avx512-noamx")
    return variants


@pytest.fixture(params=_isa_variants())
def isa_with_extensions(request: pytest.FixtureRequest) -> str:
    """Like ``isa``; 'avx512-plain' runs the avx512 level with VBMI2/VNNI (and
    so AMX) off, 'avx512-noamx' with only AMX off, 'avx512-bitmapwalk' with the
    int8 kernels' walk of very sparse rows by stored columns off."""
    level, _, variant = request.param.partition("-")
    core = sparsegemm._core
    previous = core.use_avx512_extensions()
    previous_amx = core.amx_supported() and core.use_amx()
    previous_indexed = core.use_int8_indexed_walk()
    core.set_use_avx512_extensions(previous and variant != "plain")
    core.set_use_int8_indexed_walk(previous_indexed and variant != "bitmapwalk")
    if core.amx_supported():
        core.set_use_amx(previous_amx and variant != "noamx")
    try:
        with sparsegemm.use_isa(level):
            yield request.param
    finally:
        core.set_use_avx512_extensions(previous)
        core.set_use_int8_indexed_walk(previous_indexed)
        if core.amx_supported():
            core.set_use_amx(previous_amx)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(20240611)


def make_random_sparse(rng: np.random.Generator, shape: tuple[int, int], density: float,
                       dtype: Any = np.float64, pattern: str = "uniform") -> np.ndarray:
    """A dense array with about ``density`` of its entries nonzero.

    ``pattern``: 'uniform'; 'empty_rows' (every other row empty); 'skewed' (one
    row holds most of the entries).
    """
    rows = shape[0]
    values = rng.uniform(-1.0, 1.0, size=shape)
    values[values == 0] = 0.5  # a drawn 0.0 would silently lower the density
    if pattern == "uniform":
        keep = rng.random(shape) < density
    elif pattern == "empty_rows":
        keep = rng.random(shape) < density
        keep[::2] = False
    elif pattern == "skewed":
        keep = rng.random(shape) < density / 20
        if rows:
            keep[rows // 2] = True
    else:
        raise ValueError(f"unknown pattern {pattern!r}")
    return np.where(keep, values, 0.0).astype(dtype)


@pytest.fixture
def random_sparse(rng: np.random.Generator) -> Callable[..., np.ndarray]:
    """``random_sparse(shape, density, dtype=float64, pattern='uniform')``."""
    return lambda shape, density, dtype=np.float64, pattern="uniform": make_random_sparse(
        rng, shape, density, dtype, pattern)


def _as_scipy64(a: Any) -> sp.csr_array:
    """The stored entries of ``a`` (CSRMatrix, scipy or dense) as a float64 scipy CSR."""
    if isinstance(a, sparsegemm.CSRMatrix):  # to_scipy: bfloat16 values widened, zeros kept
        return sp.csr_array(a.to_scipy(), dtype=np.float64)
    if sp.issparse(a):
        return sp.csr_array(a, dtype=np.float64)
    return sp.csr_array(np.asarray(a, dtype=np.float64))


def reference_matmul(a: Any, b: Any, bias: Any = None) -> tuple[np.ndarray, np.ndarray]:
    """(A @ B (+ bias[:, None]), |A| @ |B| (+ |bias|)) in float64, for 1-d or 2-d B."""
    a64 = _as_scipy64(a)
    b64 = np.asarray(b, dtype=np.float64)
    product = np.asarray(a64 @ b64)
    magnitude = np.asarray(abs(a64) @ np.abs(b64))
    if bias is not None:
        bias64 = np.asarray(bias, dtype=np.float64)
        product = product + (bias64 if b64.ndim == 1 else bias64[:, None])
        magnitude = magnitude + np.abs(bias64 if b64.ndim == 1 else bias64[:, None])
    return product, magnitude


def reference_linear(x: Any, weight: Any, bias: Any = None) -> tuple[np.ndarray, np.ndarray]:
    """(x @ W.T (+ bias), |x| @ |W|.T (+ |bias|)) in float64, for any leading dims of x."""
    x64 = np.asarray(x, dtype=np.float64)
    w64 = _as_scipy64(weight)
    flat = x64.reshape(int(np.prod(x64.shape[:-1])), x64.shape[-1])
    product = np.asarray(w64 @ flat.T).T
    magnitude = np.asarray(abs(w64) @ np.abs(flat).T).T
    if bias is not None:
        bias64 = np.asarray(bias, dtype=np.float64)
        product = product + bias64
        magnitude = magnitude + np.abs(bias64)
    out_shape = x64.shape[:-1] + (w64.shape[0],)
    return product.reshape(out_shape), magnitude.reshape(out_shape)


def assert_product_close(result: np.ndarray, expected: np.ndarray, magnitude: np.ndarray,
                         terms: Any, dtype: Any) -> None:
    """``result`` equals ``expected`` within the rounding bound of ``terms`` products.

    ``terms`` is a count, or an array of counts broadcasting against the result
    (the stored entries behind each output entry). Non-finite expected entries
    must match exactly (NaN where NaN, same-signed Inf). The bound
    ``2 (terms + 2) eps |A||B|`` holds for any summation order.
    """
    assert result.shape == expected.shape, f"shape {result.shape}, expected {expected.shape}"
    assert result.dtype == np.dtype(dtype), f"dtype {result.dtype}, expected {np.dtype(dtype)}"
    got = result.astype(np.float64)
    finite = np.isfinite(expected)
    same_nonfinite = (np.isnan(got) & np.isnan(expected)) | (got == expected)
    bad_nonfinite = ~finite & ~same_nonfinite
    eps = np.finfo(dtype).eps
    bound = 2.0 * (terms + 2) * eps * magnitude + np.finfo(dtype).tiny
    with np.errstate(invalid="ignore"):
        bad_finite = finite & ~(np.abs(got - expected) <= bound)
    bad = bad_nonfinite | bad_finite
    if bad.any():
        index = tuple(int(i) for i in np.argwhere(bad)[0])
        raise AssertionError(
            f"{int(bad.sum())} of {bad.size} entries wrong; first at {index}: got {got[index]!r}, "
            f"expected {expected[index]!r} (bound {bound[index]:.3g})")


def stored_per_row(a: Any) -> np.ndarray:
    """Entries stored in each row of ``a`` (the terms each output entry sums)."""
    return np.diff(_as_scipy64(a).indptr)


@pytest.fixture(scope="session")
def check_sparse_mm() -> Callable[..., None]:
    """``check_sparse_mm(result, a, b, bias=None)``: compare with the float64 reference."""

    def check(result: np.ndarray, a: Any, b: Any, bias: Any = None) -> None:
        expected, magnitude = reference_matmul(a, b, bias)
        terms = stored_per_row(a)  # output rows are A's rows
        assert_product_close(result, expected, magnitude,
                             terms if expected.ndim == 1 else terms[:, None], result.dtype)

    return check


@pytest.fixture(scope="session")
def check_linear() -> Callable[..., None]:
    """``check_linear(result, x, weight, bias=None)``: compare with the float64 reference."""

    def check(result: np.ndarray, x: Any, weight: Any, bias: Any = None) -> None:
        expected, magnitude = reference_linear(x, weight, bias)
        # output columns (the last axis) are the weight's rows
        assert_product_close(result, expected, magnitude, stored_per_row(weight), result.dtype)

    return check


def run_python(code: str, *, env: dict[str, str] | None = None,
               timeout: float = 120) -> Any:
    """Run ``code`` in a fresh interpreter that imports the same sparsegemm as this one.

    Returns the ``subprocess.CompletedProcess`` (text mode); ``env`` entries are
    added to (or, with value '', removed from) this process's environment.
    """
    import subprocess
    import sys

    package_root = os.path.dirname(os.path.dirname(sparsegemm.__file__))
    child_env = dict(os.environ)
    child_env["PYTHONPATH"] = os.pathsep.join(
        [package_root] + ([child_env["PYTHONPATH"]] if child_env.get("PYTHONPATH") else []))
    for key, value in (env or {}).items():
        if value == "":
            child_env.pop(key, None)
        else:
            child_env[key] = value
    return subprocess.run([sys.executable, "-c", code], check=False, env=child_env,
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="session")
def python_subprocess() -> Callable[..., Any]:
    """``python_subprocess(code, env=None, timeout=120)`` -> CompletedProcess (see run_python)."""
    return run_python


@pytest.fixture(autouse=True)
def _restore_runtime_settings():
    """Undo a test's changes to the process-wide thread count and ISA."""
    threads = sparsegemm._runtime._num_threads_setting
    isa = sparsegemm.get_isa()
    yield
    sparsegemm.set_num_threads(threads)
    sparsegemm.set_isa(isa)


@pytest.fixture(scope="session")
def benchmark_script():
    """``benchmark_script(name)``: the module of ``benchmarks/<name>.py``, loaded once.

    It is registered in sys.modules while the session runs (dataclasses look
    their module up there) and removed at the end.
    """
    import importlib.util
    import pathlib
    import sys

    loaded: dict[str, Any] = {}

    def load(name: str) -> Any:
        if name not in loaded:
            path = pathlib.Path(__file__).resolve().parents[1] / "benchmarks" / f"{name}.py"
            spec = importlib.util.spec_from_file_location(name, path)
            module = importlib.util.module_from_spec(spec)
            sys.modules[name] = module
            spec.loader.exec_module(module)
            loaded[name] = module
        return loaded[name]

    yield load
    for name in loaded:
        sys.modules.pop(name, None)


class FakeClock:
    """Deterministic time for sparsegemm.timing: calls advance it by what they claim to take."""

    def __init__(self):
        self.now = 0.0

    def perf_counter(self):
        return self.now

    def sleep(self, seconds):
        self.now += seconds

    def call_taking(self, durations):
        durations = iter(durations)

        def call():
            self.now += next(durations)

        return call


@pytest.fixture
def clock(monkeypatch):
    """A FakeClock in place of the time module sparsegemm.timing reads."""
    from sparsegemm import timing

    fake = FakeClock()
    monkeypatch.setattr(timing, "time", fake)
    return fake
