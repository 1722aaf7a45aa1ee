"""Layers that choose their format on the inputs they really see.

Whether a sparse weight beats dense BLAS, and which block shape wins, depends
on how many rows of input the product gets: a BERT layer's Linear sees 128
rows per sequence, an MLP's sees the batch. :func:`sparsify` called without
``batch_hint`` or ``example_inputs`` cannot know that number, so it puts an
:class:`AutoSparseLinear` in place of each candidate Linear. On the first
forward pass whose row count (the input's leading dimensions, flattened)
falls in a new bucket (:func:`row_bucket`, powers of two), the module has
:func:`sparsegemm.plan` time dense, CSR and the BSR block shapes at that row
count, keeps the decision for the bucket and from then on runs the chosen
module. The decisions show in ``model.sparsegemm_report`` and in the module's
repr.

:func:`freeze` stops all timing: each AutoSparseLinear whose buckets agree is
replaced by the one module it chose (an ``nn.Linear`` or a
:class:`SparseLinear`), ready for ``torch.export`` or ``torch.compile``; one
whose buckets disagree keeps its decided modules and maps an unseen bucket to
the nearest decided one. Under ``torch.compile`` (or any tracing) an unfrozen
module never times either: it runs what it has already decided, or dense.

:class:`AutoSparseConv2d` does the same for a convolution: on its first
forward per input shape (batch bucketed as above, exact height and width) it
times the dense convolution against its CSR :class:`SparseConv2d` on that
input, as they run, and keeps the faster.

The modules are for inference: a module's dense weight and the sparse copies
it builds are separate parameters, so train the dense model (or a frozen one),
and freeze before saving a ``state_dict`` (its keys depend on what was decided).
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Callable, Generic, TypeVar

import torch
from torch import Tensor, nn

from ..planner import DEFAULT_MARGIN
from ..timing import median_seconds
from . import feed_forward
from ._format_choice import FormatChoice, choose_format
from .feed_forward import _FED_OUTPUT, _FEEDS
from .modules import (
    SparseConv2d,
    SparseLinear,
    _linear_weight,
    apply_activation,
    conv_holding,
    fold_batchnorm_into_conv,
    is_hf_conv1d,
    linked,
    masked_weight,
    output_computed_elsewhere,
)

__all__ = ["AutoSparseConv2d", "AutoSparseLinear", "ConvDecision", "RowDecision", "freeze",
           "row_bucket", "time_convolution"]


def row_bucket(rows: int) -> int:
    """The power of two at or above ``rows``: row counts in one bucket share a decision."""
    return 1 << max(0, rows - 1).bit_length()


def nearest_bucket(buckets: Iterable[int], bucket: int) -> int:
    """The one of ``buckets`` (decided, not empty) closest to ``bucket`` in powers of two,
    the larger on a tie."""
    return min(buckets, key=lambda b: (abs(b.bit_length() - bucket.bit_length()), -b))


@dataclass(frozen=True)
class RowDecision:
    """What an :class:`AutoSparseLinear` runs for one row bucket, and why."""

    rows: int  # the row count it was timed at
    choice: FormatChoice  # 'dense', or the sparse format and blocksize
    reason: str = ""  # why it stayed dense

    def describe(self) -> str:
        if self.choice.format == "dense":
            return f"rows {self.rows}: dense ({self.reason})"
        return f"rows {self.rows}: {self.choice.label} {self.choice.speedup:.2f}x"


DenseModule = TypeVar("DenseModule", bound=nn.Module)


class _DecidingLayer(nn.Module, Generic[DenseModule]):
    """What both auto layers share: a ``dense`` module, sparse ``variants`` built from it,
    and an activation that whichever of them runs applies."""

    dense: DenseModule
    variants: nn.ModuleDict
    _activation: str | None

    @property
    def activation(self) -> str | None:
        """Applied to the output of whichever module runs (see modules.ACTIVATIONS): by
        the sparse variants in their kernel's epilogue, after the dense module by torch."""
        return self._activation

    @activation.setter
    def activation(self, activation: str | None) -> None:
        self._activation = activation
        for variant in self.variants.values():
            variant.activation = activation  # type: ignore[assignment]  # a sparse module

    def _run(self, module: nn.Module, x: Tensor) -> Tensor:
        """``module(x)`` with the activation: a variant applies it itself (and is called
        as a module so its hooks run), the dense module has it applied after."""
        if module is self.dense:
            return apply_activation(module(x), self._activation)
        return module(x)


