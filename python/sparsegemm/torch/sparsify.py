"""Convert the sparse-enough layers of a model to sparse modules, in place.

Selection, per layer (``nn.Linear`` and subclasses that keep its forward,
Hugging Face's ``Conv1D`` (GPT-2), ``nn.Conv2d`` with groups=1 and zero
padding, and the four projections of ``nn.MultiheadAttention``; a subclass of
``nn.Linear`` or ``nn.Conv2d`` with its own forward is listed, not converted):

1. ``filter_fn(module, fully_qualified_name)`` must return True (default: all).
2. The weight's sparsity must be at least ``min_sparsity``.
3. With ``format='auto'``, :func:`sparsegemm.plan` times each Linear at the
   input rows it really sees (dense, CSR, the bitmap and BSR block shapes): the rows it
   receives in a forward pass of ``example_inputs``, else ``batch_hint``, else
   at run time on its first forward per row bucket (an
   :class:`~sparsegemm.torch.AutoSparseLinear`; :func:`~sparsegemm.torch.freeze`
   fixes the choices). The layer takes the format and blocksize it picks, and stays dense
   when the planner keeps it dense or measures less than ``min_speedup``.
   With ``format='csr'``, ``'bitmap'`` or ``'bsr'`` nothing is timed and the sparsity
   threshold alone decides: the default ``DEFAULT_MIN_SPARSITY = 0.7`` is a
   conservative guess for where unstructured CSR starts to beat dense BLAS,
   not a calibrated figure. Convolutions store CSR only (also under 'bsr' and 'bitmap').
   A Linear-shaped timing says little about a convolution (its sparse kernel
   is a direct convolution, its dense one is torch's), so under 'auto' a
   Conv2d is timed as itself, dense against sparse, on the input it sees in a
   forward pass of ``example_inputs``; without them it becomes an
   :class:`~sparsegemm.torch.AutoSparseConv2d`, which does the same on its first
   forward per input shape.

The report (returned by :func:`sparsify` as ``model.sparsegemm_report``) lists
every candidate layer with its format (and blocksize), sparsity and measured
speedup, or the reason it stayed dense.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Callable

import torch.fx

import torch
from torch import Tensor, nn

from ..planner import DEFAULT_MARGIN
from . import feed_forward
from ._format_choice import FormatChoice, check_format, choose_format
from .attention import (
    SparseMultiheadAttention,
    SparseTransformerEncoderLayer,
    _split_linear,
    use_kernel_attention,
)
from .auto import AutoSparseConv2d, AutoSparseLinear, time_convolution
from .modules import (
    SparseConv2d,
    SparseLinear,
    _linear_weight,
    activation_of,
    input_rows,
    is_linear_map,
    masked_weight,
)
from .ops import STORAGE_DTYPES
from .quantized import SparseLinearInt8
from .shared_input import SharedInputGroup, group_shared_inputs
from .traced_forward import ChildrenAsLeaves, fuse_forward

__all__ = ["DEFAULT_MIN_SPARSITY", "LayerReport", "SparsifyReport", "sparsify"]

DEFAULT_MIN_SPARSITY = 0.7
FILTERED_OUT = "left out by filter_fn"  # the report's reason for a layer filter_fn declined

#: What ``sparsify(weight_dtype=...)`` takes: None keeps each layer's dtype.
WEIGHT_DTYPES = (None, "int8", "bfloat16")

FilterFn = Callable[[nn.Module, str], bool]


@dataclass
class LayerReport:
    """What :func:`sparsify` did with one layer."""

    name: str
    kind: str
    converted: bool
    format: str  # 'csr', 'bitmap' or 'bsr<R>x<C>' when converted, 'dense' otherwise
    sparsity: float  # of the dense weight (fraction of zeros / pruned entries)
    speedup: float | None  # the planner's measurement; None when not measured
    reason: str = ""
    cached: bool = False  # the speedup is the planner's cached figure, not measured now
    #: For format 'auto': the module deciding at run time, whose decisions the report shows.
    auto: AutoSparseLinear | AutoSparseConv2d | SparseLinearInt8 | None = None
    #: The converted module when it has siblings that may read the same input (its
    #: ``_shared_input`` group says whether they run in one stacked product).
    shared_member: nn.Module | None = None

    @property
    def shared(self) -> SharedInputGroup | None:
        return getattr(self.shared_member, "_shared_input", None)

    @property
    def speedup_text(self) -> str:
        if self.auto is not None:
            stacked = self.shared.fused if self.shared is not None else None
            decided = self.auto.decisions or (isinstance(stacked, AutoSparseLinear)
                                              and stacked.decisions)
            if not decided:
                return "not yet"
            return "per shape" if isinstance(self.auto, AutoSparseConv2d) else "per rows"
        if self.speedup is None:
            return "not measured"
        return f"{self.speedup:.2f}x" + (" (cached)" if self.cached else "")

    @property
    def note(self) -> str:
        """The reason, and for an 'auto' layer its decisions so far."""
        group = self.shared
        shared = group.describe(self.shared_member) if group is not None else ""
        auto = self.auto.describe() if self.auto is not None else ""
        if auto and group is not None and group.state == "stacked":
            auto = ""  # the stacked product's decisions are in ``shared``
        return "; ".join(part for part in (auto, self.reason, shared) if part)


class SparsifyReport(list):
    """A list of :class:`LayerReport` that prints as a table, then its ``notes``
    (what sparsify did beyond the layers, such as the attention kernel)."""

    def __init__(self, rows=(), notes: list[str] | None = None):
        super().__init__(rows)
        self.notes: list[str] = list(notes or [])

    @property
    def converted(self) -> list[LayerReport]:
        return [layer for layer in self if layer.converted]

    def __str__(self) -> str:
        lines = [f"{'layer':40} {'kind':10} {'format':8} {'sparsity':>8} {'speedup':>12}  note"]
        for layer in self:
            lines.append(f"{layer.name:40} {layer.kind:10} {layer.format:8} "
                         f"{layer.sparsity:8.1%} {layer.speedup_text:>12}  {layer.note}")
        return "\n".join(lines + self.notes)

    __repr__ = __str__  # the table, also at a REPL

    def merged_with(self, newer: SparsifyReport) -> SparsifyReport:
        """This report with ``newer``'s rows: a layer in both takes its newer row, unless
        the newer call's ``filter_fn`` left it out (then what the earlier call did stands)."""
        latest = {layer.name: layer for layer in newer}
        rows = []
        for layer in self:
            update = latest.pop(layer.name, None)
            rows.append(layer if update is None or update.reason == FILTERED_OUT else update)
        notes = self.notes + [note for note in newer.notes if note not in self.notes]
        return SparsifyReport(rows + [layer for layer in newer if layer.name in latest], notes)


