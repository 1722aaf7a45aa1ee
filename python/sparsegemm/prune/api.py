"""Scope of pruning: which layers, how much, ranked globally or per layer; masks; remove.

Masks use ``torch.nn.utils.prune``'s own reparametrisation (``CustomFromMask``):
``weight_orig`` parameter + ``weight_mask`` buffer + forward pre-hook.  So
``torch.nn.utils.prune.remove`` works on our models, and a model pruned with
torch's API is treated the same way here (its mask is respected and updated).
"""

from __future__ import annotations

import copy
import math
import numbers
import warnings
from collections.abc import Mapping
from typing import Callable, Optional

from torch.nn.utils import prune as tprune

import torch
from torch import nn

from .. import pruning as core
from .criteria import (
    Criterion,
    Magnitude,
    _unit_shape,
    effective_weight,
    existing_mask,
    expand_units,
    unit_already_pruned,
)

__all__ = [
    "PRUNABLE_TYPES",
    "prunable_layers",
    "prune_model",
    "prune_module",
    "apply_mask",
    "apply_masks",
    "clone_model",
    "keep_masks",
    "remove",
    "sparsity",
    "compute_num_to_prune",
]

Amount = core.Amount
#: Module types pruned by default (weights with >= 2 dims).
PRUNABLE_TYPES: tuple[type, ...] = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


# ---------------------------------------------------------------- amounts
def compute_num_to_prune(amount: Amount, n: int) -> int:
    """``amount`` as in ``torch.nn.utils.prune``: a float fraction in [0, 1] or an int count.

    The fraction is of all ``n`` units, already-pruned ones included (see
    :mod:`sparsegemm.pruning` for how that differs from torch's iterative pruning).
    """
    return core.num_to_prune(amount, n)


def _resolve_criterion(criterion) -> Criterion:
    if isinstance(criterion, Criterion):
        return criterion
    if criterion in ("l1", "L1"):
        return Magnitude(1)
    if criterion in ("l2", "L2"):
        return Magnitude(2)
    raise ValueError(f"criterion must be a Criterion instance, 'l1' or 'l2'; got {criterion!r}")


# ---------------------------------------------------------------- layers
def prunable_layers(
    model: nn.Module,
    *,
    filter_fn: Optional[Callable[[nn.Module, str], bool]] = None,
    skip_first_last: bool = True,
    name: str = "weight",
) -> dict[str, nn.Module]:
    """Ordered ``{qualified_name: module}`` of layers to prune.

    By default: every Linear/Conv1d/2d/3d, in ``named_modules()`` order (which
    for ``nn.Sequential`` chains is execution order), minus the first and the
    last (``skip_first_last=True``) because those are usually the most
    sensitive and the cheapest.  ``filter_fn(module, name) -> bool`` (the
    ``torchao`` convention) replaces the type test.
    """
    out: dict[str, nn.Module] = {}
    for qname, mod in model.named_modules():
        if filter_fn is not None:
            ok = filter_fn(mod, qname)
        else:
            ok = isinstance(mod, PRUNABLE_TYPES)
        if ok and (
            hasattr(mod, name + "_orig") or isinstance(getattr(mod, name, None), torch.Tensor)
        ):
            out[qname] = mod
    if skip_first_last:
        names = list(out)
        for n in names[:1] + names[-1:]:
            out.pop(n, None)
    return out


# ---------------------------------------------------------------- masks
def apply_mask(module: nn.Module, mask: torch.Tensor, name: str = "weight") -> nn.Module:
    """Attach (or update) ``mask`` on ``module.<name>`` via ``torch.nn.utils.prune``.

    New masks go through :func:`torch.nn.utils.prune.custom_from_mask`.  If
    a mask is already attached (by us or by torch), it is combined with the
    new one (elementwise AND; pruning never revives weights) and updated in
    place, so no extra hook is stacked.
    """
    old = getattr(module, name + "_mask", None)
    if old is None:
        tprune.custom_from_mask(module, name, mask.to(torch.bool))
        return module
    with torch.no_grad():
        old.mul_(mask.to(old.dtype))
        # refresh the plain attribute now (the pre-hook refreshes it on forward)
        setattr(module, name, getattr(module, name + "_orig") * old)
    return module


