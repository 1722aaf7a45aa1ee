"""Convert the sparse-enough layers of a model to sparse modules, in place.

Selection, per layer (``nn.Linear`` and subclasses that keep its forward,
Hugging Face's ``Conv1D`` (GPT-2), ``nn.Conv2d`` with groups=1 and zero
padding, and the four projections of ``nn.MultiheadAttention``; a subclass of
``nn.Linear`` or ``nn.Conv2d`` with its own forward is listed, not converted):

1. ``filter_fn(module, fully_qualified_name)`` must return True (default: all).
2. The weight's sparsity must be at least ``min_sparsity``.
3. With ``format='auto'``, :func:`sparsegemm.plan` times the layer at
   ``batch_hint`` input rows (dense, CSR and, for Linear layers, BSR block
   shapes); the layer takes the format and blocksize it picks, and stays dense
   when the planner keeps it dense or measures less than ``min_speedup``.
   With ``format='csr'`` or ``'bsr'`` nothing is timed and the sparsity
   threshold alone decides: the default ``DEFAULT_MIN_SPARSITY = 0.7`` is a
   conservative guess for where unstructured CSR starts to beat dense BLAS,
   not a calibrated figure. Convolutions store CSR only (also under 'bsr').
   A Linear-shaped timing says little about a convolution (its sparse kernel
   is a direct convolution, its dense one is torch's), so under 'auto' a
   Conv2d is timed as itself, dense against sparse, on the input it sees in a
   forward pass of ``example_inputs``; without them it is converted untimed.

The report (returned by :func:`sparsify` as ``model.sparsegemm_report``) lists
every candidate layer with its format (and blocksize), sparsity and measured
speedup, or the reason it stayed dense.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import nn

from ..planner import DEFAULT_MARGIN
from ._format_choice import FormatChoice, check_format, choose_format
from .attention import SparseMultiheadAttention
from .modules import SparseConv2d, SparseLinear, is_linear_map, _linear_weight, masked_weight
from .ops import STORAGE_DTYPES

__all__ = ["DEFAULT_MIN_SPARSITY", "LayerReport", "SparsifyReport", "sparsify"]

DEFAULT_MIN_SPARSITY = 0.7

FilterFn = Callable[[nn.Module, str], bool]


@dataclass
class LayerReport:
    """What :func:`sparsify` did with one layer."""

    name: str
    kind: str
    converted: bool
    format: str  # 'csr' or 'bsr<R>x<C>' when converted, 'dense' otherwise
    sparsity: float  # of the dense weight (fraction of zeros / pruned entries)
    speedup: float | None  # the planner's measurement; None when not measured
    reason: str = ""

    @property
    def speedup_text(self) -> str:
        return "not measured" if self.speedup is None else f"{self.speedup:.2f}x"


class SparsifyReport(list):
    """A list of :class:`LayerReport` that prints as a table."""

    @property
    def converted(self) -> list[LayerReport]:
        return [layer for layer in self if layer.converted]

    def __str__(self) -> str:
        lines = [f"{'layer':40} {'kind':10} {'format':8} {'sparsity':>8} {'speedup':>12}  note"]
        for layer in self:
            lines.append(f"{layer.name:40} {layer.kind:10} {layer.format:8} "
                         f"{layer.sparsity:8.1%} {layer.speedup_text:>12}  {layer.reason}")
        return "\n".join(lines)

    __repr__ = __str__  # the table, also at a REPL

    def merged_with(self, newer: SparsifyReport) -> SparsifyReport:
        """This report with ``newer``'s rows: a layer in both takes its newer row."""
        latest = {layer.name: layer for layer in newer}
        rows = [latest.pop(layer.name, layer) for layer in self]
        return SparsifyReport(rows + [layer for layer in newer if layer.name in latest])


def _sparsity(module: nn.Module) -> float:
    _, keep = masked_weight(module)
    return 1.0 - keep.count_nonzero().item() / keep.numel() if keep.numel() else 0.0


def _format_name(choice: FormatChoice) -> str:
    if choice.blocksize is None:
        return choice.format
    return f"{choice.format}{choice.blocksize[0]}x{choice.blocksize[1]}"


def _median_seconds(call: Callable[[], Any], repeats: int = 7) -> float:
    call()  # warm-up
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def _time_convolution(module: nn.Conv2d, x: torch.Tensor) -> FormatChoice:
    """Dense ``module(x)`` against its CSR SparseConv2d, interleaved rounds, medians."""
    sparse = SparseConv2d.from_dense(module, format="csr")
    dense_times, sparse_times = [], []
    for _ in range(3):
        dense_times.append(_median_seconds(lambda: module(x)))
        sparse_times.append(_median_seconds(lambda: sparse(x)))
    speedup = statistics.median(dense_times) / statistics.median(sparse_times)
    return FormatChoice("csr" if speedup >= DEFAULT_MARGIN else "dense", speedup=speedup)