class AutoSparseLinear(_DecidingLayer[nn.Linear]):
    """An ``nn.Linear`` that decides dense, CSR or BSR per row bucket on its first forward.

    Build it from a pruned Linear (zeros, or a ``torch.nn.utils.prune`` mask);
    ``linear`` is kept as the ``dense`` submodule and the sparse modules it
    chooses are built from it. ``min_speedup``: a sparse choice measured below
    this stays dense. ``weight_dtype=torch.bfloat16`` stores the sparse choices'
    values as bfloat16 (see :meth:`SparseLinear.from_dense`); the dense one stays as
    it is.
    """

    def __init__(self, linear: nn.Linear, *, min_speedup: float = 1.0,
                 weight_dtype: torch.dtype | None = None):
        super().__init__()
        if not (isinstance(linear, nn.Linear) or is_hf_conv1d(linear)):
            raise TypeError(f"AutoSparseLinear needs an nn.Linear (or transformers' Conv1D), "
                            f"got {type(linear).__name__}")
        self.out_features, self.in_features = _linear_weight(linear)[0].shape
        self.min_speedup = min_speedup
        self.weight_dtype = weight_dtype
        self.dense = linear
        self.variants = nn.ModuleDict()  # label ('csr', 'bsr4x1', ...) -> SparseLinear
        self.decisions: dict[int, RowDecision] = {}  # row bucket -> decision
        self.frozen = False
        self._activation: str | None = None

    @property
    def weight(self) -> Tensor:
        """The (out_features, in_features) weight it decides for, for code that reads
        ``module.weight`` (``nn.TransformerEncoderLayer``, packed attention views)."""
        return _linear_weight(self.dense)[0]

    @property
    def bias(self) -> Tensor | None:
        return self.dense.bias

    #: Set by sparsify on siblings that may read one input (see shared_input.py).
    _shared_input: Any = None

    def forward(self, x: Tensor) -> Tensor:
        links = self.__dict__  # checked here: a call costs more than these lookups
        if self._shared_input is not None or _FEEDS in links or _FED_OUTPUT in links:
            computed = output_computed_elsewhere(self, x)
            if computed is not None:
                return computed
        return self._run(self._module_for(x), x)

    def direct_csr_operands(self, x: Tensor) -> tuple | None:
        """Its chosen module's :meth:`SparseLinear.direct_csr_operands` for ``x`` (deciding
        for ``x``'s rows if it has not), or None where it runs dense, another format or
        through a link."""
        if linked(self):
            return None
        module = self._module_for(x)
        if module is self.dense:
            return None
        return module.direct_csr_operands(x)  # type: ignore[operator]

    def _module_for(self, x: Tensor) -> nn.Module:
        """The module that runs ``x``: its row bucket's decision, made now if needed."""
        if type(x) is not Tensor and not torch.compiler.is_compiling():
            # A proxy or tensor subclass (fx, export): no row count to time; never time.
            return self._module(self._nearest(None))
        rows = x.numel() // self.in_features if self.in_features and x.dim() else 0
        bucket = row_bucket(rows)
        decision = self.decisions.get(bucket)
        if decision is None:
            if self.frozen or torch.compiler.is_compiling():
                return self._module(self._nearest(bucket))
            decision = self.decide(rows)
        return self._module(decision)

    def decide(self, rows: int) -> RowDecision:
        """Time the candidates at ``rows`` rows and keep the decision for its bucket."""
        with torch.no_grad():
            weight, _ = _linear_weight(self.dense)  # (out, in), also for a Conv1D
            choice = choose_format(weight, "auto", None, batch_hint=max(1, rows))
        reason = ""
        if choice.format == "dense":
            reason = choice.why_dense(DEFAULT_MARGIN)
        elif choice.speedup is not None and choice.speedup < self.min_speedup:
            reason = f"measured {choice.speedup:.2f}x < min_speedup {self.min_speedup:.2f}x"
            choice = FormatChoice("dense", None, choice.speedup, choice.planned,
                                  cached=choice.cached, fastest_sparse=choice.fastest_sparse)
        if choice.format != "dense" and choice.label not in self.variants:
            variant = SparseLinear.from_dense(self.dense, choice=choice,
                                              weight_dtype=self.weight_dtype)
            variant.activation = self._activation
            self.variants[choice.label] = variant.train(self.training)
        decision = RowDecision(rows, choice, reason)
        self.decisions[row_bucket(rows)] = decision
        return decision

    def _nearest(self, bucket: int | None) -> RowDecision | None:
        """The decision of the closest decided bucket, or of the largest one when the
        bucket is unknown (None: none decided, run dense)."""
        if not self.decisions:
            return None
        if bucket is None:
            return self.decisions[max(self.decisions)]
        return self.decisions[nearest_bucket(self.decisions, bucket)]

    def _module(self, decision: RowDecision | None) -> nn.Module:
        if decision is None or decision.choice.format == "dense":
            return self.dense
        return self.variants[decision.choice.label]

    def describe(self) -> str:
        """Its decisions, one per row bucket, or that it has not decided yet."""
        group = self._shared_input
        if group is not None and group.state == "stacked":
            return group.describe(self)
        if not self.decisions:
            return "auto: decides on the first forward of each row count (see freeze())"
        frozen = " (frozen)" if self.frozen else ""
        return "auto" + frozen + ": " + "; ".join(self.decisions[bucket].describe()
                                                  for bucket in sorted(self.decisions))

    def resolved(self) -> nn.Module | None:
        """The single module every decided bucket runs, with the fused activation, or None
        if the buckets differ. A dense choice with an activation is an ``nn.Sequential``."""
        modules = {id(self._module(d)): self._module(d) for d in self.decisions.values()}
        if len(modules) > 1:
            return None
        module = next(iter(modules.values())) if modules else self.dense
        if self.activation is None:
            return module
        if isinstance(module, SparseLinear):
            module.activation = self.activation
            return module
        return nn.Sequential(module, _activation_module(self.activation))

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, " \
               f"{self.describe()}"


