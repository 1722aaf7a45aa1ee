"""Structured thinning: physically remove pruned neurons / channels in ``nn.Sequential`` chains.

After structured pruning (e.g. :class:`~sparsegemm.prune.ChannelNorm`) a
pruned output neuron of a Linear, or a pruned filter of a Conv, has an
all-zero weight row.  :func:`thin` removes such channels from the producing
layer, from the BatchNorm that follows it, and the matching input columns
of the next Linear/Conv, producing smaller dense layers.

Supported chains inside one ``nn.Sequential`` (any number of them)::

    Linear -> [BatchNorm1d] -> [elementwise activation] -> [Dropout] -> Linear
    Conv2d -> [BatchNorm2d] -> [activation] -> [pooling] -> [Dropout] -> Conv2d
    Conv2d -> ... -> [pooling] -> Flatten -> [Dropout] -> Linear

A removed neuron is not silent: its weights are zero but it still outputs
its bias ``b``, which becomes ``act(bn(b))`` downstream, a constant ``c``.
``thin`` folds that constant into the next layer's bias (``b_next += W_next[:,
i] * c``) so the thinned model gives the same outputs as the masked model
(in eval mode; BatchNorm uses its running statistics).  Where a constant
cannot be folded exactly, namely into a Conv2d with zero padding (border
outputs see fewer taps) or through an AvgPool with zero padding, channels
whose constant is non-zero are kept; channels whose output is exactly zero
are always removed.

Only flat chains inside an ``nn.Sequential`` are handled (nested Sequentials
are thinned independently; nothing crosses their boundaries).  For arbitrary
graphs (residual connections, concatenations, attention), use the
``torch_pruning`` package (Torch-Pruning, DepGraph), which traces the
dependency graph.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from .api import clone_model, remove

__all__ = ["thin", "dead_channels"]

_ELEMENTWISE = (
    nn.ReLU,
    nn.ReLU6,
    nn.LeakyReLU,
    nn.ELU,
    nn.SELU,
    nn.CELU,
    nn.GELU,
    nn.SiLU,
    nn.Mish,
    nn.Sigmoid,
    nn.Tanh,
    nn.Hardtanh,
    nn.Hardswish,
    nn.Hardsigmoid,
    nn.Softplus,
    nn.Identity,
)
_DROPOUT = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.AlphaDropout)
_POOL = (nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)
_BN = (nn.BatchNorm1d, nn.BatchNorm2d)


def dead_channels(layer: nn.Module, name: str = "weight") -> torch.Tensor:
    """Boolean ``(out,)``: output channels whose (effective) weight row is all zero."""
    orig = getattr(layer, name + "_orig", None)
    w = orig * getattr(layer, name + "_mask") if orig is not None else getattr(layer, name)
    return (w.detach().reshape(w.shape[0], -1) == 0).all(dim=1)


def _zero_padding_conv(conv: nn.Conv2d) -> bool:
    if conv.padding_mode != "zeros":
        return False  # replicate/reflect/circular keep a constant map constant
    if isinstance(conv.padding, str):
        return conv.padding != "valid"
    return any(p != 0 for p in conv.padding)


def _chain(mods: list[nn.Module], i: int):
    """Find the consumer of producer ``mods[i]``; return (j, middle, flatten) or None."""
    prod = mods[i]
    conv = isinstance(prod, nn.Conv2d)
    middle, flatten = [], False
    for j in range(i + 1, len(mods)):
        m = mods[j]
        if isinstance(m, nn.Linear):
            if conv and not flatten:
                return None
            return j, middle, flatten
        if isinstance(m, nn.Conv2d):
            if not conv or flatten or m.groups != 1:
                return None
            return j, middle, flatten
        if isinstance(m, _ELEMENTWISE + _DROPOUT):
            middle.append(m)
        elif isinstance(m, _BN) and not flatten:
            if isinstance(m, nn.BatchNorm2d) != conv:
                return None
            middle.append(m)
        elif isinstance(m, _POOL) and conv and not flatten:
            middle.append(m)
        elif isinstance(m, nn.Flatten) and conv and not flatten:
            if m.start_dim != 1 or m.end_dim != -1:
                return None
            flatten = True
        else:
            return None
    return None


def _constants(prod: nn.Module, middle: list[nn.Module]) -> Optional[torch.Tensor]:
    """Output of each channel when its weight row is zero (bias through the middle modules).

    Returns None when a middle module would make the constant position-dependent.
    """
    C = prod.weight.shape[0]
    x = prod.bias.detach().clone() if prod.bias is not None else torch.zeros(C)
    x = x.reshape(1, C, 1, 1) if isinstance(prod, nn.Conv2d) else x.reshape(1, C)
    for m in middle:
        if isinstance(m, _BN):
            x = (
                nn.functional.batch_norm(
                    x, m.running_mean, m.running_var, m.weight, m.bias, False, 0.0, m.eps
                )
                if m.track_running_stats and m.running_mean is not None
                else None
            )
            if x is None:
                return None
        elif isinstance(m, _ELEMENTWISE):
            x = m(x)
        elif isinstance(m, nn.AvgPool2d):
            pad = m.padding if isinstance(m.padding, tuple) else (m.padding,)
            if any(p != 0 for p in pad) and m.count_include_pad:
                return None
        # dropout (eval), max/adaptive pooling: a constant map stays constant
    return x.detach().reshape(C)


def _slice_bn(bn: nn.Module, keep: torch.Tensor) -> nn.Module:
    new = type(bn)(
        int(keep.sum()),
        eps=bn.eps,
        momentum=bn.momentum,
        affine=bn.affine,
        track_running_stats=bn.track_running_stats,
    )
    with torch.no_grad():
        if bn.affine:
            new.weight.copy_(bn.weight[keep])
            new.bias.copy_(bn.bias[keep])
        if bn.track_running_stats:
            new.running_mean.copy_(bn.running_mean[keep])
            new.running_var.copy_(bn.running_var[keep])
            new.num_batches_tracked.copy_(bn.num_batches_tracked)
    new.train(bn.training)
    return new


def _slice_out(layer: nn.Module, keep: torch.Tensor) -> nn.Module:
    """Copy of ``layer`` with only the output channels in ``keep``."""
    n = int(keep.sum())
    if isinstance(layer, nn.Linear):
        new = nn.Linear(layer.in_features, n, bias=layer.bias is not None)
    else:
        new = _new_conv(layer, layer.in_channels, n, layer.bias is not None)
    with torch.no_grad():
        new.weight.copy_(layer.weight[keep])
        if layer.bias is not None:
            new.bias.copy_(layer.bias[keep])
    return new


def _new_conv(c: nn.Conv2d, cin: int, cout: int, bias: bool) -> nn.Conv2d:
    return nn.Conv2d(
        cin,
        cout,
        c.kernel_size,
        stride=c.stride,
        padding=c.padding,
        dilation=c.dilation,
        groups=c.groups,
        bias=bias,
        padding_mode=c.padding_mode,
    )


def _slice_in(layer: nn.Module, keep_cols: torch.Tensor, bias_add: Optional[torch.Tensor]):
    """Copy of consumer ``layer`` keeping input columns ``keep_cols``; ``bias += bias_add``."""
    n = int(keep_cols.sum())
    need_bias = layer.bias is not None or (bias_add is not None and bool((bias_add != 0).any()))
    if isinstance(layer, nn.Linear):
        new = nn.Linear(n, layer.out_features, bias=need_bias)
    else:
        new = _new_conv(layer, n, layer.out_channels, need_bias)
    with torch.no_grad():
        new.weight.copy_(layer.weight[:, keep_cols])
        if need_bias:
            b = (
                layer.bias.detach().clone()
                if layer.bias is not None
                else torch.zeros(new.weight.shape[0])
            )
            if bias_add is not None:
                b += bias_add.to(b.dtype)
            new.bias.copy_(b)
    return new


def _thin_sequential(seq: nn.Sequential) -> None:
    mods = list(seq.children())
    keys = list(seq._modules.keys())
    for i in range(len(mods)):
        prod = mods[i]
        if not isinstance(prod, (nn.Linear, nn.Conv2d)) or (
            isinstance(prod, nn.Conv2d) and prod.groups != 1
        ):
            continue
        found = _chain(mods, i)
        if found is None:
            continue
        j, middle, flatten = found
        cons = mods[j]
        dead = dead_channels(prod)
        if not bool(dead.any()):
            continue
        const = _constants(prod, middle)
        C = prod.weight.shape[0]
        foldable = (
            not (isinstance(cons, nn.Conv2d) and _zero_padding_conv(cons)) and const is not None
        )
        if foldable:
            remove_ch = dead.clone()
        else:
            remove_ch = dead & (const == 0) if const is not None else torch.zeros_like(dead)
        if bool(remove_ch.all()):  # keep one channel so that shapes stay valid
            remove_ch[0] = False
        if not bool(remove_ch.any()):
            continue
        keep = ~remove_ch
        # consumer: input columns belonging to each channel
        if flatten:
            per = cons.in_features // C
            if per * C != cons.in_features:
                continue
            col_keep = keep.repeat_interleave(per)
            col_const = const.repeat_interleave(per) if const is not None else None
        else:
            col_keep, col_const = keep, const
        w = cons.weight.detach()
        bias_add = None
        if col_const is not None:
            c_removed = torch.where(~col_keep, col_const, torch.zeros_like(col_const)).to(w.dtype)
            if bool((c_removed != 0).any()):
                wsum = w.reshape(w.shape[0], w.shape[1], -1).sum(dim=2)  # (out, in)
                bias_add = wsum @ c_removed
        mods[j] = _slice_in(cons, col_keep, bias_add)
        mods[i] = _slice_out(prod, keep)
        for k in range(i + 1, j):
            if isinstance(mods[k], _BN):
                mods[k] = _slice_bn(mods[k], keep)
    for k, m in zip(keys, mods):
        seq._modules[k] = m


def thin(model: nn.Module, *, inplace: bool = False) -> nn.Module:
    """Remove pruned output channels/neurons (all-zero weight rows) from Sequential chains.

    Returns a model with smaller dense layers that gives the same outputs as
    the masked model in eval mode (up to float rounding).  Masks are
    finalised first (:func:`~sparsegemm.prune.remove`); the input model is
    left untouched unless ``inplace=True``.  The model itself, or any
    submodule, that is an ``nn.Sequential`` is thinned; see the module
    docstring for the supported chains and for ``torch_pruning`` for
    arbitrary graphs.  Remaining sparsity in the kept rows (e.g. from an
    unstructured criterion) is preserved.
    """
    out = model if inplace else clone_model(model)
    remove(out)
    seqs = [m for m in out.modules() if isinstance(m, nn.Sequential)]
    for s in seqs:
        _thin_sequential(s)
    return out
