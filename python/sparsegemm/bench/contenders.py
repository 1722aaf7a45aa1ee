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
import copy
import importlib.util
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import scipy.sparse as sp

import sparsegemm

from .. import formats
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
    #: Converted weights, kept while the next problems share this weight. Each
    #: copy of a cold run has its own, so its conversions live at other addresses.
    weight_cache: dict = field(default_factory=dict, repr=False)
    #: The planner's decisions by batch, shared by every copy of a cold run
    #: (the copies must run the format that was planned once).
    plans: dict = field(default_factory=dict, repr=False)
    #: For a copy of a cold run: the first copy's conversions, duplicated here
    #: instead of converted again (see :func:`duplicate`).
    template_cache: dict | None = field(default=None, repr=False)

    def cached(self, key: str, make: Callable[[], Any]) -> Any:
        """``make()`` once per weight: conversions are reused across batches."""
        if key not in self.weight_cache:
            template = self.template_cache
            if template is not None and key in template:
                self.weight_cache[key] = duplicate(template[key])
            else:
                self.weight_cache[key] = make()
        return self.weight_cache[key]

    def cold_copy(self, copy_cache: dict) -> Problem:
        """The same problem with its weight's conversions at other addresses.

        Build this problem's contender first: the copy duplicates its conversions.
        """
        return Problem(
            self.weight,
            self.x,
            self.pattern,
            self.threads,
            copy_cache,
            self.plans,
            self.weight_cache,
        )

    @property
    def batch(self) -> int:
        return self.x.shape[0]

    def torch_operands(self) -> tuple[Any, Any]:
        """``(x, weight)`` as torch tensors sharing memory with the numpy arrays."""
        import torch

        return torch.from_numpy(self.x), self.cached("torch", lambda: torch.from_numpy(self.weight))


def duplicate(value: Any) -> Any:
    """A copy of a converted weight in new memory, so a cold run can rotate through copies."""
    if isinstance(value, np.ndarray) or sp.issparse(value):
        return value.copy()
    if isinstance(value, (formats.SparseFormat, sparsegemm.Int8BitmapMatrix)):
        return value.copy()  # copies values and indices (and scales)
    if hasattr(value, "clone"):  # a torch tensor, dense or compressed
        return value.clone()
    if hasattr(value, "state_dict"):  # a torch module (quantize_dynamic's packed weights)
        return copy.deepcopy(value)
    raise TypeError(f"cannot duplicate a {type(value).__name__} for a cold run")


@dataclass(frozen=True)
class RanAs:
    """What a built call really runs: sparsegemm's ``format`` ("csr", "bsr4x4"), or
    a dense library when the planner kept the weight dense (``kept_dense``)."""

    format: str = ""
    kept_dense: bool = False
    note: str = ""  # shown in the report, e.g. the planner's own measurement


def ran_as(call: Callable[[], Any]) -> RanAs:
    """The :class:`RanAs` label of a built call (empty for other libraries' contenders)."""
    return getattr(call, "ran_as", RanAs())


def _label(call: Callable[[], Any], ran: RanAs) -> Callable[[], Any]:
    call.ran_as = ran  # type: ignore[attr-defined]
    return call


@dataclass(frozen=True)
class Contender:
    """One way to compute ``x @ weight.T``.

    ``kind`` is ``"dense"`` for the references, ``"alternative"`` for the cheaper
    dense options a user could pick instead of pruning (int8, bf16: approximate
    results, checked to ``approximate_tolerance``), ``"sparse"`` otherwise.
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
    #: Relative Frobenius error allowed for an approximate (quantized) result;
    #: None means exact up to float rounding (harness.tolerance).
    approximate_tolerance: float | None = None
    #: Bytes per weight entry a dense-layout contender streams (None: the problem's dtype).
    weight_itemsize: int | None = None
    #: A package beyond torch that the contender needs (skipped where it is not installed).
    needs_package: str | None = None


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
    package = contender.needs_package
    if package is not None and importlib.util.find_spec(package) is None:
        return f"{package} is not installed (pip install {package})"
    return None


def as_numpy(result: Any) -> np.ndarray:
    """A contender's output as a numpy array (torch tensors are converted)."""
    if isinstance(result, np.ndarray):
        return result
    if hasattr(result, "detach"):
        result = result.detach()
        if not result.dtype.is_floating_point or result.dtype.itemsize < 4:
            result = result.float()  # numpy has no bfloat16
        return result.contiguous().numpy()
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


def _float32_linear_of(problem: Problem) -> Any:
    """The pruned weight in a bias-free float32 ``nn.Linear`` (what the quantizers take)."""
    import torch

    if problem.weight.dtype != np.float32:
        raise Unsupported("int8 dense quantizers take float32 models")
    layer = torch.nn.Linear(problem.weight.shape[1], problem.weight.shape[0], bias=False)
    with torch.no_grad():
        layer.weight.copy_(torch.from_numpy(problem.weight))
    return layer