def _sparsity(module: nn.Module) -> float:
    _, keep = masked_weight(module)
    return 1.0 - keep.count_nonzero().item() / keep.numel() if keep.numel() else 0.0


def _meets_min_sparsity(module: nn.Module, min_sparsity: float) -> bool:
    """Whether ``module``'s weight holds at least ``min_sparsity`` zeros, counted as a
    pruner counts them: ``round(min_sparsity * numel)`` (``torch.nn.utils.prune``), so a
    weight pruned to exactly 70% is not kept dense for being a fraction of an entry short."""
    _, keep = masked_weight(module)
    zeros = keep.numel() - keep.count_nonzero().item()
    return zeros >= round(min_sparsity * keep.numel())


def _time_convolution(module: nn.Conv2d, x: torch.Tensor) -> FormatChoice:
    """Dense ``module(x)`` against its CSR SparseConv2d (see :func:`time_convolution`)."""
    sparse = SparseConv2d.from_dense(module, format="csr")
    speedup = time_convolution(lambda: module(x), lambda: sparse(x))
    return FormatChoice("csr" if speedup >= DEFAULT_MARGIN else "dense", speedup=speedup)


@dataclass
class _ExampleShapes:
    """What the layers of a model see in one forward pass of ``example_inputs``."""

    conv_inputs: dict[int, torch.Tensor] = field(default_factory=dict)  # id(Conv2d) -> input
    linear_rows: dict[int, list[int]] = field(default_factory=dict)  # id(Linear) -> rows per call
    # id(MultiheadAttention) -> (query rows, key rows, value rows) of its first call
    attention_rows: dict[int, tuple[int, int, int]] = field(default_factory=dict)

    def rows_of(self, module: nn.Module) -> int | None:
        """The row count to plan ``module`` at: the most frequent one it saw (ties: the largest)."""
        seen = self.linear_rows.get(id(module))
        if not seen:
            return None
        return max(set(seen), key=lambda rows: (seen.count(rows), rows))


def _record_example_shapes(model: nn.Module, example_inputs: Any) -> _ExampleShapes:
    """One forward pass of ``example_inputs`` recording each layer's input.

    Every Linear's input rows (leading dims flattened), each MultiheadAttention's
    query/key/value rows and each Conv2d's input. The hooks also keep fused
    Transformer layers off their fast path for this pass, so every layer runs
    as a module and is seen.
    """
    shapes = _ExampleShapes()

    def record_conv(module: nn.Module, inputs: tuple) -> None:
        shapes.conv_inputs.setdefault(id(module), inputs[0].detach().clone())

    def record_linear(module: nn.Module, inputs: tuple) -> None:
        shapes.linear_rows.setdefault(id(module), []).append(input_rows(inputs[0]))

    def record_attention(module: nn.Module, args: tuple, kwargs: dict) -> None:
        names = ("query", "key", "value")
        tensors = [args[i] if i < len(args) else kwargs.get(name) for i, name in enumerate(names)]
        if all(isinstance(t, torch.Tensor) for t in tensors):
            shapes.attention_rows.setdefault(id(module), tuple(input_rows(t) for t in tensors))

    hooks = []
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            hooks.append(module.register_forward_pre_hook(record_conv))
        elif isinstance(module, nn.Linear):
            hooks.append(module.register_forward_pre_hook(record_linear))
        elif isinstance(module, nn.MultiheadAttention):
            hooks.append(module.register_forward_pre_hook(record_attention, with_kwargs=True))
    try:
        args = example_inputs if isinstance(example_inputs, tuple) else (example_inputs,)
        model(*args)
    finally:
        for hook in hooks:
            hook.remove()
    return shapes


