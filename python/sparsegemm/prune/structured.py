"""Structured pruning of transformer blocks: whole FFN neurons and attention heads, thinned.

The other road to a faster model: instead of sparse weights, remove whole
feed-forward neurons and attention heads and keep smaller *dense* layers.
:func:`prune_structure` scores them on calibration inputs with the same
activation-aware measure as Wanda (a unit's weight norm times the norm of
the input that feeds it), removes the lowest-scoring fraction in every block
and returns a thinned copy of the model.

Scores, per block:

* FFN neuron ``j``: ``||W_down[:, j]|| * ||X_j||``, where ``X_j`` is the
  activation that enters the down projection in column ``j``.
* Attention head ``h``: the root sum of squares of the same per-column score
  over its columns of the attention output projection (the context vector
  the head produces).

A removed unit's *mean* contribution over the calibration tokens is folded
into the bias of the layer it fed (``compensate=True``), so the block keeps
its average output; the rest of its contribution is lost.

Block layout (found per block among its ``nn.Linear`` modules):

* FFN: a pair ``up`` (d -> h) and ``down`` (h -> d), ``up`` defined first.
  Where several Linears pair up, the one with h != d (thinning can leave
  h == d, and then the pair is the only one).
* Attention: a module with ``attention_head_size`` (Hugging Face) or
  ``head_dim`` whose ``query``/``key``/``value`` (or ``q_proj``/``k_proj``/
  ``v_proj``) Linears give the heads, and the block's remaining Linear that
  reads the context (the output projection). Its forward must infer the
  number of heads from the projection width, as Hugging Face models do since
  transformers 5; ``num_attention_heads``/``num_heads`` and
  ``all_head_size`` are updated when present. ``nn.MultiheadAttention``
  (fused projections) is not supported.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Optional

import torch
from torch import nn

from .api import clone_model, remove
from .calibrated import call_model, find_blocks

__all__ = ["TransformerBlockLayout", "block_layouts", "prune_structure"]

_QKV_NAMES = (("query", "key", "value"), ("q_proj", "k_proj", "v_proj"))


@dataclass
class TransformerBlockLayout:
    """The Linears of one transformer block that structured pruning slices."""

    name: str
    ffn_up: nn.Linear
    ffn_down: nn.Linear
    attention: Optional[nn.Module]  # holds the head size; None: heads are left alone
    qkv: tuple[nn.Linear, ...]
    attention_out: Optional[nn.Linear]

    @property
    def head_size(self) -> int:
        assert self.attention is not None
        size: Any = getattr(self.attention, "attention_head_size", None)
        if size is None:
            size = self.attention.head_dim
        return int(size)

    @property
    def heads(self) -> int:
        return self.qkv[0].out_features // self.head_size


def _find_attention(block: nn.Module) -> tuple[Optional[nn.Module], tuple[nn.Linear, ...]]:
    for module in block.modules():
        if isinstance(module, nn.MultiheadAttention):
            raise ValueError(
                "nn.MultiheadAttention fuses its projections; structured head pruning needs "
                "separate query/key/value Linears"
            )
        if not (hasattr(module, "attention_head_size") or hasattr(module, "head_dim")):
            continue
        for names in _QKV_NAMES:
            layers = tuple(getattr(module, name, None) for name in names)
            if all(isinstance(layer, nn.Linear) for layer in layers):
                return module, layers  # type: ignore[return-value]
    return None, ()


def block_layouts(model: nn.Module) -> list[TransformerBlockLayout]:
    """The FFN pair and attention Linears of every block (see the module docstring).

    Raises ValueError for a block without a recognisable FFN pair.
    """
    layouts = []
    for name, block in find_blocks(model):
        linears = [m for m in block.modules() if isinstance(m, nn.Linear)]
        attention, qkv = _find_attention(block)
        attention_out = None
        if attention is not None:
            # the first Linear after the projections that maps the context back to the width
            inside = {id(m) for m in attention.modules()}
            after = linears[max(linears.index(layer) for layer in qkv) + 1 :]
            candidates = [
                m
                for m in after
                if id(m) not in inside
                and m.in_features == qkv[2].out_features
                and m.out_features == qkv[0].in_features
            ]
            if not candidates:
                raise ValueError(
                    f"block {name!r}: no attention output projection reading the "
                    f"{qkv[2].out_features}-wide context"
                )
            attention_out = candidates[0]
        rest = [m for m in linears if m is not attention_out and all(m is not p for p in qkv)]
        # up before down in the block's definition order (the pair's mirror image matches too)
        pairs = [
            (up, down)
            for i, up in enumerate(rest)
            for down in rest[i + 1 :]
            if up.out_features == down.in_features and up.in_features == down.out_features
        ]
        if len(pairs) > 1:
            # square Linears pair with each other too: the FFN is the pair with h != d
            pairs = [(up, down) for up, down in pairs if up.out_features != up.in_features]
        if len(pairs) != 1:
            raise ValueError(
                f"block {name!r}: expected one FFN pair (d -> h -> d) among its "
                f"Linears, found {len(pairs)}"
            )
        up, down = pairs[0]
        layouts.append(TransformerBlockLayout(name, up, down, attention, qkv, attention_out))
    return layouts


class _ColumnStatistics:
    """Per input column of a Linear: sum of squares and sum over the calibration rows."""

    def __init__(self, columns: int) -> None:
        self.squares = torch.zeros(columns, dtype=torch.float64)
        self.sums = torch.zeros(columns, dtype=torch.float64)
        self.rows = 0

    def hook(self, module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        x = inputs[0].detach().reshape(-1, inputs[0].shape[-1]).to(torch.float64)
        self.squares += (x * x).sum(0)
        self.sums += x.sum(0)
        self.rows += x.shape[0]

    @property
    def mean(self) -> torch.Tensor:
        return self.sums / max(1, self.rows)


def _column_scores(layer: nn.Linear, stats: _ColumnStatistics) -> torch.Tensor:
    """||W[:, j]|| * ||X_j|| for every input column j."""
    weight_norms = layer.weight.detach().to(torch.float64).norm(dim=0)
    return weight_norms * stats.squares.sqrt()


def _lowest(scores: torch.Tensor, count: int) -> torch.Tensor:
    """Indices of the ``count`` lowest scores, ascending."""
    return torch.sort(torch.argsort(scores)[:count]).values


def _fold_mean(layer: nn.Linear, columns: torch.Tensor, mean: torch.Tensor) -> None:
    """Add the removed columns' mean contribution to ``layer``'s bias."""
    shift = layer.weight.detach().to(torch.float64)[:, columns] @ mean[columns]
    with torch.no_grad():
        if layer.bias is None:
            layer.bias = nn.Parameter(shift.to(layer.weight.dtype))
        else:
            layer.bias.add_(shift.to(layer.bias.dtype))


def _keep_rows(layer: nn.Linear, keep: torch.Tensor) -> None:
    with torch.no_grad():
        layer.weight = nn.Parameter(layer.weight[keep].clone())
        if layer.bias is not None:
            layer.bias = nn.Parameter(layer.bias[keep].clone())
    layer.out_features = int(keep.numel())


def _keep_columns(layer: nn.Linear, keep: torch.Tensor) -> None:
    with torch.no_grad():
        layer.weight = nn.Parameter(layer.weight[:, keep].clone())
    layer.in_features = int(keep.numel())


def _complement(removed: torch.Tensor, size: int) -> torch.Tensor:
    keep = torch.ones(size, dtype=torch.bool)
    keep[removed] = False
    return torch.nonzero(keep).flatten()


def prune_structure(
    model: nn.Module,
    calibration: Iterable,
    ffn_amount: float,
    head_amount: Optional[float] = None,
    *,
    compensate: bool = True,
    inplace: bool = False,
) -> nn.Module:
    """Remove the lowest-scoring FFN neurons and attention heads of every block; thin.

    Args:
        calibration: model inputs (tensors, tuples or dicts of keyword
            arguments, as for :func:`~sparsegemm.prune.prune_pretrained`).
        ffn_amount: fraction of each block's FFN neurons removed (rounded down).
        head_amount: fraction of each block's heads removed (rounded down, at
            least one kept); defaults to ``ffn_amount``; 0 leaves heads alone.
        compensate: fold the removed units' mean contribution into the next bias.

    Returns the thinned model: smaller dense Linears, no masks. Unstructured
    masks already on the model are finalised first. The scores come from one
    calibration pass of the unpruned model.
    """
    head_amount = ffn_amount if head_amount is None else head_amount
    for label, value in (("ffn_amount", ffn_amount), ("head_amount", head_amount)):
        if not 0.0 <= value < 1.0:
            raise ValueError(f"{label} must be in [0, 1), got {value}")
    out = model if inplace else clone_model(model)
    remove(out)
    layouts = block_layouts(out)
    if head_amount > 0 and any(layout.attention is None for layout in layouts):
        raise ValueError(
            "head_amount > 0 needs attention modules with attention_head_size or head_dim and "
            "separate query/key/value Linears; pass head_amount=0 to prune FFN neurons only"
        )
    stats: dict[int, _ColumnStatistics] = {}
    handles = []
    for layout in layouts:
        for layer in (layout.ffn_down, layout.attention_out):
            if layer is not None:
                stats[id(layer)] = _ColumnStatistics(layer.in_features)
                handles.append(layer.register_forward_hook(stats[id(layer)].hook))
    was_training = out.training
    out.eval()
    try:
        with torch.no_grad():
            for batch in calibration:
                call_model(out, batch)
    finally:
        for handle in handles:
            handle.remove()
        out.train(was_training)
    if any(s.rows == 0 for s in stats.values()):
        raise ValueError("the calibration data never reached every block (is it empty?)")

    for layout in layouts:
        down_stats = stats[id(layout.ffn_down)]
        hidden = layout.ffn_up.out_features
        removed = _lowest(_column_scores(layout.ffn_down, down_stats), int(ffn_amount * hidden))
        if compensate and removed.numel():
            _fold_mean(layout.ffn_down, removed, down_stats.mean)
        keep = _complement(removed, hidden)
        _keep_rows(layout.ffn_up, keep)
        _keep_columns(layout.ffn_down, keep)
        if head_amount > 0:
            _remove_heads(layout, stats[id(layout.attention_out)], head_amount, compensate)
    return out


def _remove_heads(
    layout: TransformerBlockLayout, stats: _ColumnStatistics, amount: float, compensate: bool
) -> None:
    assert layout.attention is not None and layout.attention_out is not None
    size, heads = layout.head_size, layout.heads
    column_scores = _column_scores(layout.attention_out, stats)
    head_scores = column_scores.reshape(heads, size).pow(2).sum(1).sqrt()
    removed_heads = _lowest(head_scores, min(int(amount * heads), heads - 1))
    if removed_heads.numel() == 0:
        return
    removed = (removed_heads[:, None] * size + torch.arange(size)).flatten()
    if compensate:
        _fold_mean(layout.attention_out, removed, stats.mean)
    keep = _complement(removed, heads * size)
    for projection in layout.qkv:
        _keep_rows(projection, keep)
    _keep_columns(layout.attention_out, keep)
    kept_heads = heads - int(removed_heads.numel())
    for attribute, value in (("num_attention_heads", kept_heads), ("num_heads", kept_heads),
                             ("all_head_size", kept_heads * size)):
        if isinstance(getattr(layout.attention, attribute, None), int):
            setattr(layout.attention, attribute, value)