def apply_masks(model: nn.Module) -> nn.Module:
    """Zero the masked entries of every ``<name>_orig`` and refresh ``<name>``.

    Call after each optimizer step (or use :func:`keep_masks`) so that pruned
    weights stay exactly zero in the stored parameters too, also under weight
    decay, momentum or optimizers that touch every entry.
    """
    with torch.no_grad():
        for mod in model.modules():
            for hook in mod._forward_pre_hooks.values():
                if isinstance(hook, tprune.BasePruningMethod):
                    n = hook._tensor_name
                    mask = getattr(mod, n + "_mask")
                    orig = getattr(mod, n + "_orig")
                    orig.mul_(mask)
                    setattr(mod, n, orig * mask)
    return model


def keep_masks(optimizer: torch.optim.Optimizer, model: nn.Module):
    """Hold masks fixed during fine-tuning: re-apply them after every ``optimizer.step()``.

    Returns the hook handle; call ``.remove()`` on it to stop.
    """
    return optimizer.register_step_post_hook(lambda opt, args, kwargs: apply_masks(model))


def remove(model: nn.Module, name: Optional[str] = None) -> nn.Module:
    """Finalise: make pruning permanent and drop masks/hooks (``torch.nn.utils.prune.remove``).

    Works on a single module or a whole model (every pruned tensor in every
    submodule; ``name`` restricts it to that tensor name).  Afterwards each
    weight is a plain dense parameter with zeros: the hand-over contract.
    """
    for mod in model.modules():
        names = [
            h._tensor_name
            for h in mod._forward_pre_hooks.values()
            if isinstance(h, tprune.BasePruningMethod)
        ]
        for n in names:
            if name is None or n == name:
                tprune.remove(mod, n)
    return model


def clone_model(model: nn.Module) -> nn.Module:
    """``copy.deepcopy`` that also works on a pruned model after a forward pass.

    (After a forward with grad enabled, torch's pruning hook leaves
    ``module.weight`` as a non-leaf tensor, which ``deepcopy`` refuses.  The
    attribute is refreshed here without grad; the hook recomputes it on the
    next forward anyway.)
    """
    with torch.no_grad():
        for mod in model.modules():
            for hook in mod._forward_pre_hooks.values():
                if isinstance(hook, tprune.BasePruningMethod):
                    n = hook._tensor_name
                    setattr(mod, n, getattr(mod, n + "_orig") * getattr(mod, n + "_mask"))
    return copy.deepcopy(model)


def sparsity(model: nn.Module, name: str = "weight", *, layers=None) -> dict[str, float]:
    """Fraction of zeros of the effective weight of each prunable layer, plus ``"total"``."""
    if layers is None:
        layers = prunable_layers(model, skip_first_last=False, name=name)
    out: dict[str, float] = {}
    z = n = 0
    for lname, mod in layers.items():
        w = effective_weight(mod, name)
        lz = int((w == 0).sum())
        out[lname] = lz / w.numel()
        z += lz
        n += w.numel()
    out["total"] = z / n if n else 0.0
    return out


# ---------------------------------------------------------------- pruning
def _unit_scores(crit: Criterion, mod: nn.Module, name: str, lname: str) -> torch.Tensor:
    s = crit.scores(mod, name, lname).detach().to(torch.float64)
    w = getattr(mod, name + "_orig", None)
    expected = _unit_shape(crit.granularity, (w if w is not None else getattr(mod, name)).shape)
    if tuple(s.shape) != expected:
        raise ValueError(
            f"{type(crit).__name__} gave scores of shape {tuple(s.shape)} for layer {lname!r}; "
            f"expected {expected} for granularity {crit.granularity!r} (for activation "
            "criteria: does the observed module's output have the layer's channels in dim 1?)"
        )
    old = existing_mask(mod, name)
    if old is not None:
        s = s.masked_fill(unit_already_pruned(old, crit.granularity), -math.inf)
    return s