class _Converter:
    def __init__(self, format: str, blocksize: tuple[int, int] | None, min_sparsity: float,
                 min_speedup: float, batch_hint: int | None, shapes: _ExampleShapes | None = None,
                 weight_dtype: str | None = None, fuse_feed_forward: bool = True,
                 fuse_layer_norm: bool = True, kernel_attention: bool = True):
        check_format(format, blocksize)  # rejects bad requests before any layer is touched
        if weight_dtype not in WEIGHT_DTYPES:
            raise ValueError(f"weight_dtype must be one of {WEIGHT_DTYPES}, got {weight_dtype!r}")
        self.weight_dtype = weight_dtype
        self.format = format
        self.blocksize = blocksize
        self.min_sparsity = min_sparsity
        self.min_speedup = min_speedup
        self.batch_hint = batch_hint
        self.shapes = shapes or _ExampleShapes()
        self.report = SparsifyReport()
        self.fuse_feed_forward = fuse_feed_forward
        self.fuse_layer_norm = fuse_layer_norm
        self.fused_norms: list[str] = []  # LayerNorm children now run by add_layer_norm
        self.kernel_attention = kernel_attention
        self.eager_attention: list[str] = []  # modules whose written-out attention is fused
        # Those of them whose attention runs with its projections (SelfAttentionChain).
        self.self_attention_chains: list[str] = []

    def traced_forward_notes(self) -> list[str]:
        """The report's lines on the norms and eager attentions fused (none: [])."""
        notes = []
        if self.fused_norms:
            notes.append(f"residual add + LayerNorm in one kernel call at inference "
                         f"({len(self.fused_norms)}): {', '.join(self.fused_norms)}")
        if self.eager_attention:
            notes.append(f"eager attention (softmax(q @ k^T) @ v written out) on the attention "
                         f"kernel at inference ({len(self.eager_attention)}): "
                         f"{', '.join(self.eager_attention)}")
        if self.self_attention_chains:
            notes.append(f"self-attention with its q, k, v and output Linears in one kernel "
                         f"call at inference where they run CSR "
                         f"({len(self.self_attention_chains)}): "
                         f"{', '.join(self.self_attention_chains)}")
        return notes

    def _choose(self, module: nn.Module, rows: int | None) -> tuple[FormatChoice, str]:
        """The storage for ``module``'s weight, and a note for the report.

        A Linear under 'auto' is planned at ``rows`` (seen in the example pass),
        else at ``batch_hint``; with neither it is format 'auto' (decided at run time).
        """
        if isinstance(module, nn.Conv2d):
            if self.format in ("bsr", "bitmap"):
                kind = "BSR" if self.format == "bsr" else "bitmap"
                return FormatChoice("csr"), f"no {kind} convolution: stored as CSR"
            if self.format == "csr":
                return FormatChoice("csr"), ""
            x = self.shapes.conv_inputs.get(id(module))
            if x is None:
                return FormatChoice("auto"), ""  # timed on its first forward
            return _time_convolution(module, x), f"timed on input {tuple(x.shape)}"
        if self.format == "auto":
            rows, source = self._planning_rows(module, rows)
            if rows is None:
                return FormatChoice("auto"), ""
        else:
            rows, source = 1, ""  # not timed
        weight, _ = _linear_weight(module)
        matrix = weight.reshape(weight.shape[0], -1)
        choice = choose_format(matrix, self.format, self.blocksize, batch_hint=rows)
        note = "" if choice.planned is None else f"planned at {rows} rows ({source})"
        if choice.format == "dense":
            note = f"{choice.why_dense(DEFAULT_MARGIN)}; {note}"
        return choice, note

    def _planning_rows(self, linear: nn.Module, rows: int | None) -> tuple[int | None, str]:
        """The rows ``linear`` is planned at and where they come from: ``rows`` (or those
        seen in the example pass), else ``batch_hint``; None when neither is known."""
        rows = rows if rows is not None else self.shapes.rows_of(linear)
        if rows is not None:
            return rows, "rows seen in example_inputs"
        return self.batch_hint, "batch_hint"

    def _convert_int8(self, linear: nn.Module, name: str, kind: str, sparsity: float,
                      rows: int | None) -> SparseLinearInt8:
        """``linear`` as int8. Under format 'auto' its product is timed, bitmap kernel
        against dense int8, now at the rows it is known to see (example pass, else
        ``batch_hint``), else on its first call of each row count."""
        kernel = "auto" if self.format == "auto" else "bitmap"
        sparse_int8 = SparseLinearInt8.from_dense(linear, kernel=kernel)
        if kernel == "auto":
            rows, _ = self._planning_rows(linear, rows)
            if rows is not None:
                sparse_int8.decide(rows)
        self.report.append(LayerReport(name, kind, True, SparseLinearInt8.format, sparsity, None,
                                       "int8 values", auto=sparse_int8))
        return sparse_int8

    def convert(self, module: nn.Module, name: str, rows: int | None = None) -> nn.Module:
        """The module to use in place of ``module`` (itself if it stays dense).

        ``rows``: the input rows to plan a Linear at, when the caller knows them
        (attention projections); by default those seen in the example pass.
        """
        kind = type(module).__name__
        if isinstance(module, nn.Conv2d) and (module.groups != 1 or module.padding_mode != "zeros"):
            return self._keep(module, name, kind, _sparsity(module),
                              "groups > 1 or non-zero padding mode: not supported")
        if module.weight.dtype not in STORAGE_DTYPES:
            return self._keep(module, name, kind, _sparsity(module),
                              f"dtype {module.weight.dtype} not supported")
        sparsity = _sparsity(module)
        if not _meets_min_sparsity(module, self.min_sparsity):
            return self._keep(
                module, name, kind, sparsity, f"sparsity below {self.min_sparsity:.0%}"
            )
        if self.weight_dtype == "int8" and not isinstance(module, nn.Conv2d):
            return self._convert_int8(module, name, kind, sparsity, rows)
        value_dtype = self._value_dtype(module)
        values_note = "bfloat16 values" if module.weight.dtype == torch.bfloat16 or (
            value_dtype == torch.bfloat16) else ""
        choice, note = self._choose(module, rows)
        if choice.format == "auto":
            auto: AutoSparseLinear | AutoSparseConv2d = (
                AutoSparseConv2d(module, min_speedup=self.min_speedup)
                if isinstance(module, nn.Conv2d)
                else AutoSparseLinear(module, min_speedup=self.min_speedup,
                                      weight_dtype=value_dtype))
            self.report.append(LayerReport(name, kind, True, "auto", sparsity, None, values_note,
                                           auto=auto))
            return auto
        if choice.format == "dense":
            return self._keep(module, name, kind, sparsity, f"measured no gain: {note}",
                              choice.speedup, choice.cached)
        if choice.speedup is not None and choice.speedup < self.min_speedup:
            return self._keep(module, name, kind, sparsity,
                              f"planner measured {choice.speedup:.2f}x < {self.min_speedup:.2f}x",
                              choice.speedup, choice.cached)
        if isinstance(module, nn.Conv2d):
            sparse: nn.Module = SparseConv2d.from_dense(module, format="csr")
        else:
            sparse = SparseLinear.from_dense(module, choice=choice, weight_dtype=value_dtype)
        note = "; ".join(part for part in (note, values_note) if part)
        self.report.append(LayerReport(name, kind, True, choice.label, sparsity,
                                       choice.speedup, note, cached=choice.cached))
        return sparse

    def _value_dtype(self, module: nn.Module) -> torch.dtype | None:
        """What ``weight_dtype='bfloat16'`` stores a float32 Linear's values as (None:
        its own dtype). Convolutions keep theirs."""
        if (self.weight_dtype == "bfloat16" and not isinstance(module, nn.Conv2d)
                and module.weight.dtype == torch.float32):
            return torch.bfloat16
        return None

    def skip(self, module: nn.Module, name: str, reason: str) -> None:
        """Report a candidate left as it is, without looking at it further."""
        sparsity = 0.0
        if not isinstance(module, nn.MultiheadAttention):
            sparsity = _sparsity(module)
        elif module.in_proj_weight is not None:  # None when q, k and v have their own sizes
            packed = module.in_proj_weight
            sparsity = 1.0 - packed.count_nonzero().item() / packed.numel()
        self._keep(module, name, type(module).__name__, sparsity, reason)

    def _keep(self, module: nn.Module, name: str, kind: str, sparsity: float, reason: str,
              speedup: float | None = None, cached: bool = False) -> nn.Module:
        self.report.append(LayerReport(name, kind, False, "dense", sparsity, speedup, reason,
                                       cached))
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