def _build_torch_int8_dynamic(problem: Problem) -> Callable[[], Any]:
    """torch's ``quantize_dynamic`` (int8 weights, activations quantized per call) on
    the pruned weight: the no-pruning-needed option (FBGEMM/x86 engine)."""
    import torch

    x, _ = problem.torch_operands()

    def quantize() -> Any:
        model = torch.nn.Sequential(_float32_linear_of(problem))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch.ao.quantization is marked deprecated
            return torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear},
                                                          dtype=torch.qint8)

    model = problem.cached("torch_int8_dynamic", quantize)
    return lambda: model(x)


def _build_torchao_int8_dynamic(problem: Problem) -> Callable[[], Any]:
    """torchao's ``quantize_`` with ``Int8DynamicActivationInt8WeightConfig`` (int8
    weights per output row, activations quantized per row on each call): what torch's
    deprecation notice for ``quantize_dynamic`` points to. Run eagerly: under
    ``torch.compile`` it measured no faster (torchao 0.18, 11008x4096 at batch 1 and 16,
    2 threads, Xeon with AMX: 5.8 against 5.7 ms, 5.5-8.7 against 7.0 ms)."""
    import torch

    x, _ = problem.torch_operands()

    def quantize() -> Any:
        try:
            from torchao.quantization import Int8DynamicActivationInt8WeightConfig, quantize_
        except Exception as error:  # noqa: BLE001 - a torchao built for another torch
            raise Unsupported(f"torchao cannot be used here: {error}") from error
        model = torch.nn.Sequential(_float32_linear_of(problem))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            quantize_(model, Int8DynamicActivationInt8WeightConfig())
        return model

    model = problem.cached("torchao_int8_dynamic", quantize)
    return lambda: model(x)


def _build_torch_bf16_dense(problem: Problem) -> Callable[[], Any]:
    """``F.linear`` with bfloat16 weight and input (a model run in bf16)."""
    import torch.nn.functional as F

    import torch

    x = torch.from_numpy(problem.x).to(torch.bfloat16)  # a bf16 model's activations are bf16
    weight = problem.cached(
        "torch_bf16", lambda: torch.from_numpy(problem.weight).to(torch.bfloat16)
    )
    return lambda: F.linear(x, weight)


def _build_numpy_dense(problem: Problem) -> Callable[[], Any]:
    # A transposed view: BLAS reads it in place. Cached, so cold copies duplicate it.
    x, weight_t = problem.x, problem.cached("dense", lambda: problem.weight).T
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


def format_name(blocksize: tuple[int, int] | None) -> str:
    """sparsegemm's name of a format: "csr", or "bsr<R>x<C>" (the planner's names)."""
    return "csr" if blocksize is None else f"bsr{blocksize[0]}x{blocksize[1]}"


def blocksize_of(format: str) -> tuple[int, int] | None:
    """The inverse of :func:`format_name` (None for the unblocked formats: CSR and the
    bitmaps)."""
    if format in ("csr", "bitmap") or format in QUANTIZED_FORMATS:
        return None
    rows, cols = format.removeprefix("bsr").split("x")
    return int(rows), int(cols)


def sparsegemm_call(problem: Problem, format: str) -> Callable[[], Any]:
    """``sparsegemm.linear`` with the weight in ``format``, converted once per weight."""
    blocksize = blocksize_of(format)

    def convert() -> Any:
        if format == "bitmap":
            return sparsegemm.BitmapMatrix.from_dense(problem.weight)
        if format in QUANTIZED_FORMATS:
            return QUANTIZED_FORMATS[format](problem.weight)
        if blocksize is None:
            return sparsegemm.CSRMatrix.from_dense(problem.weight)
        return sparsegemm.BSRMatrix.from_dense(problem.weight, blocksize=blocksize)

    weight = problem.cached(f"sgemm:{format}", convert)
    x, threads = problem.x, problem.threads
    return lambda: sparsegemm.linear(x, weight, num_threads=threads)


def _build_sparsegemm_csr(problem: Problem) -> Callable[[], Any]:
    return _label(sparsegemm_call(problem, "csr"), RanAs("csr"))


def _build_sparsegemm_bitmap(problem: Problem) -> Callable[[], Any]:
    return _label(sparsegemm_call(problem, "bitmap"), RanAs("bitmap"))


#: sparsegemm's formats with int8 or bfloat16 values: name -> conversion of a float weight.
QUANTIZED_FORMATS: dict[str, Callable[[np.ndarray], Any]] = {
    "int8-bitmap": lambda weight: sparsegemm.Int8BitmapMatrix.from_dense(weight),
    "bf16-bitmap": lambda weight: sparsegemm.BitmapMatrix.from_dense(weight, dtype="bfloat16"),
}


