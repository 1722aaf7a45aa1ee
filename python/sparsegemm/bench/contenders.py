"""The contenders: every way of computing ``y = x @ W.T`` that the benchmark times.

A contender is one :class:`Contender` entry in the registry. Its ``build`` gets a
:class:`Problem` (the pruned dense weight and the input) and returns a
zero-argument callable that computes ``y``; all format conversion happens in
``build``, outside the timing. A contender that cannot handle a problem raises
:class:`Unsupported` with the reason, which the report shows.

Adding a contender is one :func:`register` call. Torch is imported only when a
torch contender is built, so the module works without it.
"""

from __future__ import annotations

import contextlib
import importlib.util
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import scipy.sparse as sp

import sparsegemm

from .workloads import Pattern


class Unsupported(Exception):
    """This contender cannot run this problem (the message says why)."""


@dataclass
class Problem:
    """One point's operands. ``weight`` is the pruned weight, dense, zeros included."""

    weight: np.ndarray  # (out_features, in_features)
    x: np.ndarray  # (batch, in_features), C order
    pattern: Pattern
    threads: int
    #: Converted weights, kept while the next problems share this weight.
    weight_cache: dict = field(default_factory=dict, repr=False)

    def cached(self, key: str, make: Callable[[], Any]) -> Any:
        """``make()`` once per weight: conversions are reused across batches."""
        if key not in self.weight_cache:
            self.weight_cache[key] = make()
        return self.weight_cache[key]

    @property
    def batch(self) -> int:
        return self.x.shape[0]

    def torch_operands(self) -> tuple[Any, Any]:
        """``(x, weight)`` as torch tensors sharing memory with the numpy arrays."""
        import torch

        return torch.from_numpy(self.x), self.cached("torch", lambda: torch.from_numpy(self.weight))


@dataclass(frozen=True)
class Contender:
    """One way to compute ``x @ weight.T``.

    ``kind`` is ``"dense"`` for the references, ``"sparse"`` otherwise.
    ``threading`` is shown in the report (e.g. scipy is single-threaded).
    ``quick_max_batch`` and ``quick_unstructured_only`` trim slow contenders
    from the quick suite.
    """

    name: str
    description: str
    kind: str
    build: Callable[[Problem], Callable[[], Any]]
    needs_torch: bool = False
    threading: str = "multi-threaded"
    quick_max_batch: int | None = None
    quick_unstructured_only: bool = False
    is_sparsegemm: bool = False


REGISTRY: dict[str, Contender] = {}


def register(contender: Contender) -> Contender:
    """Add ``contender`` to the registry (replacing one with the same name)."""
    REGISTRY[contender.name] = contender
    return contender


def torch_available() -> bool:
    return importlib.util.find_spec("torch") is not None


def unavailable_reason(contender: Contender) -> str | None:
    """Why ``contender`` cannot run in this environment at all, or None."""
    if contender.needs_torch and not torch_available():
        return "PyTorch is not installed (pip install 'sparsegemm[torch]')"
    return None


def as_numpy(result: Any) -> np.ndarray:
    """A contender's output as a numpy array (torch tensors are converted)."""
    if isinstance(result, np.ndarray):
        return result
    if hasattr(result, "detach"):
        return result.detach().contiguous().numpy()
    return np.asarray(result)


@contextlib.contextmanager
def _quiet_torch_sparse() -> Iterator[None]:
    """Hide torch's 'sparse support is in beta' warnings while building its formats."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=UserWarning, message=".*[Ss]parse.*")
        yield


def _torch_compressed(problem: Problem, blocksize: tuple[int, int] | None) -> Any:
    """The weight as a torch CSR (or BSR) tensor with int32 indices.

    int32 indices because torch's MKL path is about 2x slower at batch 1 with its
    default int64 ones.
    """
    import torch

    _, weight = problem.torch_operands()
    with _quiet_torch_sparse():
        if blocksize is None:
            compressed = weight.to_sparse_csr()
            return torch.sparse_csr_tensor(
                compressed.crow_indices().to(torch.int32),
                compressed.col_indices().to(torch.int32),
                compressed.values(),
                compressed.shape,
                check_invariants=False,
            )
        compressed = weight.to_sparse_bsr(blocksize)
        return torch.sparse_bsr_tensor(
            compressed.crow_indices().to(torch.int32),
            compressed.col_indices().to(torch.int32),
            compressed.values(),
            compressed.shape,
            check_invariants=False,
        )


def _build_torch_dense(problem: Problem) -> Callable[[], Any]:
    import torch.nn.functional as F

    x, weight = problem.torch_operands()
    return lambda: F.linear(x, weight)


def _build_numpy_dense(problem: Problem) -> Callable[[], Any]:
    x, weight_t = problem.x, problem.weight.T  # a transposed view: BLAS reads it in place
    return lambda: x @ weight_t


def _build_scipy_csr(problem: Problem) -> Callable[[], Any]:
    weight = problem.cached("scipy_csr", lambda: sp.csr_array(problem.weight))
    x_t = problem.x.T
    return lambda: (weight @ x_t).T


def _build_torch_csr(problem: Problem) -> Callable[[], Any]:
    import torch

    x, _ = problem.torch_operands()
    weight = problem.cached("torch_csr", lambda: _torch_compressed(problem, None))
    return lambda: torch.mm(weight, x.t()).t()


def _build_torch_bsr(problem: Problem) -> Callable[[], Any]:
    import torch

    blocksize = problem.pattern.blocksize
    if blocksize is None:
        raise Unsupported("needs a block pattern")
    if blocksize[0] != blocksize[1]:
        raise Unsupported(
            f"torch.sparse BSR on CPU (MKL) takes square blocks only, not "
            f"{blocksize[0]}x{blocksize[1]}"
        )
    x, _ = problem.torch_operands()
    weight = problem.cached("torch_bsr", lambda: _torch_compressed(problem, blocksize))
    return lambda: torch.mm(weight, x.t()).t()


def _build_sparsegemm_csr(problem: Problem) -> Callable[[], Any]:
    weight = problem.cached("sgemm_csr", lambda: sparsegemm.CSRMatrix.from_dense(problem.weight))
    x, threads = problem.x, problem.threads
    return lambda: sparsegemm.linear(x, weight, num_threads=threads)


def _build_sparsegemm_bitmap(problem: Problem) -> Callable[[], Any]:
    weight = problem.cached("sgemm_bitmap",
                            lambda: sparsegemm.BitmapMatrix.from_dense(problem.weight))
    x, threads = problem.x, problem.threads
    return lambda: sparsegemm.linear(x, weight, num_threads=threads)


def _build_sparsegemm_bsr(problem: Problem) -> Callable[[], Any]:
    blocksize = problem.pattern.blocksize
    if blocksize is None:
        raise Unsupported("needs a block pattern (BSR of an unstructured weight stores its zeros)")
    weight = problem.cached(
        "sgemm_bsr", lambda: sparsegemm.BSRMatrix.from_dense(problem.weight, blocksize=blocksize)
    )
    x, threads = problem.x, problem.threads
    return lambda: sparsegemm.linear(x, weight, num_threads=threads)


def describe_plan(plan: Any) -> str:
    """Short description of the planner's choice, e.g. "bsr4x1 (2.9x)" or "dense (numpy)"."""
    if plan.operand is None:
        return f"dense ({_fastest_dense(plan).removeprefix('dense_')})"
    return f"{plan.format} ({plan.speedup:.2f}x)"


