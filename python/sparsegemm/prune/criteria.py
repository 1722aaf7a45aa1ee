"""Pruning criteria: how important is each weight, block or channel.

Every criterion answers one question for one layer: *which units to keep*.
A unit is an element (unstructured), an ``r x c`` block, an output channel,
or, for N:M, an element inside its group of M.  The scope layer
(:mod:`sparsegemm.prune.api`) ranks unit scores, per layer or across layers,
and turns the chosen units into a mask with the weight's shape.  The end
result is always the same contract: a dense weight with zeros.

Conventions
-----------
* Weights are viewed as a 2-D matrix ``W[out, in]``.  For convolutions
  (``Conv2d`` weight ``(out, in, kh, kw)``, or any weight with more than two
  dimensions) the matrix is ``weight.reshape(out, -1)``, i.e. ``out x
  (in*kh*kw)`` with ``kw`` fastest: the im2col GEMM layout, whose reduction
  dimension is what a sparse GEMM kernel sees.  Blocks and N:M groups are
  defined on that matrix.  So a 4x1 block of a conv spans 4 output filters at
  one (in, kh, kw) position, and a 2:4 group spans 4 consecutive entries of
  the flattened (in, kh, kw) axis (which may straddle input channels when
  ``kh*kw`` is not a multiple of M).
* Scores are "higher is more important".  Units already pruned by an
  existing mask get score ``-inf`` so they are always ranked first to go,
  and pruning never revives a weight.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Callable, Optional, Union

import torch
from torch import nn

from .. import pruning as core

__all__ = [
    "Criterion",
    "Magnitude",
    "BlockNorm",
    "NM",
    "ChannelNorm",
    "Activation",
    "Taylor",
    "Custom",
    "effective_weight",
    "existing_mask",
    "block_reduce",
    "expand_units",
    "keep_n_of_m",
]

Granularity = Union[str, tuple[int, int]]  # "element", "channel" or (r, c)


# ---------------------------------------------------------------- helpers
def effective_weight(module: nn.Module, name: str = "weight") -> torch.Tensor:
    """The weight the module computes with: ``orig * mask`` if a mask is attached.

    Uses ``<name>_orig * <name>_mask`` rather than ``module.<name>`` because the
    latter is only refreshed by the forward pre-hook (stale after an optimizer
    step until the next forward).
    """
    orig = getattr(module, name + "_orig", None)
    mask = getattr(module, name + "_mask", None)
    if orig is not None and mask is not None:
        return (orig * mask).detach()
    return getattr(module, name).detach()


def existing_mask(module: nn.Module, name: str = "weight") -> Optional[torch.Tensor]:
    """The mask buffer attached by this package or by ``torch.nn.utils.prune`` (or ``None``)."""
    mask = getattr(module, name + "_mask", None)
    return None if mask is None else mask.detach()


def _as_matrix(t: torch.Tensor) -> torch.Tensor:
    if t.dim() < 2:
        raise ValueError(f"can only prune weights with >= 2 dims, got shape {tuple(t.shape)}")
    return t.reshape(t.shape[0], -1)


def _check_block(block: Sequence[int]) -> tuple[int, int]:
    r, c = (int(block[0]), int(block[1]))
    if r < 1 or c < 1:
        raise ValueError(f"block must be positive, got {block}")
    return r, c


def block_reduce(
    t: torch.Tensor, block: tuple[int, int], p: float = 1, *, op: str = "norm"
) -> torch.Tensor:
    """Reduce ``t`` (viewed as ``out x rest``) over ``r x c`` blocks.

    Returns a ``(ceil(out/r), ceil(rest/c))`` grid, computed by the numpy core
    (:mod:`sparsegemm.pruning`) so every pruner shares its rules. For
    ``op="norm"`` edge blocks are scored as if full (the core's one rule for
    edge blocks); ``op="sum"`` gives the plain sum (used for grouped Taylor
    scores), and ``op="all_zero"`` returns True where the block is all zero.
    """
    block = _check_block(block)
    m = _as_matrix(t).detach().cpu()
    if op == "all_zero":
        return torch.from_numpy(core.all_zero_blocks(m.numpy(), block)).to(t.device)
    if op == "sum":
        return torch.from_numpy(core.block_sums(m.numpy(), block)).to(t.device)
    if op != "norm":
        raise ValueError(f"op must be 'norm', 'sum' or 'all_zero', got {op!r}")
    norms = torch.from_numpy(core.block_norms(m.double().numpy(), block, float(p)))
    return norms.to(device=t.device, dtype=m.dtype if m.is_floating_point() else torch.float32)


def expand_units(
    keep: torch.Tensor, granularity: Granularity, weight_shape: torch.Size
) -> torch.Tensor:
    """Turn a boolean keep-tensor over units into a boolean mask of ``weight_shape``."""
    out = weight_shape[0]
    rest = int(math.prod(weight_shape[1:]))
    if granularity == "element":
        return keep.reshape(weight_shape)
    if granularity == "channel":
        return keep.reshape(out, 1).expand(out, rest).reshape(weight_shape)
    r, c = _check_block(granularity)
    full = keep.repeat_interleave(r, dim=0).repeat_interleave(c, dim=1)
    return full[:out, :rest].reshape(weight_shape)


def unit_already_pruned(mask: torch.Tensor, granularity: Granularity) -> torch.Tensor:
    """True for units whose every element is masked out in ``mask``."""
    if granularity == "element":
        return mask == 0
    if granularity == "channel":
        return (_as_matrix(mask) == 0).all(dim=1)
    return block_reduce(mask, granularity, op="all_zero")


def _reduce_elements(scores: torch.Tensor, granularity: Granularity, p: float) -> torch.Tensor:
    """Reduce element scores (same shape as the weight, non-negative) to unit scores."""
    if granularity == "element":
        return scores
    if granularity == "channel":
        return torch.linalg.vector_norm(_as_matrix(scores).double(), ord=p, dim=1).float()
    return block_reduce(scores, granularity, p)


def keep_n_of_m(scores: torch.Tensor, n: int, m: int) -> torch.Tensor:
    """Boolean keep-mask of a 2-D ``scores`` matrix: the ``n`` highest of every group of
    ``m`` consecutive entries of each row (a trailing partial group of ``g`` keeps
    ``min(n, g)``)."""
    rows, cols = scores.shape
    groups_per_row = math.ceil(cols / m)
    padded = torch.full((rows, groups_per_row * m), -math.inf, dtype=torch.float64)
    padded[:, :cols] = scores
    groups = padded.reshape(rows, groups_per_row, m)
    keep = torch.zeros_like(groups, dtype=torch.bool)
    if n > 0:
        keep.scatter_(2, torch.topk(groups, n, dim=2).indices, True)
    return keep.reshape(rows, groups_per_row * m)[:, :cols]


# ---------------------------------------------------------------- base class
class Criterion:
    """Base class of all criteria.

    Subclasses set :attr:`granularity` (``"element"``, ``"channel"`` or an
    ``(r, c)`` block) and implement :meth:`scores`, returning one score per
    unit (higher = keep).  :meth:`prepare` runs once per pruning call with the
    model and the layers about to be pruned (used by data-driven criteria to
    run calibration data).
    """

    granularity: Granularity = "element"
    #: False for criteria (N:M) whose pattern is fixed per group and cannot be ranked.
    rankable: bool = True

    def prepare(self, model: nn.Module, layers: Mapping[str, nn.Module]) -> None:
        """Called once before :meth:`scores`; default does nothing."""

    def scores(self, module: nn.Module, name: str, layer_name: str) -> torch.Tensor:
        raise NotImplementedError

    def __repr__(self) -> str:  # pragma: no cover - cosmetic
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{type(self).__name__}({args})"


class Magnitude(Criterion):
    """Unstructured magnitude pruning: score ``|w|**p`` (``p=1`` L1, ``p=2`` L2).

    For single elements L1 and L2 give the same ranking; ``p`` matters only
    when scores are compared with other criteria.
    """

    granularity = "element"

    def __init__(self, p: float = 1):
        self.p = p

    def scores(self, module, name, layer_name):
        return effective_weight(module, name).abs() ** self.p


class BlockNorm(Criterion):
    """``r x c`` block pruning of ``W[out, in]`` by block Lp norm (keep the highest).

    ``block=(4, 1)`` means 4 output rows by 1 input column.  ``amount`` counts
    *blocks* (a fraction of blocks, or a number of blocks); when the shape
    divides, that equals the fraction of weights.  Edge blocks are scored by
    their norm scaled to a full block (see :func:`block_reduce`).
    """

    def __init__(self, block: Sequence[int] = (4, 1), p: float = 1):
        self.block = _check_block(block)
        self.p = p
        self.granularity = self.block

    def scores(self, module, name, layer_name):
        return block_reduce(effective_weight(module, name), self.block, self.p)


class ChannelNorm(Criterion):
    """Structured pruning of output neurons (Linear rows) / filters (Conv out channels) by Ln norm.

    Masks the weight rows only, like ``torch.nn.utils.prune.ln_structured``
    with ``dim=0``; the bias stays, so a pruned neuron still outputs its bias.
    :func:`sparsegemm.prune.thin` accounts for that when it removes neurons.
    """

    granularity = "channel"

    def __init__(self, p: float = 2):
        self.p = p

    def scores(self, module, name, layer_name):
        w = _as_matrix(effective_weight(module, name))
        return torch.linalg.vector_norm(w.double(), ord=self.p, dim=1).to(w.dtype)


class NM(Criterion):
    """N:M semi-structured sparsity along the input dimension: keep the N largest |w| in
    every group of M consecutive entries of each row of ``W[out, in]`` (for convs, of
    ``weight.reshape(out, -1)``).

    The sparsity is fixed at ``1 - N/M``; ``amount`` is ignored and global
    ranking does not apply.  If the row length is not a multiple of M, the
    trailing partial group of size ``g`` keeps ``min(N, g)`` entries.
    Entries already masked are never revived, so a group may end up with
    fewer than N non-zeros.
    """

    rankable = False
    granularity = "element"

    def __init__(self, n: int = 2, m: int = 4):
        if not (0 <= n <= m and m >= 1):
            raise ValueError(f"need 0 <= n <= m, got {n}:{m}")
        self.n, self.m = int(n), int(m)

    def mask(self, module: nn.Module, name: str) -> torch.Tensor:
        w = effective_weight(module, name)
        mat = _as_matrix(w).abs().double()
        old = existing_mask(module, name)
        if old is not None:
            mat = mat.masked_fill(_as_matrix(old) == 0, -math.inf)
        keep = keep_n_of_m(mat, self.n, self.m)
        if old is not None:
            keep &= _as_matrix(old) != 0
        return keep.reshape(w.shape)


class Custom(Criterion):
    """User-supplied scores.

    ``scores`` is a tensor (only for pruning a single layer), a mapping from
    layer name to tensor, or a callable ``f(module, layer_name) -> tensor``.
    The tensor's shape must match the granularity: the weight's shape for
    ``"element"``, ``(out,)`` for ``"channel"``, or the block grid
    ``(ceil(out/r), ceil(in/c))`` for an ``(r, c)`` block.  With
    ``granularity="channel"`` or a block, an element-shaped tensor is also
    accepted and reduced with the ``p``-norm of its absolute values.
    """

    def __init__(
        self,
        scores: Union[
            torch.Tensor, Mapping[str, torch.Tensor], Callable[[nn.Module, str], torch.Tensor]
        ],
        granularity: Granularity = "element",
        p: float = 1,
    ):
        self._scores = scores
        self.granularity = (
            granularity if isinstance(granularity, str) else _check_block(granularity)
        )
        if isinstance(self.granularity, str) and self.granularity not in ("element", "channel"):
            raise ValueError(f"unknown granularity {granularity!r}")
        self.p = p

    def scores(self, module, name, layer_name):
        s = self._scores
        if callable(s) and not isinstance(s, torch.Tensor):
            s = s(module, layer_name)
        elif isinstance(s, Mapping):
            if layer_name not in s:
                raise KeyError(f"Custom scores have no entry for layer {layer_name!r}")
            s = s[layer_name]
        s = torch.as_tensor(s).detach().to(torch.float64)
        w = getattr(module, name + "_orig", None)
        wshape = (w if w is not None else getattr(module, name)).shape
        if self.granularity != "element" and s.shape == wshape:
            return _reduce_elements(s.abs(), self.granularity, self.p)
        expected = _unit_shape(self.granularity, wshape)
        if tuple(s.shape) != expected:
            raise ValueError(
                f"Custom scores for {layer_name!r} have shape {tuple(s.shape)}, "
                f"expected {expected} for granularity {self.granularity!r}"
            )
        return s


def _unit_shape(granularity: Granularity, wshape) -> tuple:
    if granularity == "element":
        return tuple(wshape)
    if granularity == "channel":
        return (wshape[0],)
    r, c = granularity
    return (math.ceil(wshape[0] / r), math.ceil(int(math.prod(wshape[1:])) / c))


class Taylor(Criterion):
    """First-order Taylor importance ``|w * dL/dw|`` (Molchanov et al.).

    With ``loss_fn`` and ``data``, :meth:`prepare` zeroes the gradients, runs
    ``loss_fn(model, batch).backward()`` for every batch (up to
    ``max_batches``) and uses the accumulated gradient.  Without them it uses
    whatever ``.grad`` is already on the weights (``<name>_orig.grad`` when a
    mask is attached).

    For ``granularity="channel"`` or a block the score is the first-order
    estimate of removing the whole group, ``|sum_{w in group} w * g|``.
    """

    def __init__(
        self,
        loss_fn: Optional[Callable[[nn.Module, object], torch.Tensor]] = None,
        data: Optional[Iterable] = None,
        granularity: Granularity = "element",
        max_batches: Optional[int] = None,
    ):
        if (loss_fn is None) != (data is None):
            raise ValueError("give both loss_fn and data, or neither (to use existing .grad)")
        self.loss_fn, self.data, self.max_batches = loss_fn, data, max_batches
        self.granularity = (
            granularity if isinstance(granularity, str) else _check_block(granularity)
        )

    def prepare(self, model, layers):
        if self.loss_fn is None:
            return
        was_training = model.training
        params = [_grad_param(m, "weight") for m in layers.values()]
        saved = [p.requires_grad for p in params]
        for p in params:
            p.requires_grad_(True)
        model.zero_grad(set_to_none=True)
        try:
            for i, batch in enumerate(self.data):
                if self.max_batches is not None and i >= self.max_batches:
                    break
                self.loss_fn(model, batch).backward()
        finally:
            for p, s in zip(params, saved):
                p.requires_grad_(s)
            model.train(was_training)

    def scores(self, module, name, layer_name):
        g = _grad_param(module, name).grad
        if g is None:
            raise RuntimeError(
                f"Taylor: layer {layer_name!r} has no gradient; pass loss_fn and data, "
                "or run backward() first"
            )
        prod = effective_weight(module, name) * g.detach()
        if self.granularity == "element":
            return prod.abs()
        if self.granularity == "channel":
            return _as_matrix(prod).sum(dim=1).abs()
        return block_reduce(prod, self.granularity, op="sum").abs()


def _grad_param(module: nn.Module, name: str) -> torch.Tensor:
    p = getattr(module, name + "_orig", None)
    return p if p is not None else getattr(module, name)


class Activation(Criterion):
    """Rank output neurons / channels by their activations on calibration data.

    ``kind="mean"`` keeps channels with the highest mean activation;
    ``kind="apoz"`` prunes channels with the highest Average Percentage of
    Zeros (Hu et al. 2016), i.e. score ``1 - APoZ``.

    Activations are measured with forward hooks while ``forward_fn(model,
    batch)`` (default: ``model(batch)``, or ``model(batch[0])`` for a
    ``(x, y)`` tuple/list) runs over ``data`` (a DataLoader or any iterable)
    under ``torch.no_grad()`` in eval mode.  By default the output of the
    pruned layer itself is observed and passed through ``activation``
    (``torch.relu``).  ``observe`` maps a layer name to the name of another
    module whose output to observe instead, e.g. the ReLU after a
    BatchNorm: ``{"features.3": "features.5"}``; then ``activation`` is still
    applied (ReLU of a ReLU output is a no-op).  Channels are dim 1 of the
    observed output; all other dims are averaged.
    """

    granularity = "channel"

    def __init__(
        self,
        data: Iterable,
        kind: str = "apoz",
        activation: Optional[Callable[[torch.Tensor], torch.Tensor]] = torch.relu,
        observe: Optional[Mapping[str, str]] = None,
        forward_fn: Optional[Callable[[nn.Module, object], object]] = None,
        max_batches: Optional[int] = None,
    ):
        if kind not in ("mean", "apoz"):
            raise ValueError(f"kind must be 'mean' or 'apoz', got {kind!r}")
        self.data, self.kind, self.activation = data, kind, activation
        self.observe = dict(observe or {})
        self.forward_fn, self.max_batches = forward_fn, max_batches
        self.stats: dict = {}

    def prepare(self, model, layers):
        self.stats = measure_activations(
            model,
            self.data,
            layers,
            activation=self.activation,
            observe=self.observe,
            forward_fn=self.forward_fn,
            max_batches=self.max_batches,
        )

    def scores(self, module, name, layer_name):
        st = self.stats[layer_name]
        return st["mean"] if self.kind == "mean" else 1.0 - st["apoz"]


def _default_forward(model, batch):
    if isinstance(batch, (tuple, list)):
        batch = batch[0]
    return model(batch)


def measure_activations(
    model: nn.Module,
    data: Iterable,
    layers: Mapping[str, nn.Module],
    *,
    activation: Optional[Callable] = torch.relu,
    observe: Optional[Mapping[str, str]] = None,
    forward_fn: Optional[Callable] = None,
    max_batches: Optional[int] = None,
) -> dict:
    """Per-channel mean activation and APoZ for each layer in ``layers``.

    Returns ``{layer_name: {"mean": Tensor[C], "apoz": Tensor[C]}}``.
    See :class:`Activation` for the meaning of the arguments.
    """
    observe = dict(observe or {})
    forward_fn = forward_fn or _default_forward
    modules = dict(model.named_modules())
    acc = {n: {"sum": None, "zeros": None, "count": 0} for n in layers}
    handles = []

    def make_hook(lname):
        def hook(mod, inp, out):
            a = out.detach()
            if activation is not None:
                a = activation(a)
            a = a.double()
            dims = [d for d in range(a.dim()) if d != 1]
            s = a.sum(dim=dims)
            z = (a == 0).double().sum(dim=dims)
            n = a.numel() // a.shape[1]
            st = acc[lname]
            st["sum"] = s if st["sum"] is None else st["sum"] + s
            st["zeros"] = z if st["zeros"] is None else st["zeros"] + z
            st["count"] += n

        return hook

    for lname in layers:
        target = observe.get(lname, lname)
        if target not in modules:
            raise KeyError(f"no module named {target!r} to observe for layer {lname!r}")
        handles.append(modules[target].register_forward_hook(make_hook(lname)))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for i, batch in enumerate(data):
                if max_batches is not None and i >= max_batches:
                    break
                forward_fn(model, batch)
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    out = {}
    for lname, st in acc.items():
        if st["count"] == 0:
            raise RuntimeError(f"layer {lname!r} never ran during calibration")
        out[lname] = {"mean": st["sum"] / st["count"], "apoz": st["zeros"] / st["count"]}
    return out