def _convolution_inputs(model: nn.Module, example_inputs: Any) -> dict[int, torch.Tensor]:
    """The input each Conv2d of ``model`` sees in a forward pass of ``example_inputs``."""
    seen: dict[int, torch.Tensor] = {}

    def record(module: nn.Module, inputs: tuple) -> None:
        seen.setdefault(id(module), inputs[0].detach().clone())

    hooks = [m.register_forward_pre_hook(record) for m in model.modules()
             if isinstance(m, nn.Conv2d)]
    try:
        args = example_inputs if isinstance(example_inputs, tuple) else (example_inputs,)
        model(*args)
    finally:
        for hook in hooks:
            hook.remove()
    return seen


class _Converter:
    def __init__(self, format: str, blocksize: tuple[int, int] | None, min_sparsity: float,
                 min_speedup: float, batch_hint: int,
                 conv_inputs: dict[int, torch.Tensor] | None = None):
        check_format(format, blocksize)  # rejects bad requests before any layer is touched
        self.format = format
        self.blocksize = blocksize
        self.min_sparsity = min_sparsity
        self.min_speedup = min_speedup
        self.batch_hint = batch_hint
        self.conv_inputs = conv_inputs or {}
        self.report = SparsifyReport()

    def _choose(self, module: nn.Module) -> tuple[FormatChoice, str]:
        """The storage for ``module``'s weight, and a note for the report."""
        if isinstance(module, nn.Conv2d):
            if self.format == "bsr":
                return FormatChoice("csr"), "no BSR convolution: stored as CSR"
            if self.format == "csr":
                return FormatChoice("csr"), ""
            x = self.conv_inputs.get(id(module))
            if x is None:
                return FormatChoice("csr"), "not timed: pass example_inputs to time convolutions"
            return _time_convolution(module, x), f"timed on input {tuple(x.shape)}"
        weight, _ = masked_weight(module) if isinstance(module, nn.Conv2d) else _linear_weight(module)
        matrix = weight.reshape(weight.shape[0], -1)
        choice = choose_format(matrix, self.format, self.blocksize, batch_hint=self.batch_hint)
        note = "" if choice.planned is None else f"planner: {choice.planned}"
        return choice, note

    def convert(self, module: nn.Module, name: str) -> nn.Module:
        """The module to use in place of ``module`` (itself if it stays dense)."""
        kind = type(module).__name__
        if isinstance(module, nn.Conv2d) and (module.groups != 1 or module.padding_mode != "zeros"):
            return self._keep(module, name, kind, _sparsity(module),
                              "groups > 1 or non-zero padding mode: not supported")
        if module.weight.dtype not in STORAGE_DTYPES:
            return self._keep(module, name, kind, _sparsity(module),
                              f"dtype {module.weight.dtype} not supported")
        sparsity = _sparsity(module)
        if sparsity < self.min_sparsity:
            return self._keep(module, name, kind, sparsity, f"sparsity below {self.min_sparsity:.0%}")
        choice, note = self._choose(module)
        if choice.format == "dense":
            best = "not timed" if choice.speedup is None else f"{choice.speedup:.2f}x"
            return self._keep(module, name, kind, sparsity,
                              f"measured no gain (best sparse {best})" + (f"; {note}" if note else ""),
                              choice.speedup)
        if choice.speedup is not None and choice.speedup < self.min_speedup:
            return self._keep(module, name, kind, sparsity,
                              f"planner measured {choice.speedup:.2f}x < {self.min_speedup:.2f}x",
                              choice.speedup)
        if isinstance(module, nn.Conv2d):
            sparse: nn.Module = SparseConv2d.from_dense(module, format="csr")
        else:
            sparse = SparseLinear.from_dense(module, choice=choice)
        self.report.append(LayerReport(name, kind, True, _format_name(choice), sparsity,
                                       choice.speedup, note))
        return sparse

    def skip(self, module: nn.Module, name: str, reason: str) -> None:
        """Report a candidate left as it is, without looking at it further."""
        if isinstance(module, nn.MultiheadAttention):
            weight = module.in_proj_weight  # None when q, k and v have their own sizes
            sparsity = 0.0 if weight is None else 1.0 - weight.count_nonzero().item() / weight.numel()
        else:
            sparsity = _sparsity(module)
        self._keep(module, name, type(module).__name__, sparsity, reason)

    def _keep(self, module: nn.Module, name: str, kind: str, sparsity: float, reason: str,
              speedup: float | None = None) -> nn.Module:
        self.report.append(LayerReport(name, kind, False, "dense", sparsity, speedup, reason))
        return module


def _is_candidate(module: nn.Module) -> bool:
    """A layer sparsify converts or lists in its report (with the reason it did not)."""
    return (isinstance(module, (nn.MultiheadAttention, nn.Linear, nn.Conv2d))
            or is_linear_map(module))


def _is_plain_conv2d(module: nn.Module) -> bool:
    return isinstance(module, nn.Conv2d) and type(module).forward is nn.Conv2d.forward


def _is_fused_transformer_layer(module: nn.Module) -> bool:
    return isinstance(module, (nn.TransformerEncoderLayer, nn.TransformerDecoderLayer))


