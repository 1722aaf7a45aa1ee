"""Linear layers that choose their format on the rows they really see.

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

The module is for inference: its dense weight and the sparse copies it builds
are separate parameters, so train the dense model (or a frozen one), and
freeze before saving a ``state_dict`` (its keys depend on what was decided).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from ..planner import DEFAULT_MARGIN
from ._format_choice import FormatChoice, choose_format
from .modules import SparseLinear, _linear_weight, apply_activation, is_hf_conv1d

__all__ = ["AutoSparseLinear", "RowDecision", "freeze", "row_bucket"]


def row_bucket(rows: int) -> int:
    """The power of two at or above ``rows``: row counts in one bucket share a decision."""
    return 1 << max(0, rows - 1).bit_length()


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


class AutoSparseLinear(nn.Module):
    """An ``nn.Linear`` that decides dense, CSR or BSR per row bucket on its first forward.

    Build it from a pruned Linear (zeros, or a ``torch.nn.utils.prune`` mask);
    ``linear`` is kept as the ``dense`` submodule and the sparse modules it
    chooses are built from it. ``min_speedup``: a sparse choice measured below
    this stays dense.
    """

    def __init__(self, linear: nn.Linear, *, min_speedup: float = 1.0):
        super().__init__()
        if not (isinstance(linear, nn.Linear) or is_hf_conv1d(linear)):
            raise TypeError(f"AutoSparseLinear needs an nn.Linear (or transformers' Conv1D), "
                            f"got {type(linear).__name__}")
        self.out_features, self.in_features = _linear_weight(linear)[0].shape
        self.min_speedup = min_speedup
        self.dense = linear
        self.variants = nn.ModuleDict()  # label ('csr', 'bsr4x1', ...) -> SparseLinear
        self.decisions: dict[int, RowDecision] = {}  # row bucket -> decision
        self.frozen = False
        self._activation: str | None = None

    @property
    def activation(self) -> str | None:
        """Applied to the output of whichever module runs (see modules.ACTIVATIONS): by
        the sparse variants in their kernel's epilogue, after the dense Linear by torch."""
        return self._activation

    @activation.setter
    def activation(self, activation: str | None) -> None:
        self._activation = activation
        for variant in self.variants.values():
            variant.activation = activation  # type: ignore[assignment]  # a SparseLinear

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
        group = self._shared_input
        if group is not None:
            stacked = group.output(self, x)
            if stacked is not None:
                return stacked
        module = self._module_for(x)
        if module is self.dense:
            return apply_activation(module(x), self._activation)
        return module(x)  # a variant, which holds the activation; called so its hooks run

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
            variant = SparseLinear.from_dense(self.dense, choice=choice)
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
        return self.decisions[min(self.decisions, key=lambda b: (abs(b.bit_length()
                                                                    - bucket.bit_length()), -b))]

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
        activation = (nn.ReLU() if self.activation == "relu"
                      else nn.GELU("tanh" if self.activation == "gelu_tanh" else "none"))
        return nn.Sequential(module, activation)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, " \
               f"{self.describe()}"


def freeze(model: nn.Module) -> nn.Module:
    """Stop all timing in ``model``: fix each :class:`AutoSparseLinear`'s decisions.

    A module whose decided buckets all run the same module (or that never ran:
    dense) is replaced by that ``nn.Linear``/:class:`SparseLinear`; one whose
    buckets differ, or whose siblings compute it with theirs in one stacked
    product (``shared_input.py``; that product's choices are fixed too), stays,
    frozen: it drops the sparse modules it no longer uses
    and maps unseen row counts to the nearest decided bucket. Returns ``model``
    (changed in place). Freeze after a forward pass on representative inputs,
    before ``torch.export``, ``torch.compile`` or a reproducible run.
    """
    if isinstance(model, AutoSparseLinear):
        raise TypeError("freeze converts the layers inside a model; for one AutoSparseLinear "
                        "use its resolved() module")
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
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
                setattr(parent, name, resolved)
    return model
