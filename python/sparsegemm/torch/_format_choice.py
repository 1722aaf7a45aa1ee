"""Which sparse format a torch module stores, and how a request resolves.

``format='csr'``, ``'bitmap'`` and ``'bsr'`` (with a ``blocksize``, default (4, 1)) are
taken as asked, with no timing. ``'auto'`` asks :func:`sparsegemm.plan` to time dense,
CSR, the bitmap and the BSR block shapes for the weight at ``batch_hint`` rows of input on
this machine (with torch's thread count), and takes its decision, which may be
"dense" when no sparse format measured faster.
"""

from __future__ import annotations

from dataclasses import dataclass

import sparsegemm
import torch

from ..formats import _check_blocksize
from ..planner import BITMAP, CANDIDATES

FORMAT_CHOICES = ("auto", "csr", "bsr", "bitmap")
DEFAULT_BLOCKSIZE = (4, 1)


@dataclass(frozen=True)
class FormatChoice:
    """The resolved storage of one weight.

    format: 'dense', 'csr', 'bitmap' or 'bsr'; blocksize: (R, C) for 'bsr', else None;
    speedup: the planner's measured dense time over the chosen sparse format's
    time (for a 'dense' decision: over the fastest sparse contender's), None when
    nothing was measured; planned: the planner's own name for its decision
    ('dense', 'csr', 'bsr4x1', ...), None without the planner; cached: the
    planner's decision came from its cache (measured earlier, not for this call).
    """

    format: str
    blocksize: tuple[int, int] | None = None
    speedup: float | None = None
    planned: str | None = None
    cached: bool = False
    #: The fastest sparse contender the planner timed (its name), None when it timed none.
    fastest_sparse: str | None = None

    @property
    def label(self) -> str:
        """'dense', 'csr' or 'bsr<R>x<C>': the planner's names for formats."""
        if self.blocksize is None:
            return self.format
        return f"{self.format}{self.blocksize[0]}x{self.blocksize[1]}"

    def why_dense(self, margin: float) -> str:
        """For a 'dense' decision of the planner: the best sparse candidate and how it fell
        short."""
        if self.fastest_sparse is None or self.speedup is None:
            return "no sparse candidate could be timed"
        return (f"best sparse {self.fastest_sparse} measured {self.speedup:.2f}x, "
                f"below the planner's {margin:.2f}x margin")


def check_format(format: str, blocksize: tuple[int, int] | None) -> FormatChoice:
    """Validate a request; for 'auto' the returned format stays 'auto'
    (see :func:`choose_format`)."""
    if format not in FORMAT_CHOICES:
        raise ValueError(f"format must be one of {FORMAT_CHOICES}, got {format!r}")
    if format == "bsr":
        return FormatChoice("bsr", _check_blocksize(DEFAULT_BLOCKSIZE if blocksize is None
                                                    else blocksize))
    if blocksize is not None:
        raise ValueError(f"blocksize applies to format='bsr' only (format='auto' lets the planner "
                         f"choose it), got format={format!r} with blocksize={blocksize}")
    return FormatChoice(format)


def _fastest_sparse(times: dict[str, float]) -> str | None:
    sparse = {name: t for name, t in times.items() if name in CANDIDATES}
    return min(sparse, key=lambda name: (sparse[name], name)) if sparse else None


def _choice_for(name: str, speedup: float | None, planned: str, cached: bool,
                fastest_sparse: str | None) -> FormatChoice:
    if name == BITMAP:
        return FormatChoice("bitmap", None, speedup, planned, cached=cached,
                            fastest_sparse=fastest_sparse)
    blocksize = CANDIDATES[name]
    return FormatChoice("csr" if blocksize is None else "bsr", blocksize, speedup, planned,
                        cached=cached, fastest_sparse=fastest_sparse)


def choose_format(weight: torch.Tensor, format: str, blocksize: tuple[int, int] | None, *,
                  batch_hint: int, fallback_to_sparse: bool = False) -> FormatChoice:
    """The storage for a 2-d ``weight`` (zeros where pruned).

    For 'auto' this runs :func:`sparsegemm.plan`. A 'dense' decision is returned as is, unless
    ``fallback_to_sparse``: then the fastest sparse contender the planner timed
    is used (CSR when it timed none), since the caller asked for a sparse module.
    """
    request = check_format(format, blocksize)
    if request.format != "auto":
        return request
    compute = torch.float64 if weight.dtype == torch.float64 else torch.float32  # half: float32
    # Against torch's own product: what the module would run if left dense. A bfloat16
    # weight: bfloat16-valued sparse kernels against torch's bfloat16 product.
    plan = sparsegemm.plan(weight.detach().to("cpu", compute).numpy(), batch_hint,
                           num_threads=torch.get_num_threads(), dense=("torch",),
                           dtype="bfloat16" if weight.dtype == torch.bfloat16 else None)
    fastest = _fastest_sparse(plan.times)
    if plan.format != "dense":
        return _choice_for(plan.format, float(plan.speedup), plan.format, plan.cached, fastest)
    speedup = plan.dense_time / plan.times[fastest] if fastest is not None else None
    if fallback_to_sparse:
        return _choice_for(fastest or "csr", speedup, plan.format, plan.cached, fastest)
    return FormatChoice("dense", None, speedup, plan.format, cached=plan.cached,
                        fastest_sparse=fastest)
