"""Calibration pruning of pretrained models: Wanda, SparseGPT and OWL, block by block.

No labels and no retraining: the layers' *inputs* on a few unlabeled
calibration batches decide the mask.

* **Magnitude** keeps the largest ``|W|`` (the baseline).
* **Wanda** (Sun et al. 2023) keeps the largest ``|W_ij| * ||X_j||``, where
  ``||X_j||`` is the L2 norm of input feature ``j`` over every calibration
  token.  A weight on a loud input feature matters more.  No weight update.
* **SparseGPT** (Frantar & Alistarh 2023) walks the input columns in chunks,
  picks each chunk's mask by the optimal-brain-surgeon saliency
  ``W_ij**2 / [H^-1]_jj**2`` with ``H = X^T X + damp * mean(diag) * I``, and
  updates the still-unpruned weights to the right of each pruned column so
  the layer's output on the calibration inputs is reconstructed.
* **OWL** (Yin et al. 2024) is an *allocation*, not a criterion: blocks whose
  Wanda scores have more outliers (entries above ``threshold`` times their
  layer's mean) get a lower sparsity, spread over ``amount +- spread`` with
  the parameter-weighted mean kept at ``amount``.

Every method can produce these patterns (see :func:`parse_pattern`): unstructured
(ranked within each output row, as Wanda does), N:M along the input
dimension, or ``r x c`` blocks (ranked within each row of blocks).

:func:`prune_pretrained` prunes **sequentially**: the model runs once up to
its first block (a transformer layer), capturing that block's inputs; then
each block is calibrated on the outputs of the already-pruned blocks before
it, pruned, and run again to produce the next block's inputs.  Only one
block's activations are held at a time.  Masks are left as
``torch.nn.utils.prune`` leaves them (``weight_orig`` + ``weight_mask``), so
``sparsegemm.torch.sparsify`` converts the result with no extra step and
:func:`~sparsegemm.prune.remove` finalises it.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Callable, Optional, Union

import torch
from torch import nn

from .api import apply_mask, compute_num_to_prune
from .criteria import NM, Criterion, block_reduce, existing_mask, expand_units, keep_n_of_m

__all__ = [
    "SparsityPattern",
    "parse_pattern",
    "select_mask",
    "InputStatistics",
    "record_input_statistics",
    "wanda_importance",
    "sparsegpt_prune",
    "owl_sparsities",
    "find_blocks",
    "Wanda",
    "prune_pretrained",
    "call_model",
    "METHODS",
]

METHODS = ("magnitude", "wanda", "sparsegpt")
ALLOCATIONS = ("uniform", "owl")


# ---------------------------------------------------------------- patterns
@dataclass(frozen=True)
class SparsityPattern:
    """Which entries may be pruned together.

    ``kind`` is ``"unstructured"`` (single weights, ranked within each output
    row), ``"n:m"`` (keep ``n`` of every ``m`` consecutive inputs of a row; the
    sparsity is ``1 - n/m`` whatever ``amount`` says) or ``"block"`` (``r x c``
    blocks of ``W[out, in]``, ranked within each row of blocks).
    """

    kind: str
    n: int = 0
    m: int = 0
    block: tuple[int, int] = (1, 1)

    @property
    def fixed_sparsity(self) -> Optional[float]:
        return 1.0 - self.n / self.m if self.kind == "n:m" else None

    def __str__(self) -> str:
        if self.kind == "n:m":
            return f"{self.n}:{self.m}"
        if self.kind == "block":
            return f"{self.block[0]}x{self.block[1]}"
        return "unstructured"


PatternLike = Union[None, str, tuple[int, int], NM, SparsityPattern]


def parse_pattern(pattern: PatternLike) -> SparsityPattern:
    """``None``/``"unstructured"``; ``"2:4"`` or ``NM(2, 4)``; ``(4, 1)`` or ``"4x1"`` blocks."""
    if isinstance(pattern, SparsityPattern):
        return pattern
    if pattern is None or pattern == "unstructured":
        return SparsityPattern("unstructured")
    if isinstance(pattern, NM):
        pattern = f"{pattern.n}:{pattern.m}"
    if isinstance(pattern, str):
        nm = re.fullmatch(r"\s*(\d+)\s*:\s*(\d+)\s*", pattern)
        block = re.fullmatch(r"\s*(\d+)\s*x\s*(\d+)\s*", pattern)
        if nm:
            n, m = int(nm.group(1)), int(nm.group(2))
            if not 0 < n <= m:
                raise ValueError(f"N:M pattern needs 0 < N <= M, got {pattern!r}")
            return SparsityPattern("n:m", n=n, m=m)
        if block:
            pattern = (int(block.group(1)), int(block.group(2)))
        else:
            raise ValueError(
                f"unknown pattern {pattern!r}: use None/'unstructured', 'N:M' (e.g. '2:4') "
                "or a block 'RxC' / (R, C)"
            )
    if (
        isinstance(pattern, (tuple, list))
        and len(pattern) == 2
        and all(isinstance(v, int) and not isinstance(v, bool) for v in pattern)
    ):
        r, c = pattern
        if r < 1 or c < 1:
            raise ValueError(f"block shape must be positive, got {tuple(pattern)}")
        if (r, c) == (1, 1):
            return SparsityPattern("unstructured")
        return SparsityPattern("block", block=(r, c))
    raise TypeError(f"cannot read a sparsity pattern from {pattern!r}")


def select_mask(importance: torch.Tensor, pattern: SparsityPattern, amount: float) -> torch.Tensor:
    """Boolean keep-mask of a 2-D, non-negative ``importance`` matrix ``[out, in]``.

    Unstructured: each row loses its ``round(amount * in)`` least important
    entries.  N:M: each group of ``m`` keeps its ``n`` most important.  Blocks:
    block importance is the sum of its entries' (edge blocks scaled to full
    size), and each row of blocks loses ``round(amount * blocks_per_row)``.
    """
    importance = importance.double()
    if pattern.kind == "n:m":
        return keep_n_of_m(importance, pattern.n, pattern.m)
    if pattern.kind == "block":
        grid = block_reduce(importance, pattern.block, p=1).double()
        keep = _keep_highest_per_row(grid, amount)
        return expand_units(keep, pattern.block, importance.shape)
    return _keep_highest_per_row(importance, amount)


def _keep_highest_per_row(scores: torch.Tensor, amount: float) -> torch.Tensor:
    prune_per_row = compute_num_to_prune(amount, scores.shape[1])
    keep = torch.ones_like(scores, dtype=torch.bool)
    if prune_per_row > 0:
        lowest = torch.topk(scores, prune_per_row, dim=1, largest=False).indices
        keep.scatter_(1, lowest, False)
    return keep


# ---------------------------------------------------------------- statistics
class InputStatistics:
    """Running statistics of one Linear's input rows ``x`` (the last dim is ``in``).

    ``squared_norms[j] = sum x_j**2`` (Wanda's ``||X_j||**2``), ``sums[j] =
    sum x_j`` (for the mean input); with
    ``hessian=True`` also ``gram = sum x x^T`` (SparseGPT's ``H`` before
    damping).  ``rows`` counts the rows seen.  Kept in float64.
    """

    def __init__(self, in_features: int, *, hessian: bool = False):
        self.squared_norms = torch.zeros(in_features, dtype=torch.float64)
        self.sums = torch.zeros(in_features, dtype=torch.float64)
        self.gram = torch.zeros(in_features, in_features, dtype=torch.float64) if hessian else None
        #: sum x_dense^T x (the dense model's input rows against these), when paired
        self.cross: Optional[torch.Tensor] = None
        self.rows = 0

    def add(self, x: torch.Tensor) -> None:
        x = x.detach().reshape(-1, x.shape[-1]).double()
        self.squared_norms += (x * x).sum(dim=0)
        self.sums += x.sum(dim=0)
        if self.gram is not None:
            self.gram += x.T @ x
        self.rows += x.shape[0]

    def add_cross(self, dense_x: torch.Tensor, x: torch.Tensor) -> None:
        """Accumulate ``dense_x^T x`` for rows paired with those of :meth:`add`."""
        dense_x = dense_x.detach().reshape(-1, dense_x.shape[-1]).double()
        x = x.detach().reshape(-1, x.shape[-1]).double()
        if self.cross is None:
            self.cross = torch.zeros(dense_x.shape[1], x.shape[1], dtype=torch.float64)
        self.cross += dense_x.T @ x

    @property
    def mean(self) -> torch.Tensor:
        """The mean input row."""
        if self.rows == 0:
            raise RuntimeError("no calibration rows were recorded")
        return self.sums / self.rows

    @property
    def norms(self) -> torch.Tensor:
        return self.squared_norms.sqrt()

    @property
    def hessian(self) -> torch.Tensor:
        """``X^T X / rows`` (undamped)."""
        if self.gram is None:
            raise RuntimeError("these statistics were recorded without hessian=True")
        if self.rows == 0:
            raise RuntimeError("no calibration rows were recorded")
        return self.gram / self.rows


def record_input_statistics(
    layers: Mapping[str, nn.Module], *, hessian: bool = False
) -> tuple[dict[str, InputStatistics], list[Any]]:
    """Attach forward hooks accumulating :class:`InputStatistics` for each Linear.

    Returns ``(statistics, handles)``; call ``handle.remove()`` on each handle when done.
    """
    stats: dict[str, InputStatistics] = {}
    handles = []
    for name, layer in layers.items():
        if not isinstance(layer, nn.Linear):
            raise TypeError(
                f"calibration pruning handles nn.Linear layers; {name!r} is {type(layer).__name__}"
            )
        stats[name] = InputStatistics(layer.in_features, hessian=hessian)

        def hook(module, inputs, output, record=stats[name]):
            record.add(inputs[0])

        handles.append(layer.register_forward_hook(hook))
    return stats, handles


def _current_weight(layer: nn.Module) -> torch.Tensor:
    """The weight the layer computes with (``orig * mask`` while a mask is attached)."""
    orig = getattr(layer, "weight_orig", None)
    mask = existing_mask(layer)
    return (orig * mask).detach() if orig is not None else layer.weight.detach()


def wanda_importance(weight: torch.Tensor, input_norms: torch.Tensor) -> torch.Tensor:
    """``|W_ij| * ||X_j||``: Wanda's score of every weight (``weight`` is ``[out, in]``)."""
    if weight.dim() != 2 or input_norms.shape != (weight.shape[1],):
        raise ValueError(
            f"need a [out, in] weight and [in] input norms, got {tuple(weight.shape)} and "
            f"{tuple(input_norms.shape)}"
        )
    return weight.double().abs() * input_norms.double().reshape(1, -1)


# ---------------------------------------------------------------- SparseGPT
def _chunk_width(pattern: SparsityPattern, chunk: int) -> int:
    """Columns per SparseGPT chunk: a multiple of the group (M) or block width (c)."""
    align = pattern.m if pattern.kind == "n:m" else pattern.block[1]
    return max(align, (chunk // align) * align)


def _damped(hessian: torch.Tensor, damp: float, damping: str) -> torch.Tensor:
    """``hessian`` in float64 with its diagonal dampened (features that never fire get 1)."""
    h = hessian.detach().double().clone()
    dead = torch.diagonal(h) == 0
    h[dead, dead] = 1.0
    if damping == "diagonal":
        h.diagonal().mul_(1.0 + damp)
    elif damping == "mean":
        h.diagonal().add_(damp * torch.diagonal(h).mean())
    else:
        raise ValueError(f"damping must be 'diagonal' or 'mean', got {damping!r}")
    return h


def sparsegpt_prune(
    weight: torch.Tensor,
    hessian: torch.Tensor,
    pattern: SparsityPattern,
    amount: float,
    *,
    damp: float = 0.1,
    chunk: int = 128,
    keep: Optional[torch.Tensor] = None,
    damping: str = "diagonal",
) -> tuple[torch.Tensor, torch.Tensor]:
    """SparseGPT on one ``[out, in]`` weight with input Hessian ``hessian`` (``X^T X / rows``).

    Returns ``(new_weight, keep_mask)``: the updated weight, already zero where
    ``keep_mask`` is False, in ``weight``'s dtype.  ``keep`` (optional) is an
    existing mask whose pruned entries stay pruned.  Input features that never
    fire (zero diagonal) get weight zero and a unit diagonal.

    Damping makes ``H`` safely invertible.  ``damping="diagonal"`` (default)
    adds ``damp * H_jj`` to each diagonal entry: scale-invariant, so a quiet
    input feature is not swamped next to loud ones (transformer activations
    span orders of magnitude).  ``damping="mean"`` adds ``damp * mean(diag H)``
    to all, as in the SparseGPT paper (there with ``damp=0.01``); it overrates
    quiet features.  The default ``damp=0.1`` also regularises: on
    all-MiniLM-L6-v2 at 50 % it raised the held-out cosine from 0.865
    (``damp=0.01``) to 0.879, and at 2:4 (0.3) from 0.765 to 0.794.
    """
    rows, cols = weight.shape
    if hessian.shape != (cols, cols):
        raise ValueError(f"hessian must be ({cols}, {cols}), got {tuple(hessian.shape)}")
    if damp < 0:
        raise ValueError(f"damp must be >= 0, got {damp}")
    w = weight.detach().double().clone()
    dead = torch.diagonal(hessian) == 0
    w[:, dead] = 0.0
    h = _damped(hessian, damp, damping)
    # Upper Cholesky factor of H^-1: row i holds the OBS update for column i
    # once columns < i are fixed.
    inverse = torch.cholesky_inverse(torch.linalg.cholesky(h))
    hinv = torch.linalg.cholesky(inverse, upper=True)
    if keep is None:
        prior = torch.ones_like(w, dtype=torch.bool)
    else:
        prior = keep.reshape(rows, cols).bool()
    mask = torch.ones_like(w, dtype=torch.bool)
    width = _chunk_width(pattern, chunk)
    for start in range(0, cols, width):
        stop = min(start + width, cols)
        w_chunk = w[:, start:stop].clone()
        hinv_chunk = hinv[start:stop, start:stop]
        diag = torch.diagonal(hinv_chunk)
        errors = torch.zeros_like(w_chunk)
        if pattern.kind != "n:m":
            saliency = (w_chunk**2 / diag.reshape(1, -1) ** 2) * prior[:, start:stop]
            mask[:, start:stop] = select_mask(saliency, pattern, amount)
        for i in range(stop - start):
            if pattern.kind == "n:m" and i % pattern.m == 0:
                group = slice(i, min(i + pattern.m, stop - start))
                saliency = w_chunk[:, group] ** 2 / diag[group].reshape(1, -1) ** 2
                saliency = saliency * prior[:, start:stop][:, group]
                mask[:, start + group.start : start + group.stop] = keep_n_of_m(
                    saliency, pattern.n, pattern.m
                )
            column = w_chunk[:, i]
            quantised = column * mask[:, start + i] * prior[:, start + i]
            error = (column - quantised) / diag[i]
            w_chunk[:, i:] -= error.reshape(-1, 1) * hinv_chunk[i, i:].reshape(1, -1)
            errors[:, i] = error
        w[:, start:stop] = w_chunk
        w[:, stop:] -= errors @ hinv[start:stop, stop:]
    mask &= prior
    return (w * mask).to(weight.dtype), mask


# ---------------------------------------------------------------- OWL
def owl_sparsities(
    outlier_ratios: Sequence[float],
    amount: float,
    *,
    spread: float = 0.08,
    sizes: Optional[Sequence[int]] = None,
) -> list[float]:
    """OWL's per-block sparsities from each block's outlier ratio.

    Ratios are mapped linearly onto ``[amount - spread, amount + spread]``
    (most outliers -> lowest sparsity), then shifted so that the mean weighted
    by ``sizes`` (parameter counts; equal by default) is ``amount``, and
    clipped to ``[0, 1]``.  Equal ratios give ``amount`` everywhere.
    """
    ratios = torch.tensor(list(outlier_ratios), dtype=torch.float64)
    if ratios.numel() == 0:
        return []
    if not 0 <= spread <= 1:
        raise ValueError(f"spread must be in [0, 1], got {spread}")
    weights = torch.ones_like(ratios) if sizes is None else torch.tensor(sizes, dtype=torch.float64)
    span = ratios.max() - ratios.min()
    if span == 0:
        sparsities = torch.full_like(ratios, float(amount))
    else:
        sparsities = amount + spread - 2 * spread * (ratios - ratios.min()) / span
        sparsities += amount - (sparsities * weights).sum() / weights.sum()
    return sparsities.clamp(0.0, 1.0).tolist()


def _outlier_ratio(importances: Sequence[torch.Tensor], threshold: float) -> float:
    """Fraction of entries above ``threshold`` times their own layer's mean importance."""
    outliers = sum(int((s > threshold * s.mean()).sum()) for s in importances)
    return outliers / max(1, sum(s.numel() for s in importances))


# ---------------------------------------------------------------- blocks and inputs
def find_blocks(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The blocks to calibrate one after another, in execution order.

    The repeated layers of a transformer: the ``nn.ModuleList`` whose children
    all share one type and hold the most parameters (``encoder.layer`` of a
    BERT).  Without one, the children of an ``nn.Sequential`` model.
    """
    best: Optional[tuple[int, str, nn.ModuleList]] = None
    for name, module in model.named_modules():
        if isinstance(module, nn.ModuleList) and len(module) >= 2:
            if len({type(child) for child in module}) == 1:
                size = sum(p.numel() for p in module.parameters())
                if best is None or size > best[0]:
                    best = (size, name, module)
    if best is not None:
        _, prefix, layers = best
        return [(f"{prefix}.{i}", child) for i, child in enumerate(layers)]
    if isinstance(model, nn.Sequential):
        return list(model.named_children())
    raise ValueError(
        f"cannot find the repeated blocks of {type(model).__name__}: no nn.ModuleList of "
        "identical layers and not an nn.Sequential; pass blocks=[names of modules run in order]"
    )


def call_model(model: nn.Module, batch: Any) -> Any:
    """Run ``model`` on a calibration batch: ``model(**batch)`` for a mapping,
    ``model(*batch)`` for a tuple or list, else ``model(batch)``."""
    if isinstance(batch, Mapping):
        return model(**batch)
    if isinstance(batch, (tuple, list)):
        return model(*batch)
    return model(batch)


class _InputsCaptured(Exception):
    """Stops the forward pass once the first block's inputs are recorded."""


def _capture_block_inputs(
    model: nn.Module, first_block: nn.Module, calibration: Iterable, max_batches: Optional[int]
) -> list[tuple[tuple, dict]]:
    captured: list[tuple[tuple, dict]] = []

    def hook(module, args, kwargs):
        captured.append((_detach(args), _detach(kwargs)))
        raise _InputsCaptured

    handle = first_block.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        for index, batch in enumerate(calibration):
            if max_batches is not None and index >= max_batches:
                break
            try:
                call_model(model, batch)
            except _InputsCaptured:
                pass
            else:
                raise RuntimeError("the model never ran its first block on a calibration batch")
    finally:
        handle.remove()
    if not captured:
        raise ValueError("calibration data is empty")
    return captured


def _detach(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.detach()
    if isinstance(value, tuple):
        return tuple(_detach(v) for v in value)
    if isinstance(value, list):
        return [_detach(v) for v in value]
    if isinstance(value, dict):
        return {k: _detach(v) for k, v in value.items()}
    return value


def _hidden_state(output: Any) -> torch.Tensor:
    """The hidden state a block passes on: the output, or its first element."""
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], torch.Tensor):
        return output[0]
    raise TypeError(f"cannot find the hidden state in a block output of type {type(output)}")


def _with_hidden_state(args: tuple, kwargs: dict, hidden: torch.Tensor) -> tuple[tuple, dict]:
    """The next block's call: the same arguments with the hidden state replaced."""
    if args:
        return (hidden.detach(),) + tuple(args[1:]), kwargs
    if "hidden_states" in kwargs:
        return args, {**kwargs, "hidden_states": hidden.detach()}
    raise TypeError("the block received no positional argument and no hidden_states keyword")


def _run_block(block: nn.Module, inputs: list[tuple[tuple, dict]]) -> list[tuple[tuple, dict]]:
    return [_with_hidden_state(a, k, _hidden_state(block(*a, **k))) for a, k in inputs]


# ---------------------------------------------------------------- entry point
def prune_pretrained(
    model: nn.Module,
    calibration: Iterable,
    amount: float = 0.5,
    method: str = "wanda",
    pattern: PatternLike = None,
    allocation: str = "uniform",
    *,
    blocks: Optional[Sequence[str]] = None,
    filter_fn: Optional[Callable[[nn.Module, str], bool]] = None,
    damp: float = 0.1,
    damping: str = "diagonal",
    bias_correction: bool = False,
    owl_threshold: float = 5.0,
    owl_spread: float = 0.08,
    max_batches: Optional[int] = None,
    sequential: str = "layer",
    reconstruct: str = "dense",
) -> dict[str, float]:
    """Prune every Linear inside ``model``'s blocks from calibration data, block by block.

    Args:
        calibration: unlabeled model inputs, an iterable of batches: tensors
            (``model(x)``), tuples (``model(*x)``) or dicts of keyword
            arguments (``model(**x)``, as Hugging Face models take).  It is
            iterated once (twice with ``allocation="owl"``).
        amount: target sparsity in [0, 1] (ignored by N:M patterns, whose
            sparsity is ``1 - N/M``).
        method: ``"magnitude"``, ``"wanda"`` or ``"sparsegpt"``.
        pattern: ``None`` (unstructured), ``"2:4"``/``"4:8"`` (N:M), or an
            ``(r, c)`` block such as ``(4, 1)``, ``(1, 4)``, ``(4, 4)``,
            ``(16, 1)``; see :func:`parse_pattern`.
        allocation: ``"uniform"`` (every layer at ``amount``) or ``"owl"``
            (per block from the dense model's outlier ratios; needs a ranked
            pattern, not N:M).
        blocks: qualified names of the blocks, in execution order; default
            :func:`find_blocks`.  Linears outside the blocks stay dense, and so
            do Linears that are never called as modules (their weight used
            functionally, like ``nn.MultiheadAttention.out_proj``).
        filter_fn: ``f(module, qualified_name) -> bool`` to pick the Linears
            inside the blocks (default: all of them).
        damp, damping: SparseGPT's dampening of the Hessian diagonal, see
            :func:`sparsegpt_prune`.
        bias_correction: after pruning a Linear with a bias, add ``(W - W_pruned)
            @ mean(x)`` to it, so the mean output on the calibration inputs is
            unchanged (Wanda and SparseGPT; magnitude records no inputs).
        owl_threshold, owl_spread: OWL's outlier threshold ``M`` (times the
            layer's mean Wanda score) and sparsity spread ``lambda``.
        max_batches: use at most this many calibration batches.
        sequential: ``"layer"`` (default) calibrates each group of a block's
            Linears on the outputs of the groups pruned before it (query, key and
            value, which share their input, form one group; then the attention
            output, then each feed-forward Linear), one pass of the block per
            group, as SparseGPT's "true sequential" mode; ``"block"`` records
            every Linear of a block in one pass of the dense block (faster).

    Returns ``{layer_name: sparsity it was pruned to}``.  The model is left in
    its original train/eval mode, with ``torch.nn.utils.prune`` masks attached.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if allocation not in ALLOCATIONS:
        raise ValueError(f"allocation must be one of {ALLOCATIONS}, got {allocation!r}")
    if reconstruct not in ("dense", "pruned"):
        raise ValueError(f"reconstruct must be 'dense' or 'pruned', got {reconstruct!r}")
    if sequential not in ("layer", "block"):
        raise ValueError(f"sequential must be 'layer' or 'block', got {sequential!r}")
    compute_num_to_prune(float(amount), 1)  # validates the fraction
    amount = float(amount)
    parsed = parse_pattern(pattern)
    if allocation == "owl" and parsed.kind == "n:m":
        raise ValueError("OWL allocates a sparsity per block; an N:M pattern fixes it at 1 - N/M")
    block_list = _named_blocks(model, blocks)
    layers_per_block = [_block_layers(name, block, filter_fn) for name, block in block_list]
    if not any(layers_per_block):
        raise ValueError("no nn.Linear layers inside the blocks to prune")
    calibration = _reiterable(calibration, times=2 if allocation == "owl" else 1)

    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            if allocation == "owl":
                sparsities = _owl_allocation(
                    model, block_list, layers_per_block, calibration, amount,
                    owl_threshold, owl_spread, max_batches,
                )
            else:
                sparsities = [amount] * len(block_list)
            inputs = _capture_block_inputs(model, block_list[0][1], calibration, max_batches)
            done: dict[str, float] = {}
            dense_blocks = dense_layers = dense_inputs = None
            if method == "sparsegpt" and reconstruct == "dense":
                dense_model = copy.deepcopy(model)
                dense_list = _named_blocks(dense_model, [name for name, _ in block_list])
                dense_blocks = [block for _, block in dense_list]
                dense_layers = [_block_layers(name, block, filter_fn)
                                for name, block in dense_list]
                dense_inputs = inputs
            for index, ((_, block), layers, sparsity) in enumerate(
                    zip(block_list, layers_per_block, sparsities)):
                if method == "magnitude" or sequential == "block":
                    groups = [layers]
                else:
                    groups = _groups_by_shared_input(block, layers, inputs[:1])
                for group in groups:
                    # Each group is calibrated on what the groups pruned before it produce.
                    stats: dict[str, InputStatistics] = {}
                    if group and dense_blocks is not None:
                        stats = _paired_block_statistics(
                            block, group, inputs, dense_blocks[index],
                            {name: dense_layers[index][name] for name in group}, dense_inputs)
                    elif group and method != "magnitude":
                        stats = _block_statistics(block, group, inputs, method == "sparsegpt")
                    for name, layer in group.items():
                        if name in stats and stats[name].rows == 0:
                            continue  # never ran as a module (e.g. MultiheadAttention.out_proj)
                        _prune_layer(layer, method, parsed, sparsity, stats.get(name), damp,
                                     damping, bias_correction)
                        done[name] = parsed.fixed_sparsity if parsed.kind == "n:m" else sparsity
                inputs = _run_block(block, inputs)
                if dense_blocks is not None:
                    dense_inputs = _run_block(dense_blocks[index], dense_inputs)
    finally:
        model.train(was_training)
    return done


def _block_statistics(
    block: nn.Module, layers: Mapping[str, nn.Linear], inputs: list[tuple[tuple, dict]],
    hessian: bool,
) -> dict[str, InputStatistics]:
    """``layers``' input statistics over one pass of ``block`` on ``inputs``."""
    stats, handles = record_input_statistics(layers, hessian=hessian)
    _run_hooked(block, inputs, handles)
    return stats


def _run_hooked(block: nn.Module, inputs: list[tuple[tuple, dict]], handles: list) -> None:
    """Run ``block`` on every input, then remove the hooks ``handles``."""
    try:
        for args, kwargs in inputs:
            block(*args, **kwargs)
    finally:
        for handle in handles:
            handle.remove()


def _paired_block_statistics(
    block: nn.Module, layers: Mapping[str, nn.Linear], inputs: list[tuple[tuple, dict]],
    dense_block: nn.Module, dense_layers: Mapping[str, nn.Linear],
    dense_inputs: list[tuple[tuple, dict]],
) -> dict[str, InputStatistics]:
    """SparseGPT statistics of ``layers`` plus, per layer, the cross term between the
    dense model's input rows (``dense_block`` on ``dense_inputs``) and the pruned
    model's, batch by batch."""
    stats = {name: InputStatistics(layer.in_features, hessian=True)
             for name, layer in layers.items()}
    seen: dict[tuple[str, str], torch.Tensor] = {}
    handles = []
    for side, modules in (("pruned", layers), ("dense", dense_layers)):
        for name, layer in modules.items():
            def hook(module, args, output, key=(side, name)):
                seen[key] = args[0]
            handles.append(layer.register_forward_hook(hook))
    try:
        for (args, kwargs), (dense_args, dense_kwargs) in zip(inputs, dense_inputs):
            seen.clear()
            dense_block(*dense_args, **dense_kwargs)
            block(*args, **kwargs)
            for name, record in stats.items():
                if ("pruned", name) in seen:
                    record.add(seen[("pruned", name)])
                    record.add_cross(seen[("dense", name)], seen[("pruned", name)])
    finally:
        for handle in handles:
            handle.remove()
    return stats


def _groups_by_shared_input(block: nn.Module, layers: Mapping[str, nn.Linear],
                            inputs: list[tuple[tuple, dict]]) -> list[dict[str, nn.Linear]]:
    """``layers`` in the order the block calls them, those that read the same input
    tensor (an attention's query, key and value) grouped; layers never called last."""
    order: list[tuple[str, int]] = []
    handles = []
    for name, layer in layers.items():
        def hook(module, args, name=name):
            order.append((name, id(args[0])))
        handles.append(layer.register_forward_pre_hook(hook))
    _run_hooked(block, inputs, handles)
    groups: list[dict[str, nn.Linear]] = []
    seen: set[str] = set()
    previous_input = None
    for name, input_id in order:
        if name in seen:
            continue
        seen.add(name)
        if not groups or input_id != previous_input:
            groups.append({})
        groups[-1][name] = layers[name]
        previous_input = input_id
    never_called = {name: layer for name, layer in layers.items() if name not in seen}
    return groups + ([never_called] if never_called else [])


def retarget_to_dense_inputs(weight: torch.Tensor, stats: InputStatistics, damp: float,
                             damping: str) -> torch.Tensor:
    """The weight that best maps the pruned model's inputs ``X`` to the dense layer's
    outputs on the dense model's inputs ``X_d``: ``W X_d^T X (X^T X)^-1``, written as
    ``W + W (X_d^T X - X^T X) (X^T X + damping)^-1`` so that it is ``W`` itself where
    the inputs agree, whatever the damping.

    SparseGPT then prunes it against ``X^T X``; together they minimise
    ``||X_d W^T - X W_pruned^T||``, so each layer also absorbs the error the
    layers pruned before it left in its inputs.
    """
    h = stats.hessian
    gap = stats.cross / stats.rows - h  # zero where the inputs still agree
    w = weight.double()
    # W + W (C - H) H_damped^-1: the damping regularises only the correction.
    correction = torch.linalg.solve(_damped(h, damp, damping), (w @ gap).T).T
    return (w + correction).to(weight.dtype)


def _prune_layer(layer: nn.Linear, method: str, pattern: SparsityPattern, amount: float,
                 stats: Optional[InputStatistics], damp: float, damping: str,
                 bias_correction: bool) -> None:
    weight = _current_weight(layer)
    before = weight.clone()
    prior = existing_mask(layer)
    if method == "sparsegpt":
        if stats.cross is not None:
            weight = retarget_to_dense_inputs(weight, stats, damp, damping)
        new_weight, keep = sparsegpt_prune(weight, stats.hessian, pattern, amount, damp=damp,
                                           keep=prior, damping=damping)
        target = getattr(layer, "weight_orig", None)
        if target is None:
            target = layer.weight
        target.data.copy_(new_weight)
    else:
        importance = weight.abs().double() if method == "magnitude" else wanda_importance(
            weight, stats.norms)
        if prior is not None:
            importance = importance * prior
        keep = select_mask(importance, pattern, amount)
    apply_mask(layer, keep)
    if bias_correction and stats is not None and layer.bias is not None:
        # The mean input now meets the pruned weight: move the mean output back.
        removed = before.double() - _current_weight(layer).double()
        layer.bias.data += (removed @ stats.mean).to(layer.bias.dtype)


def _named_blocks(model: nn.Module, names: Optional[Sequence[str]]) -> list[tuple[str, nn.Module]]:
    if names is None:
        return find_blocks(model)
    modules = dict(model.named_modules())
    missing = [n for n in names if n not in modules]
    if missing:
        raise KeyError(f"no blocks named {missing} in the model")
    if not names:
        raise ValueError("blocks must name at least one module")
    return [(n, modules[n]) for n in names]


def _block_layers(prefix: str, block: nn.Module, filter_fn) -> dict[str, nn.Linear]:
    layers = {}
    for name, module in block.named_modules():
        qualified = f"{prefix}.{name}" if name else prefix
        if isinstance(module, nn.Linear) and (filter_fn is None or filter_fn(module, qualified)):
            layers[qualified] = module
    return layers


def _reiterable(data: Iterable, times: int) -> Iterable:
    """``data`` itself if it can be iterated ``times`` times (not a one-shot iterator)."""
    if times > 1 and iter(data) is data:
        return list(data)
    return data


def _owl_allocation(model, block_list, layers_per_block, calibration, amount, threshold,
                    spread, max_batches) -> list[float]:
    """Per-block sparsities from Wanda-score outliers of the dense model (one sequential pass)."""
    inputs = _capture_block_inputs(model, block_list[0][1], calibration, max_batches)
    ratios, sizes = [], []
    for (_, block), layers in zip(block_list, layers_per_block):
        stats, handles = record_input_statistics(layers)
        try:
            outputs = _run_block(block, inputs)
        finally:
            for handle in handles:
                handle.remove()
        importances = [wanda_importance(_current_weight(layer), stats[name].norms)
                       for name, layer in layers.items()]
        ratios.append(_outlier_ratio(importances, threshold) if importances else 0.0)
        sizes.append(sum(s.numel() for s in importances))
        inputs = outputs
    with_layers = [i for i, size in enumerate(sizes) if size > 0]
    allocated = owl_sparsities([ratios[i] for i in with_layers], amount, spread=spread,
                               sizes=[sizes[i] for i in with_layers])
    sparsities = [amount] * len(block_list)
    for i, sparsity in zip(with_layers, allocated):
        sparsities[i] = sparsity
    return sparsities


# ---------------------------------------------------------------- Criterion for prune_model
class Wanda(Criterion):
    """Wanda scores ``|W_ij| * ||X_j||`` as a :class:`Criterion` for :func:`prune_model`.

    :meth:`prepare` runs the whole model on ``data`` (batches as in
    :func:`call_model`) once and records each layer's input norms (not
    sequential; use :func:`prune_pretrained` for that).  ``block=(r, c)``
    scores blocks by the sum of their entries' scores.  Linear layers only.
    """

    def __init__(self, data: Iterable, block: Optional[tuple[int, int]] = None,
                 max_batches: Optional[int] = None):
        self.data, self.max_batches = data, max_batches
        self.granularity = "element" if block is None else parse_pattern(tuple(block)).block
        self.norms: dict[str, torch.Tensor] = {}

    def prepare(self, model, layers):
        stats, handles = record_input_statistics(layers)
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                for index, batch in enumerate(self.data):
                    if self.max_batches is not None and index >= self.max_batches:
                        break
                    call_model(model, batch)
        finally:
            for handle in handles:
                handle.remove()
            model.train(was_training)
        self.norms = {name: s.norms for name, s in stats.items()}

    def scores(self, module, name, layer_name):
        if layer_name not in self.norms:
            raise RuntimeError(f"Wanda has no input statistics for {layer_name!r}")
        importance = wanda_importance(_current_weight(module), self.norms[layer_name])
        if self.granularity == "element":
            return importance
        return block_reduce(importance, self.granularity, p=1)