def _fastest_dense(plan: Any) -> str:
    dense = {name: t for name, t in plan.times.items() if name.startswith("dense_")}
    return min(dense, key=dense.get) if dense else "dense_numpy"


def _build_sparsegemm_auto(problem: Problem) -> Callable[[], Any]:
    """What a user of ``sparsegemm.plan`` runs: the chosen format, or the fastest dense."""
    plan = sparsegemm.plan(problem.weight, problem.batch, num_threads=problem.threads)
    if plan.operand is None:
        builder = _build_torch_dense if _fastest_dense(plan) == "dense_torch" else _build_numpy_dense
        call = builder(problem)
    else:
        weight, x, threads = plan.operand, problem.x, problem.threads

        def call() -> Any:
            return sparsegemm.linear(x, weight, num_threads=threads)

    call.choice = describe_plan(plan)  # type: ignore[attr-defined]  (shown in the report)
    return call


register(
    Contender(
        "torch_dense", "torch F.linear, dense (MKL)", "dense", _build_torch_dense, needs_torch=True
    )
)
register(Contender("numpy_dense", "numpy x @ W.T, dense (its BLAS)", "dense", _build_numpy_dense))
register(
    Contender(
        "scipy_csr",
        "scipy.sparse CSR",
        "sparse",
        _build_scipy_csr,
        threading="single-threaded",
        quick_max_batch=16,
        quick_unstructured_only=True,
    )
)
register(
    Contender(
        "torch_csr",
        "torch.sparse CSR, int32 indices (MKL)",
        "sparse",
        _build_torch_csr,
        needs_torch=True,
        quick_unstructured_only=True,
    )
)
register(
    Contender(
        "torch_bsr",
        "torch.sparse BSR, int32 indices (MKL; square blocks)",
        "sparse",
        _build_torch_bsr,
        needs_torch=True,
    )
)
register(
    Contender(
        "sgemm_csr",
        "sparsegemm.linear, CSRMatrix",
        "sparse",
        _build_sparsegemm_csr,
        is_sparsegemm=True,
    )
)


register(
    Contender(
        "sgemm_bitmap",
        "sparsegemm.linear, BitmapMatrix (1 bit per weight + packed values)",
        "sparse",
        _build_sparsegemm_bitmap,
        is_sparsegemm=True,
        quick_max_batch=16,
    )
)


def register_optional_sparsegemm_formats() -> None:
    """Register sparsegemm's BSR and planner contenders if this build has them.

    They arrive with the BSR work; until then the registry simply lacks them.
    """
    if hasattr(sparsegemm, "BSRMatrix"):
        register(
            Contender(
                "sgemm_bsr",
                "sparsegemm.linear, BSRMatrix (the pattern's block)",
                "sparse",
                _build_sparsegemm_bsr,
                is_sparsegemm=True,
            )
        )
    if hasattr(sparsegemm, "plan"):
        register(
            Contender(
                "sgemm_auto",
                "sparsegemm.plan's choice of format",
                "sparse",
                _build_sparsegemm_auto,
                is_sparsegemm=True,
            )
        )


register_optional_sparsegemm_formats()


def has_block_formats() -> bool:
    """True once sparsegemm has BSR kernels (block patterns then join the default suites)."""
    return "sgemm_bsr" in REGISTRY