def _keep_lowest_pruned(scores: list[torch.Tensor], k: int) -> list[torch.Tensor]:
    """Keep-masks for score tensors, pruning exactly the ``k`` lowest over all of them.

    Ranked by the numpy core, so ties go to the earlier unit as everywhere else.
    """
    flat = torch.cat([s.detach().reshape(-1).cpu().double() for s in scores]).numpy()
    keep = torch.ones(flat.size, dtype=torch.bool)
    keep[torch.from_numpy(core.lowest_units(flat, k))] = False
    out, i = [], 0
    for s in scores:
        out.append(keep[i : i + s.numel()].reshape(s.shape).to(s.device))
        i += s.numel()
    return out


def _prune_layerwise(crit, mod, name, lname, amount) -> None:
    if not crit.rankable:
        apply_mask(mod, crit.mask(mod, name), name)
        return
    s = _unit_scores(crit, mod, name, lname)
    k = compute_num_to_prune(amount, s.numel())
    (keep,) = _keep_lowest_pruned([s], k)
    w = getattr(mod, name + "_orig", None)
    shape = (w if w is not None else getattr(mod, name)).shape
    apply_mask(mod, expand_units(keep, crit.granularity, shape), name)


def prune_module(
    module: nn.Module, amount: Amount = 0.5, criterion="l1", name: str = "weight"
) -> nn.Module:
    """Prune one tensor of one module, like ``torch.nn.utils.prune.l1_unstructured``.

    ``amount`` (fraction or count of *units*: elements, blocks or channels)
    is the **total** sparsity of the tensor after the call, not a fraction of
    what is left as in repeated ``torch.nn.utils.prune`` calls: this is what a
    schedule needs.  Already-pruned units count towards it and stay pruned.
    """
    crit = _resolve_criterion(criterion)
    crit.prepare(module, {"": module})
    _prune_layerwise(crit, module, name, "", amount)
    return module