def _build_sparsegemm_quantized(format: str) -> Callable[[Problem], Callable[[], Any]]:
    return lambda problem: _label(sparsegemm_call(problem, format), RanAs(format))


def _build_sparsegemm_bsr(problem: Problem) -> Callable[[], Any]:
    blocksize = problem.pattern.blocksize
    if blocksize is None:
        raise Unsupported("needs a block pattern (BSR of an unstructured weight stores its zeros)")
    format = format_name(blocksize)
    return _label(sparsegemm_call(problem, format), RanAs(format))


def describe_plan(plan: Any) -> str:
    """Short description of the planner's choice, e.g. "bsr4x1 (2.9x)" or "dense (numpy)".

    The figure in brackets is the planner's own measurement, made before the
    benchmark timed anything; "cached" says it was not measured for this weight.
    """
    cached = ", cached" if plan.cached else ""
    if plan.operand is None:
        return f"dense ({_fastest_dense(plan).removeprefix('dense_')}{cached})"
    return f"{plan.format} ({plan.speedup:.2f}x{cached})"


def _fastest_dense(plan: Any) -> str:
    dense = {name: t for name, t in plan.times.items() if name.startswith("dense_")}
    return min(dense, key=lambda name: dense[name]) if dense else "dense_numpy"


def _build_sparsegemm_auto(problem: Problem) -> Callable[[], Any]:
    """What a user of ``sparsegemm.plan`` runs: the chosen format, or the fastest dense.

    The planner decides from its own measurement, once per batch (every copy of a
    cold run runs the same decision), and never from a cache on disk.
    """
    if problem.batch not in problem.plans:
        problem.plans[problem.batch] = sparsegemm.plan(
            problem.weight, problem.batch, num_threads=problem.threads, cache=False
        )
    plan = problem.plans[problem.batch]
    if plan.operand is None:
        dense = _fastest_dense(plan)
        builder = _build_torch_dense if dense == "dense_torch" else _build_numpy_dense
        kept = RanAs(f"dense ({dense.removeprefix('dense_')})", True, describe_plan(plan))
        return _label(builder(problem), kept)
    return _label(
        sparsegemm_call(problem, plan.format), RanAs(plan.format, False, describe_plan(plan))
    )


register(
    Contender(
        "torch_dense", "torch F.linear, dense (MKL)", "dense", _build_torch_dense, needs_torch=True
    )
)
register(Contender("numpy_dense", "numpy x @ W.T, dense (its BLAS)", "dense", _build_numpy_dense))
register(
    Contender(
        "torch_int8_dyn",
        "torch quantize_dynamic, int8 dense weight (what a user could pick instead of pruning)",
        "alternative",
        _build_torch_int8_dynamic,
        needs_torch=True,
        approximate_tolerance=0.05,
        weight_itemsize=1,
    )
)
register(
    Contender(
        "torchao_int8_dyn",
        "torchao quantize_ Int8DynamicActivationInt8WeightConfig, int8 dense weight "
        "(quantize_dynamic's successor)",
        "alternative",
        _build_torchao_int8_dynamic,
        needs_torch=True,
        needs_package="torchao",
        approximate_tolerance=0.05,
        weight_itemsize=1,
    )
)
register(
    Contender(
        "torch_bf16",
        "torch F.linear in bfloat16, dense (x and W in bf16)",
        "alternative",
        _build_torch_bf16_dense,
        needs_torch=True,
        approximate_tolerance=0.02,
        weight_itemsize=2,
    )
)
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


register(
    Contender(
        "sgemm_int8",
        "sparsegemm.linear, Int8BitmapMatrix (int8 values, one scale per row, x quantized "
        "per row)",
        "sparse",
        _build_sparsegemm_quantized("int8-bitmap"),
        is_sparsegemm=True,
        quick_max_batch=16,
        approximate_tolerance=0.05,
        weight_itemsize=1,
    )
)
register(
    Contender(
        "sgemm_bf16",
        "sparsegemm.linear, BitmapMatrix with bfloat16 values (float32 x and y)",
        "sparse",
        _build_sparsegemm_quantized("bf16-bitmap"),
        is_sparsegemm=True,
        quick_max_batch=16,
        approximate_tolerance=0.02,
        weight_itemsize=2,
    )
)
register(
    Contender(
        "sgemm_bsr",
        "sparsegemm.linear, BSRMatrix (the pattern's block)",
        "sparse",
        _build_sparsegemm_bsr,
        is_sparsegemm=True,
    )
)
register(
    Contender(
        "sgemm_auto",
        "sparsegemm.plan's choice of format",
        "sparse",
        _build_sparsegemm_auto,
        is_sparsegemm=True,
    )
)