def _median_seconds(call: Callable[[], Any], repeats: int = 7) -> float:
    return median_seconds(call, repeats)


def time_convolution(dense: Callable[[], Any], sparse: Callable[[], Any]) -> float:
    """Dense time over sparse time of one convolution's two forms, each called as it will
    run: medians of interleaved rounds, so a slow spell of the machine hits both."""
    dense_times, sparse_times = [], []
    for _ in range(3):
        dense_times.append(_median_seconds(dense))
        sparse_times.append(_median_seconds(sparse))
    return statistics.median(dense_times) / statistics.median(sparse_times)


#: What an :class:`AutoSparseConv2d` decides per: (batch bucket, height, width) of its input.
ShapeKey = tuple[int, int, int]


@dataclass(frozen=True)
class ConvDecision:
    """What an :class:`AutoSparseConv2d` runs for one input shape, and why."""

    shape: tuple[int, ...]  # the input shape it was timed on
    format: str  # 'dense' or 'csr'
    speedup: float  # dense time over the CSR convolution's
    reason: str = ""  # why it stayed dense

    def describe(self) -> str:
        shape = "x".join(str(size) for size in self.shape)
        if self.format == "dense":
            return f"input {shape}: dense ({self.reason})"
        return f"input {shape}: csr {self.speedup:.2f}x"