def _disable_fused_fast_path(module: nn.Module, inputs: tuple) -> None:
    """No-op pre-hook: its presence keeps TransformerEncoderLayer off the fused
    dense fast path, which reads every ``.weight`` tensor directly."""


def _walk(module: nn.Module, prefix: str, converter: _Converter, filter_fn: FilterFn) -> bool:
    """Convert the children of ``module``; True if any descendant became sparse."""
    changed = False
    for child_name, child in list(module.named_children()):
        name = f"{prefix}.{child_name}" if prefix else child_name
        replacement = child
        if not _is_candidate(child):
            changed |= _walk(child, name, converter, filter_fn)
        elif not filter_fn(child, name):
            converter.skip(child, name, "left out by filter_fn")
        elif isinstance(child, nn.MultiheadAttention):
            replacement = _convert_attention(child, name, converter)
        elif is_linear_map(child) or _is_plain_conv2d(child):
            replacement = converter.convert(child, name)
        else:
            base = "Linear" if isinstance(child, nn.Linear) else "Conv2d"
            converter.skip(child, name, f"subclass of nn.{base} with its own forward: not converted")
        if replacement is not child:
            setattr(module, child_name, replacement)
            changed = True
    if changed and _is_fused_transformer_layer(module):
        if _disable_fused_fast_path not in module._forward_pre_hooks.values():
            module.register_forward_pre_hook(_disable_fused_fast_path)
    return changed


def _convert_attention(mha: nn.MultiheadAttention, name: str,
                       converter: _Converter) -> nn.Module:
    if mha.bias_k is not None or mha.add_zero_attn:
        converter.report.append(LayerReport(name, "MultiheadAttention", False, "dense", 0.0, None,
                                            "add_bias_kv/add_zero_attn not supported"))
        return mha
    converted = []

    def convert(linear: nn.Linear, projection: str) -> nn.Module:
        module = converter.convert(linear, f"{name}.{projection}")
        converted.append(module is not linear)
        return module

    attention = SparseMultiheadAttention.from_dense(mha, convert)
    return attention.train(mha.training) if any(converted) else mha


def sparsify(model: nn.Module, *, filter_fn: FilterFn | None = None, format: str = "auto",
             blocksize: tuple[int, int] | None = None,
             min_sparsity: float = DEFAULT_MIN_SPARSITY, min_speedup: float = 1.0,
             batch_hint: int = 1, example_inputs: Any = None) -> nn.Module:
    """Replace eligible dense layers of ``model`` by sparse ones, in place.

    Parameters
    ----------
    model
        Any module; pruned weights (zeros, or ``torch.nn.utils.prune`` masks)
        are read as they are, with no extra step.
    filter_fn
        ``filter_fn(module, fully_qualified_name) -> bool`` selects layers, as in
        torchao; MultiheadAttention is offered as one module.
    format
        'auto' (the planner times each layer and picks dense, CSR or a BSR
        blocksize), 'csr' or 'bsr' (no timing).
    blocksize
        (R, C) blocks for ``format='bsr'``; default (4, 1). Not allowed otherwise.
    min_sparsity
        Layers with a smaller fraction of zeros stay dense.
    min_speedup
        With ``format='auto'``, layers the planner measures below this stay dense
        (the planner itself already requires a 1.1x margin).
    batch_hint
        The rows of x the planner measures each Linear with.
    example_inputs
        A tensor (or tuple of them) for one forward pass of ``model``: with
        ``format='auto'`` each Conv2d is timed, dense against sparse, on the
        input it receives there. Without them, ``format='auto'`` converts every
        sparse-enough Conv2d to CSR untimed (the report says so).

    Returns
    -------
    The same ``model``, with the report in ``model.sparsegemm_report`` (a
    second call merges its rows into the report already there).

    To save and reload a sparsified model, see :func:`load_sparsified` (a
    ``state_dict``) and :func:`sparsegemm.torch.from_pretrained` (Hugging Face).
    """
    if not 0.0 <= min_sparsity <= 1.0:
        raise ValueError(f"min_sparsity must be in [0, 1], got {min_sparsity}")
    if isinstance(batch_hint, bool) or not isinstance(batch_hint, int) or batch_hint < 1:
        raise ValueError(f"batch_hint must be a positive integer, got {batch_hint!r}")
    filter_fn = filter_fn or (lambda module, name: True)
    if isinstance(model, (nn.Linear, nn.Conv2d, nn.MultiheadAttention)):
        raise TypeError("sparsify converts the layers inside a model; for a single layer use "
                        "SparseLinear.from_dense / SparseConv2d.from_dense")
    with torch.no_grad():
        conv_inputs = (_convolution_inputs(model, example_inputs)
                       if format == "auto" and example_inputs is not None else None)
        converter = _Converter(format, blocksize, min_sparsity, min_speedup, batch_hint,
                               conv_inputs)
        _walk(model, "", converter, filter_fn)
    previous = getattr(model, "sparsegemm_report", None)
    model.sparsegemm_report = (previous.merged_with(converter.report)
                               if isinstance(previous, SparsifyReport) else converter.report)
    return model