def _foldable_batchnorm(module: nn.Module | None, channels: int) -> bool:
    """True for an eval-mode BatchNorm2d with running statistics over ``channels``."""
    return (type(module) is nn.BatchNorm2d and not module.training
            and module.track_running_stats and module.running_mean is not None
            and module.num_features == channels)


def _fuse_what_follows(sequential: nn.Sequential, following: list[tuple[str, nn.Module]],
                       layer: nn.Module, prefix: str, report: LayerReport) -> None:
    """Move into the converted ``layer`` what follows it in ``sequential``: an eval-mode
    BatchNorm2d (folded into a sparse or auto convolution), then a ReLU or GELU (its
    ``activation``, applied right after the product). Each is replaced by ``nn.Identity``."""
    fused = []
    rest = iter(following)
    name, module = next(rest, ("", None))
    if (isinstance(layer, (SparseConv2d, AutoSparseConv2d))
            and _foldable_batchnorm(module, layer.out_channels)):
        layer.fold_batchnorm(module)
        setattr(sequential, name, nn.Identity())
        fused.append(f"folded BatchNorm2d {prefix + '.' if prefix else ''}{name}")
        name, module = next(rest, ("", None))
    activation = activation_of(module) if module is not None else None
    if activation is not None:
        layer.activation = activation
        setattr(sequential, name, nn.Identity())
        fused.append(f"fused {type(module).__name__} {prefix + '.' if prefix else ''}{name}")
    if fused:
        report.reason = "; ".join([report.reason] + fused if report.reason else fused)


def _note_fusion(converter: _Converter, layer_name: str, text: str) -> None:
    for report in converter.report:
        if report.name == layer_name:
            report.reason = f"{report.reason}; {text}" if report.reason else text


def _fusable_layer(module: Any) -> bool:
    return (isinstance(module, (SparseLinear, AutoSparseLinear, SparseLinearInt8))
            and module.activation is None)


def _module_calls(graph: torch.fx.Graph) -> dict[str, list[torch.fx.Node]]:
    """Each child's call nodes in ``graph``, by child name."""
    calls: dict[str, list[torch.fx.Node]] = {}
    for node in graph.nodes:
        if node.op == "call_module":
            calls.setdefault(node.target, []).append(node)
    return calls


def _traced(module: nn.Module) -> torch.fx.Graph | None:
    """``module``'s forward traced by torch.fx with its children as leaves, or None where
    fx cannot trace it (shape arithmetic, control flow): then nothing is fused or linked."""
    try:
        return ChildrenAsLeaves().trace(module)
    except Exception:  # noqa: BLE001 - any tracing failure means: leave it as it is
        return None