class AutoSparseConv2d(_DecidingLayer[nn.Conv2d]):
    """An ``nn.Conv2d`` that times itself dense against CSR on its first forward per
    input shape and keeps the faster.

    Build it from a pruned ``nn.Conv2d`` (groups=1, zero padding; zeros or a
    ``torch.nn.utils.prune`` mask): it holds ``dense``, a plain copy with the pruned
    entries zero, and builds ``variants['csr']``, a :class:`SparseConv2d`, the first
    time it times. ``min_speedup``: a CSR form measured below this (and below the
    planner's margin) stays dense. :meth:`fold_batchnorm` and ``activation`` apply to
    both forms, so a BatchNorm and ReLU that follow it are fused whichever runs.
    """

    def __init__(self, conv: nn.Conv2d, *, min_speedup: float = 1.0):
        super().__init__()
        if not isinstance(conv, nn.Conv2d):
            raise TypeError(f"AutoSparseConv2d needs an nn.Conv2d, got {type(conv).__name__}")
        if conv.groups != 1 or conv.padding_mode != "zeros":
            raise ValueError("AutoSparseConv2d supports groups=1 and padding_mode='zeros' only")
        weight, _ = masked_weight(conv)
        bias = None if conv.bias is None else conv.bias.detach()
        self.dense = conv_holding(conv, weight, bias).train(conv.training)
        self.dense.requires_grad_(any(p.requires_grad for p in conv.parameters()))
        self.in_channels, self.out_channels = conv.in_channels, conv.out_channels
        self.min_speedup = min_speedup
        self.variants = nn.ModuleDict()  # 'csr' -> SparseConv2d, once timed
        self.decisions: dict[ShapeKey, ConvDecision] = {}
        self.frozen = False
        self._activation: str | None = None

    @property
    def weight(self) -> Tensor:
        return self.dense.weight

    @property
    def bias(self) -> Tensor | None:
        return self.dense.bias

    def fold_batchnorm(self, bn: nn.BatchNorm2d) -> None:
        """Fold eval-mode ``bn``, which follows this convolution, into both forms."""
        fold_batchnorm_into_conv(self.dense, bn)
        for variant in self.variants.values():
            variant.fold_batchnorm(bn)  # type: ignore[operator]  # a SparseConv2d

    def forward(self, x: Tensor) -> Tensor:
        return self._run(self._module_for(x), x)

    @staticmethod
    def _key(x: Tensor) -> ShapeKey | None:
        if x.dim() not in (3, 4):
            return None  # not a convolution's input: let the dense module raise
        batch = x.shape[0] if x.dim() == 4 else 1
        return row_bucket(batch), x.shape[-2], x.shape[-1]

    def _module_for(self, x: Tensor) -> nn.Module:
        """The form that runs ``x``: its shape's decision, made now if needed."""
        if type(x) is not Tensor and not torch.compiler.is_compiling():
            return self._module(self._latest())  # a proxy (fx, export): never time
        key = self._key(x)
        if key is None:
            return self.dense
        decision = self.decisions.get(key)
        if decision is None:
            if self.frozen or torch.compiler.is_compiling():
                return self._module(self._latest())
            decision = self.decide(x)
        return self._module(decision)

    def decide(self, x: Tensor) -> ConvDecision:
        """Time both forms on ``x`` and keep the decision for its shape."""
        key = self._key(x)
        if key is None:
            raise ValueError(f"expected a (N, C, H, W) or (C, H, W) input, got {tuple(x.shape)}")
        sparse = self._sparse()
        with torch.no_grad():
            speedup = time_convolution(lambda: apply_activation(self.dense(x), self._activation),
                                       lambda: sparse(x))
        threshold = max(DEFAULT_MARGIN, self.min_speedup)
        fmt, reason = "csr", ""
        if speedup < threshold:
            fmt = "dense"
            reason = (f"csr measured {speedup:.2f}x, below the "
                      f"{'planner' if threshold == DEFAULT_MARGIN else 'min_speedup'}'s "
                      f"{threshold:.2f}x margin")
        decision = ConvDecision(tuple(x.shape), fmt, speedup, reason)
        self.decisions[key] = decision
        if all(d.format == "dense" for d in self.decisions.values()):
            del self.variants["csr"]  # no sparse copy kept for nothing
        return decision

    def _sparse(self) -> SparseConv2d:
        if "csr" not in self.variants:
            with torch.no_grad():
                variant = SparseConv2d.from_dense(self.dense, format="csr")
            variant.activation = self._activation
            self.variants["csr"] = variant.train(self.training)
        return self.variants["csr"]  # type: ignore[return-value]

    def _latest(self) -> ConvDecision | None:
        return next(reversed(self.decisions.values()), None)

    def _module(self, decision: ConvDecision | None) -> nn.Module:
        if decision is None or decision.format == "dense":
            return self.dense
        return self._sparse()

    def describe(self) -> str:
        if not self.decisions:
            return "auto: times dense against csr on the first forward of each input shape"
        frozen = " (frozen)" if self.frozen else ""
        return "auto" + frozen + ": " + "; ".join(d.describe() for d in self.decisions.values())

    def resolved(self) -> nn.Module | None:
        """The one form every decided shape runs, with the fused activation, or None if
        they differ. A dense choice with an activation is an ``nn.Sequential``."""
        formats = {decision.format for decision in self.decisions.values()} or {"dense"}
        if len(formats) > 1:
            return None
        if formats == {"csr"}:
            return self._sparse()
        if self._activation is None:
            return self.dense
        return nn.Sequential(self.dense, _activation_module(self._activation))

    def extra_repr(self) -> str:
        return f"{self.in_channels}, {self.out_channels}, {self.describe()}"