def prune_model(
    model: nn.Module,
    amount: Amount = 0.5,
    criterion="l1",
    *,
    scope: str = "global",
    overrides: Optional[Mapping[str, Optional[Amount]]] = None,
    skip_first_last: Optional[bool] = None,
    filter_fn: Optional[Callable[[nn.Module, str], bool]] = None,
    name: str = "weight",
) -> dict[str, nn.Module]:
    """Prune a model's layers; returns the ``{name: module}`` that were pruned.

    By default the first and the last prunable layer stay dense
    (``skip_first_last``), so a fractional ``amount`` is met by the layers
    pruned, not by the whole model: a 2-layer MLP gets nothing pruned, and
    BERT at 0.9 ends near 0.8 overall. A ``UserWarning`` names the layers left
    dense when nothing is pruned, or when (with ``skip_first_last`` left at
    its default and no ``overrides``) the prunable layers end less sparse
    than a fractional ``amount``; pass
    ``skip_first_last=False`` to prune every layer, or ``True`` to keep the
    skip without the warning.

    Args:
        amount: fraction in [0, 1] or integer count of units (elements,
            blocks or channels, per the criterion's granularity) to have
            pruned after the call (total, not incremental).  With
            ``scope="global"`` it applies to the pooled units of all layers,
            like ``torch.nn.utils.prune.global_unstructured``; with
            ``scope="layer"`` to each layer separately.  Ignored by
            :class:`~sparsegemm.prune.NM`.
        criterion: ``"l1"``/``"l2"`` (unstructured magnitude) or a
            :class:`~sparsegemm.prune.Criterion` instance.
        scope: ``"global"`` or ``"layer"``.
        overrides: ``{layer_name: amount}``; these layers are pruned on
            their own with that amount (and leave the global pool).  An
            override also selects a layer that ``skip_first_last`` or
            ``filter_fn`` would have left out; ``None`` leaves the layer dense.
        skip_first_last: leave the first and last prunable layer dense
            (default True; see above for the warning).
        filter_fn: ``f(module, qualified_name) -> bool`` choosing layers.

    Global ranking compares raw scores across layers; for channel criteria
    norms scale with fan-in, so prefer ``scope="layer"`` there unless your
    scores are comparable.
    """
    crit = _resolve_criterion(criterion)
    if scope not in ("global", "layer"):
        raise ValueError(f"scope must be 'global' or 'layer', got {scope!r}")
    overrides = dict(overrides or {})
    skip_chosen = skip_first_last is not None
    skip_first_last = True if skip_first_last is None else skip_first_last
    layers = prunable_layers(model, filter_fn=filter_fn, skip_first_last=skip_first_last, name=name)
    all_modules = dict(model.named_modules())
    for lname in overrides:
        if lname not in all_modules:
            raise KeyError(f"override for unknown layer {lname!r}")
        layers.setdefault(lname, all_modules[lname])
    pool = {n: m for n, m in layers.items() if n not in overrides}
    targets = {n: m for n, m in layers.items() if overrides.get(n, amount) is not None}
    crit.prepare(model, targets)

    for lname, amt in overrides.items():
        if amt is not None:
            _prune_layerwise(crit, layers[lname], name, lname, amt)

    if scope == "layer" or not crit.rankable:
        for lname, mod in pool.items():
            _prune_layerwise(crit, mod, name, lname, amount)
    elif pool:
        scores = [_unit_scores(crit, m, name, n) for n, m in pool.items()]
        k = compute_num_to_prune(amount, sum(s.numel() for s in scores))
        keeps = _keep_lowest_pruned(scores, k)
        for mod, keep in zip(pool.values(), keeps):
            w = getattr(mod, name + "_orig", None)
            shape = (w if w is not None else getattr(mod, name)).shape
            apply_mask(mod, expand_units(keep, crit.granularity, shape), name)
    # With overrides the caller set each layer's amount; there is no one target to miss.
    _warn_if_short(model, amount, crit, targets, warn_short=not skip_chosen and not overrides,
                   filter_fn=filter_fn, name=name)
    return targets


def _warn_if_short(model: nn.Module, amount: Amount, crit: Criterion,
                   targets: dict[str, nn.Module], *, warn_short: bool,
                   filter_fn: Optional[Callable[[nn.Module, str], bool]], name: str) -> None:
    """Warn when nothing was pruned, or (``warn_short``) when the prunable layers
    end less sparse than a fractional ``amount``; name the layers left dense."""
    candidates = prunable_layers(model, filter_fn=filter_fn, skip_first_last=False, name=name)
    dense = [n for n in candidates if n not in targets]
    if not candidates:
        return
    if not targets:
        warnings.warn(f"prune_model pruned nothing: the prunable layers {dense} were all left "
                      f"dense (skip_first_last leaves the first and the last; pass "
                      f"skip_first_last=False to prune them)", UserWarning, stacklevel=3)
        return
    if not warn_short or not crit.rankable or isinstance(amount, numbers.Integral):
        return
    achieved = sparsity(model, name, layers=candidates)["total"]
    if achieved < float(amount) - 0.005:
        warnings.warn(f"prune_model was asked for {float(amount):.1%} but the prunable layers are "
                      f"{achieved:.1%} sparse: {dense} stayed dense (skip_first_last leaves the "
                      f"first and the last). Pass skip_first_last=False to prune them, or True "
                      f"to keep them dense without this warning", UserWarning, stacklevel=3)