def _traced_method(method: Callable[[Any, Tensor], Tensor],
                   children: dict[str, nn.Module]) -> torch.fx.Graph | None:
    """``method(self, x)`` (a layer's block, e.g. its feed-forward) traced as :func:`_traced`
    traces a forward, on a module holding ``children``."""

    class Method(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            for name, child in children.items():
                self.add_module(name, child)

        def forward(self, x: Tensor) -> Tensor:
            return method(self, x)

    return _traced(Method())


def _fuse_activation_children(parent: nn.Module, prefix: str, converter: _Converter) -> None:
    """Outside an ``nn.Sequential``: fuse an activation child (Hugging Face's
    ``BertIntermediate`` holds ``dense`` and ``intermediate_act_fn``) into a converted
    Linear child when the parent's forward, traced by torch.fx with its children as
    leaves, calls the activation once, on that Linear's output, and uses the output
    nowhere else. The activation becomes ``nn.Identity``. A forward fx cannot trace
    (shape arithmetic, control flow) is left as it is."""
    children = dict(parent.named_children())
    if not any(_fusable_layer(c) for c in children.values()) or not any(
            activation_of(c) for c in children.values()):
        return
    graph = _traced(parent)
    if graph is None:
        return
    calls = _module_calls(graph)
    for act_name, act_nodes in calls.items():
        activation = activation_of(children.get(act_name))
        if activation is None or len(act_nodes) != 1:
            continue
        source = act_nodes[0].args[0] if len(act_nodes[0].args) == 1 else None
        if (act_nodes[0].kwargs or not isinstance(source, torch.fx.Node)
                or source.op != "call_module" or len(calls.get(source.target, ())) != 1
                or len(source.users) != 1 or not _fusable_layer(children.get(source.target))):
            continue
        children[source.target].activation = activation
        setattr(parent, act_name, nn.Identity())
        layer_name = f"{prefix}.{source.target}" if prefix else source.target
        _note_fusion(converter, layer_name, f"fused {type(children[act_name]).__name__} "
                                            f"{prefix + '.' if prefix else ''}{act_name}")


def _linkable(module: Any) -> bool:
    """A layer that may run a feed-forward pair (feed_forward.py decides per call)."""
    return isinstance(module, (SparseLinear, AutoSparseLinear))


def _sole_consumer(node: torch.fx.Node, modules: dict[str, nn.Module],
                   dropouts: list[nn.Dropout] | None = None) -> torch.fx.Node | None:
    """The one node that uses ``node``'s value, past ``nn.Identity`` children and, given a
    ``dropouts`` list, ``nn.Dropout`` children too (appended to it), or None."""
    passable = (nn.Identity,) if dropouts is None else (nn.Identity, nn.Dropout)
    while len(node.users) == 1:
        user = next(iter(node.users))
        module = modules.get(user.target) if user.op == "call_module" else None
        if type(module) in passable and user.args == (node,) and not user.kwargs:
            if isinstance(module, nn.Dropout) and dropouts is not None:
                dropouts.append(module)
            node = user
            continue
        return user
    return None


def _link_pair(first: nn.Module, parent: nn.Module, second_name: str, first_name: str,
               second_label: str, converter: _Converter,
               dropouts: Sequence[nn.Dropout] = ()) -> None:
    feed_forward.link(first, parent, second_name, dropouts)
    through = " (through dropout, in eval mode)" if dropouts else ""
    _note_fusion(converter, first_name, f"feeds {second_label}{through}: both run as one "
                                        "feed-forward kernel at inference")


def _link_feed_forward_children(parent: nn.Module, prefix: str, converter: _Converter) -> None:
    """Link two sparse Linear children where the parent's forward, traced by torch.fx
    with its children as leaves, calls each once and hands the first's output (through
    ``nn.Identity`` children only) to the second alone: ``nn.Sequential(Linear, ReLU,
    Linear)`` once the ReLU is fused, or ``output(act(intermediate(x)))``."""
    children = dict(parent.named_children())
    if sum(_linkable(child) for child in children.values()) < 2:
        return
    graph = _traced(parent)
    if graph is None:
        return
    calls = _module_calls(graph)
    linked: set[str] = set()
    for node in graph.nodes:
        if (node.op != "call_module" or node.target in linked or len(calls[node.target]) != 1
                or not _linkable(children.get(node.target))):
            continue
        dropouts: list[nn.Dropout] = []
        consumer = _sole_consumer(node, children, dropouts)
        if (consumer is None or consumer.op != "call_module" or consumer.target in linked
                or len(consumer.args) != 1 or consumer.kwargs or consumer.target == node.target
                or len(calls[consumer.target]) != 1
                or not _linkable(children.get(consumer.target))):
            continue
        linked.update((node.target, consumer.target))
        name = f"{prefix}.{node.target}" if prefix else node.target
        _link_pair(children[node.target], parent, consumer.target, name,
                   f"{prefix + '.' if prefix else ''}{consumer.target}", converter, dropouts)


def _link_hf_feed_forward(layer: nn.Module, prefix: str, converter: _Converter) -> None:
    """Hugging Face's transformer layers (BERT and its family) run the feed-forward block
    in ``feed_forward_chunk``: ``output(intermediate(x), x)``, where ``intermediate`` is
    ``dense`` then the activation (fused into ``dense`` by now, leaving ``nn.Identity``)
    and ``output`` starts with ``dense`` on its first input. Each of those three forwards
    is traced and checked before ``intermediate.dense`` is linked to ``output.dense``."""
    chunk = getattr(type(layer), "feed_forward_chunk", None)
    intermediate, output = getattr(layer, "intermediate", None), getattr(layer, "output", None)
    if not (callable(chunk) and isinstance(intermediate, nn.Module)
            and isinstance(output, nn.Module)):
        return
    first, second = getattr(intermediate, "dense", None), getattr(output, "dense", None)
    if not (_linkable(first) and _linkable(second)):
        return
    graphs = [_traced_method(chunk, {"intermediate": intermediate, "output": output}),
              _traced(intermediate), _traced(output)]
    if any(graph is None for graph in graphs):
        return
    chunk_calls, inner_calls, output_calls = (_module_calls(graph) for graph in graphs)
    if (len(chunk_calls.get("intermediate", ())) != 1 or len(chunk_calls.get("output", ())) != 1
            or len(inner_calls.get("dense", ())) != 1 or len(output_calls.get("dense", ())) != 1):
        return
    hidden = chunk_calls["intermediate"][0]
    consumer = _sole_consumer(hidden, {})
    if consumer is not chunk_calls["output"][0] or consumer.args[:1] != (hidden,):
        return
    finish = _sole_consumer(inner_calls["dense"][0], dict(intermediate.named_children()))
    if finish is None or finish.op != "output":
        return
    inputs = [node for node in graphs[2].nodes if node.op == "placeholder"]
    output_dense = output_calls["dense"][0]
    if (not inputs or _sole_consumer(inputs[0], {}) is not output_dense
            or output_dense.args != (inputs[0],)):
        return
    base = f"{prefix}." if prefix else ""
    _link_pair(first, output, "dense", f"{base}intermediate.dense", f"{base}output.dense",
               converter)


def _link_transformer_feed_forward(layer: nn.Module, prefix: str, converter: _Converter) -> None:
    """``nn.Transformer{En,De}coderLayer`` runs its feed-forward block in ``_ff_block``:
    ``dropout2(linear2(dropout(activation(linear1(x)))))``. Its forward as a whole does not
    trace (the fast-path checks), so once the activation is fused into ``linear1`` (leaving
    ``nn.Identity``) the block alone is traced and checked before ``linear1`` is linked to
    ``linear2`` through the dropout (the pair runs as one while it is in eval mode)."""
    block = getattr(type(layer), "_ff_block", None)
    first, second = getattr(layer, "linear1", None), getattr(layer, "linear2", None)
    if not (callable(block) and isinstance(getattr(layer, "activation", None), nn.Identity)
            and _linkable(first) and _linkable(second)):
        return
    children = dict(layer.named_children())
    graph = _traced_method(block, children)
    if graph is None:
        return
    calls = _module_calls(graph)
    if len(calls.get("linear1", ())) != 1 or len(calls.get("linear2", ())) != 1:
        return
    dropouts: list[nn.Dropout] = []
    consumer = _sole_consumer(calls["linear1"][0], children, dropouts)
    if (consumer is not calls["linear2"][0] or len(consumer.args) != 1 or consumer.kwargs):
        return
    base = f"{prefix}." if prefix else ""
    _link_pair(first, layer, "linear2", f"{base}linear1", f"{base}linear2", converter, dropouts)


def _fuse_transformer_activation(layer: nn.Module, prefix: str, converter: _Converter) -> None:
    """``nn.Transformer{En,De}coderLayer`` computes ``linear2(dropout(activation(linear1(x))))``:
    a ReLU/GELU there moves into a converted ``linear1``."""
    activation = activation_of(layer.activation)
    if activation is None or not _fusable_layer(layer.linear1):
        return
    fused = layer.activation
    layer.linear1.activation = activation
    layer.activation = nn.Identity()
    what = type(fused).__name__ if isinstance(fused, nn.Module) else f"F.{fused.__name__}"
    _note_fusion(converter, f"{prefix}.linear1" if prefix else "linear1", f"fused {what}")


def _walk(module: nn.Module, prefix: str, converter: _Converter, filter_fn: FilterFn) -> bool:
    """Convert the children of ``module``; True if any descendant became sparse.

    In an ``nn.Sequential``, what follows a converted layer is fused into it
    (:func:`_fuse_what_follows`).
    """
    changed = False
    children = list(module.named_children())
    for index, (child_name, child) in enumerate(children):
        name = f"{prefix}.{child_name}" if prefix else child_name
        replacement = child
        if not _is_candidate(child):
            changed |= _walk(child, name, converter, filter_fn)
        elif not filter_fn(child, name):
            converter.skip(child, name, FILTERED_OUT)
        elif isinstance(child, nn.MultiheadAttention):
            replacement = _convert_attention(child, name, converter)
        elif is_linear_map(child) or _is_plain_conv2d(child):
            replacement = converter.convert(child, name)
            if isinstance(module, nn.Sequential) and replacement is not child:
                _fuse_what_follows(module, children[index + 1:], replacement, prefix,
                                   converter.report[-1])
        else:
            base = "Linear" if isinstance(child, nn.Linear) else "Conv2d"
            converter.skip(child, name,
                           f"subclass of nn.{base} with its own forward: not converted")
        if replacement is not child:
            setattr(module, child_name, replacement)
            changed = True
    if changed:
        _arrange_around_sparse_children(module, prefix, converter)
    return changed


def _arrange_around_sparse_children(module: nn.Module, prefix: str,
                                    converter: _Converter) -> None:
    """What sparsify arranges in a module with sparse children, beyond converting them:
    activations fused into the layers, feed-forward links, the fused-path hook of
    ``nn.TransformerEncoderLayer``. None of it changes the state_dict."""
    if _is_fused_transformer_layer(module):
        if _disable_fused_fast_path not in module._forward_pre_hooks.values():
            module.register_forward_pre_hook(_disable_fused_fast_path)
        if type(module) is nn.TransformerEncoderLayer:
            module.__class__ = SparseTransformerEncoderLayer
        if isinstance(module, SparseTransformerEncoderLayer) and converter.fuse_layer_norm \
                and not module.norm_first and not module.residual_norm_kernel:
            module.residual_norm_kernel = True
            base = f"{prefix}." if prefix else ""
            converter.fused_norms += [f"{base}norm1", f"{base}norm2"]
        _fuse_transformer_activation(module, prefix, converter)
        if converter.fuse_feed_forward:
            _link_transformer_feed_forward(module, prefix, converter)
    elif not isinstance(module, nn.Sequential):
        _fuse_activation_children(module, prefix, converter)
    if converter.fuse_feed_forward and not _is_fused_transformer_layer(module):
        _link_feed_forward_children(module, prefix, converter)
        _link_hf_feed_forward(module, prefix, converter)
    if (converter.fuse_layer_norm or converter.kernel_attention) \
            and not _is_fused_transformer_layer(module):
        base = f"{prefix}." if prefix else ""
        norms, attentions, chains = fuse_forward(module, norms=converter.fuse_layer_norm,
                                                 attention=converter.kernel_attention)
        converter.fused_norms += [base + name for name in norms]
        if attentions:
            converter.eager_attention.append(prefix or type(module).__name__)
        if chains:
            converter.self_attention_chains.append(prefix or type(module).__name__)


_SPARSE_LAYERS = (SparseLinear, SparseConv2d, SparseMultiheadAttention)


def _rearrange(module: nn.Module, prefix: str, converter: _Converter) -> bool:
    """:func:`_walk` for layers that are sparse already; True if any descendant is."""
    has_sparse = False
    children = list(module.named_children())
    for index, (child_name, child) in enumerate(children):
        name = f"{prefix}.{child_name}" if prefix else child_name
        if isinstance(child, _SPARSE_LAYERS):
            has_sparse = True
            if isinstance(module, nn.Sequential) and isinstance(child, (SparseLinear,
                                                                        SparseConv2d)):
                # A row only for _fuse_what_follows to note on: nobody reads it.
                row = LayerReport(name, type(child).__name__, True,
                                  getattr(child, "format", "csr"), 0.0, None, "")
                _fuse_what_follows(module, children[index + 1:], child, prefix, row)
        else:
            has_sparse |= _rearrange(child, name, converter)
    if has_sparse:
        _arrange_around_sparse_children(module, prefix, converter)
    return has_sparse


def prepare_loaded(model: nn.Module, *, kernel_attention: bool = True) -> nn.Module:
    """Arrange a model whose sparse layers were loaded (:func:`load_sparsified`,
    :func:`from_pretrained`) for inference as :func:`sparsify` arranges the model it
    converts: activations fused into the sparse layers, feed-forward pairs linked,
    q/k/v groups stacked, attention on the kernel. Converts and times nothing, and
    leaves the state_dict as it is. Returns ``model``."""
    with torch.no_grad():
        converter = _Converter("csr", None, 0.0, 1.0, None, kernel_attention=kernel_attention)
        _rearrange(model, "", converter)
        group_shared_inputs(model)
        _arrange_attention(model, kernel_attention)
    return model


def _arrange_attention(model: nn.Module, kernel_attention: bool) -> str:
    """Attention on the kernel (or not) in every SparseMultiheadAttention and Hugging
    Face model of ``model``; returns the report's note on it ('' for none)."""
    for module in model.modules():
        if isinstance(module, SparseMultiheadAttention):
            module.kernel_attention = kernel_attention
    return use_kernel_attention(model) if kernel_attention else ""


def _convert_attention(mha: nn.MultiheadAttention, name: str,
                       converter: _Converter) -> nn.Module:
    if converter.weight_dtype is not None:
        converter.skip(mha, name, f"{converter.weight_dtype} weights: nn.MultiheadAttention "
                                  f"stays dense")
        return mha
    if mha.bias_k is not None or mha.add_zero_attn:
        converter.report.append(LayerReport(name, "MultiheadAttention", False, "dense", 0.0, None,
                                            "add_bias_kv/add_zero_attn not supported"))
        return mha
    converted = []
    query_rows, key_rows, value_rows = converter.shapes.attention_rows.get(id(mha),
                                                                           (None, None, None))
    rows = {"q_proj": query_rows, "k_proj": key_rows, "v_proj": value_rows, "out_proj": query_rows}

    def convert(linear: nn.Linear, projection: str) -> nn.Module:
        module = converter.convert(linear, f"{name}.{projection}", rows[projection])
        converted.append(module is not linear)
        return module

    attention = SparseMultiheadAttention.from_dense(mha, convert)
    if mha._qkv_same_embed_dim and all(converted[:3]):
        # Self-attention (query is key is value) then makes one product, of q, k and v stacked.
        bias = None if mha.in_proj_bias is None else mha.in_proj_bias.detach()
        stacked = _split_linear(mha.in_proj_weight.detach(), bias)
        fused = converter.convert(stacked, f"{name}.in_proj", query_rows)
        if fused is not stacked:
            attention.in_proj = fused
            report = converter.report[-1]
            report.reason = "; ".join(part for part in (
                report.reason, "q, k, v stacked: one product when query is key is value") if part)
    return attention.train(mha.training) if any(converted) else mha


def sparsify(model: nn.Module, *, filter_fn: FilterFn | None = None, format: str = "auto",
             blocksize: tuple[int, int] | None = None,
             min_sparsity: float | None = None, min_speedup: float = 1.0,
             batch_hint: int | None = None, example_inputs: Any = None,
             weight_dtype: str | None = None, stack_shared_inputs: bool = True,
             fuse_feed_forward: bool = True, kernel_attention: bool = True,
             fuse_layer_norm: bool = True) -> nn.Module:
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
        'auto' (the planner times each layer and picks dense, CSR, the bitmap or
        a BSR blocksize), 'csr', 'bitmap' or 'bsr' (no timing).
    blocksize
        (R, C) blocks for ``format='bsr'``; default (4, 1). Not allowed otherwise.
    min_sparsity
        Layers with a smaller fraction of zeros stay dense. Default: 0 for
        'auto' (the planner decides, and never keeps a format slower than
        dense: a BSR weight can beat dense BLAS even at low sparsity), and
        ``DEFAULT_MIN_SPARSITY`` for 'csr' and 'bsr', which are not timed.
    min_speedup
        With ``format='auto'``, layers the planner measures below this stay dense
        (the planner itself already requires a 1.1x margin).
    batch_hint
        The rows of x the planner measures each Linear with, for Linears
        ``example_inputs`` does not reach (or without them).
    example_inputs
        A tensor (or tuple of them) for one forward pass of ``model``: with
        ``format='auto'`` each Linear is planned at the rows it receives there
        (leading dimensions flattened) and each Conv2d is timed, dense against
        sparse, on its input. Without them, ``format='auto'`` times each Conv2d
        the same way on its first forward per input shape
        (:class:`~sparsegemm.torch.AutoSparseConv2d`).
    weight_dtype
        None keeps each layer's dtype. ``"int8"`` stores every Linear with at
        least ``min_sparsity`` zeros as a :class:`~sparsegemm.torch.SparseLinearInt8`
        (an int8 bitmap: int8 values, one scale per output row; inference only).
        With format 'auto' each one times its product, sparsegemm's bitmap
        kernel (inputs quantized per row) against torch's dense int8 GEMM
        (FBGEMM, as ``quantize_dynamic``) over the same int8 weight, and runs
        the faster: at the rows seen in ``example_inputs`` (or ``batch_hint``)
        now, else on its first call of each row count; the report shows the
        decisions. Any other format always runs the bitmap kernel. Conv2d
        layers are unaffected and MultiheadAttention stays dense.
        ``"bfloat16"`` stores the kept values of every converted float32
        Linear rounded to bfloat16 (2 bytes each; input, bias and output stay
        float32; the report notes "bfloat16 values"), in the format chosen as
        for float32; a layer that stays dense is unchanged. A bfloat16 model's
        layers store bfloat16 values whatever this says. Conv2d layers are
        unaffected and MultiheadAttention stays dense.
    stack_shared_inputs
        Sibling sparse Linears of one module with the same input width (Hugging
        Face's query, key and value) compute one stacked product while a forward
        pass hands them the same tensor, and compute alone for good once it
        does not (see :class:`~sparsegemm.torch.SharedInputGroup`; the report
        says which). Only where no gradient is recorded. False: never stack.
    fuse_feed_forward
        Two sparse Linears where the first's output goes to the second alone
        (a transformer's ``intermediate.dense`` and ``output.dense``, a
        ``Linear, ReLU, Linear`` chain), as torch.fx proves from the forward
        that calls them, are linked: at inference the first computes both
        products in one kernel call (:func:`sparsegemm.feed_forward`, the
        hidden activations kept in cache) and the second passes that result
        on. Modules and state_dict stay as they are (see
        ``sparsegemm/torch/feed_forward.py``); the report says which layers
        are linked. False: never link.
    kernel_attention
        Attention runs on sparsegemm's kernel at inference
        (:func:`~sparsegemm.torch.scaled_dot_product_attention`): in the
        :class:`~sparsegemm.torch.SparseMultiheadAttention` that replaces an
        ``nn.MultiheadAttention``, and in a Hugging Face model set to torch's SDPA,
        which switches to the ``"sparsegemm"`` attention implementation (see
        :func:`~sparsegemm.torch.use_kernel_attention`; the report's last line says
        so), and where a module with sparse children writes attention out,
        ``softmax(q @ k.transpose(-1, -2) * scale [+ mask], dim=-1) [-> dropout] @ v``
        (traced with torch.fx; the report says which modules). Training, dropout and
        non-float32 inputs run torch's SDPA or the written-out code. False: keep
        torch's SDPA and the written-out attention.
    fuse_layer_norm
        Where a module with sparse children calls an ``nn.LayerNorm`` child on a sum
        it uses nowhere else (``LayerNorm(projection + residual)``, as BERT's output
        blocks do), as torch.fx proves from that module's forward, the add and the
        norm run as one kernel call at inference
        (:func:`~sparsegemm.torch.add_layer_norm`): the module gets an instance-level
        ``forward``, the traced forward with that call replaced, used in eval mode.
        Its class, children and state_dict stay; hooks on the fused LayerNorm no
        longer fire in eval mode. The report's notes name the norms. A post-norm
        ``nn.TransformerEncoderLayer`` (whose forward does not trace) runs its two
        through :class:`~sparsegemm.torch.SparseTransformerEncoderLayer` instead.
        False: never.

    A plain ``nn.TransformerEncoderLayer`` with converted children becomes a
    :class:`~sparsegemm.torch.SparseTransformerEncoderLayer` (its ``__class__`` only:
    the same children, state_dict and result), whose forward without a mask skips
    torch's checks for its fused dense kernel, which sparse projections never pass.
    Its self-attention runs as one kernel call where both projections are CSR.

    In an ``nn.Sequential``, what directly follows a converted layer moves into
    it and is replaced by ``nn.Identity``: an eval-mode ``BatchNorm2d`` after a
    sparse (or auto) Conv2d is folded into its weights and bias, and a ``ReLU``/``GELU``
    becomes the layer's ``activation``, applied to its output right after the
    product (one pass over the output fewer each). The model computes the same
    in eval mode; training it would no longer normalise at a folded BatchNorm.

    With neither ``batch_hint`` nor ``example_inputs``, format 'auto' puts an
    :class:`~sparsegemm.torch.AutoSparseLinear` in place of each candidate
    Linear: it times its candidates on the first forward of each new row count
    (bucketed by powers of two) and keeps the choice, which the report shows.
    Without ``example_inputs``, each candidate Conv2d becomes an
    :class:`~sparsegemm.torch.AutoSparseConv2d`, which times dense against CSR
    on its first forward per input shape. Call :func:`~sparsegemm.torch.freeze`
    afterwards to fix the choices (before export or compile, or for
    reproducible runs).

    Returns
    -------
    The same ``model``, with the report in ``model.sparsegemm_report`` (a
    second call merges its rows into the report already there).

    To save and reload a sparsified model, see :func:`load_sparsified` (a
    ``state_dict``) and :func:`sparsegemm.torch.from_pretrained` (Hugging Face).
    """
    if min_sparsity is None:
        min_sparsity = 0.0 if format == "auto" else DEFAULT_MIN_SPARSITY
    if not 0.0 <= min_sparsity <= 1.0:
        raise ValueError(f"min_sparsity must be in [0, 1], got {min_sparsity}")
    if batch_hint is not None and (isinstance(batch_hint, bool) or not isinstance(batch_hint, int)
                                   or batch_hint < 1):
        raise ValueError(f"batch_hint must be a positive integer, got {batch_hint!r}")
    filter_fn = filter_fn or (lambda module, name: True)
    if isinstance(model, (nn.Linear, nn.Conv2d, nn.MultiheadAttention)):
        raise TypeError("sparsify converts the layers inside a model; for a single layer use "
                        "SparseLinear.from_dense / SparseConv2d.from_dense")
    with torch.no_grad():
        shapes = (_record_example_shapes(model, example_inputs)
                  if format == "auto" and example_inputs is not None else None)
        converter = _Converter(format, blocksize, min_sparsity, min_speedup, batch_hint, shapes,
                               weight_dtype, fuse_feed_forward, fuse_layer_norm,
                               kernel_attention)
        _walk(model, "", converter, filter_fn)
        converter.report.notes.extend(converter.traced_forward_notes())
        if stack_shared_inputs:
            rows = {layer.name: layer for layer in converter.report}
            for group in group_shared_inputs(model):
                for name, member in zip(group.names, group.members):
                    if name in rows:
                        rows[name].shared_member = member
        note = _arrange_attention(model, kernel_attention)
        if note:
            converter.report.notes.append(note)
    previous = getattr(model, "sparsegemm_report", None)
    model.sparsegemm_report = (previous.merged_with(converter.report)
                               if isinstance(previous, SparsifyReport) else converter.report)
    return model