def _activation_module(activation: str) -> nn.Module:
    """The torch module computing ``activation`` (a name of modules.ACTIVATIONS)."""
    if activation == "relu":
        return nn.ReLU()
    return nn.GELU("tanh" if activation == "gelu_tanh" else "none")


def freeze(model: nn.Module) -> nn.Module:
    """Stop all timing in ``model``: fix the decisions of each :class:`AutoSparseLinear`
    and :class:`AutoSparseConv2d`.

    A module whose decided buckets all run the same module (or that never ran:
    dense) is replaced by that ``nn.Linear``/:class:`SparseLinear`; one whose
    buckets differ, or whose siblings compute it with theirs in one stacked
    product (``shared_input.py``; that product's choices are fixed too), stays,
    frozen: it drops the sparse modules it no longer uses
    and maps unseen row counts to the nearest decided bucket. Each
    :class:`AutoSparseConv2d` is replaced alike (by an ``nn.Conv2d`` or a
    :class:`SparseConv2d`), or stays, frozen, running its latest decision on
    unseen input shapes. Each :class:`SparseLinearInt8` stops timing its kernels
    (an unseen row count runs the nearest decided one, or the bitmap kernel). Returns ``model``
    (changed in place). Freeze after a forward pass on representative inputs,
    before ``torch.export``, ``torch.compile`` or a reproducible run.
    """
    if isinstance(model, (AutoSparseLinear, AutoSparseConv2d)):
        raise TypeError(f"freeze converts the layers inside a model; for one "
                        f"{type(model).__name__} use its resolved() module")
    from .quantized import SparseLinearInt8  # it imports this module

    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, SparseLinearInt8):
                child.frozen = True  # its kernels take the same operands: nothing to replace
                continue
            if isinstance(child, AutoSparseConv2d):
                child.frozen = True
                resolved = child.resolved()
                if resolved is not None:
                    setattr(parent, name, resolved)
                continue
            if not isinstance(child, AutoSparseLinear):
                continue
            child.frozen = True
            used = {d.choice.label for d in child.decisions.values()}
            for label in [label for label in child.variants if label not in used]:
                del child.variants[label]
            group = child._shared_input
            if group is not None and group.state == "stacked":
                group.freeze()  # the member stays: its group computes it
                continue
            resolved = child.resolved()
            if resolved is not None:
                feed_forward.carry_link(child, resolved)
                setattr(parent, name, resolved)
    return model
