"""A module's forward traced with torch.fx and rewritten onto sparsegemm's kernels.

``sparsify`` traces the forward of each module with sparse children (children as
leaves, in eval mode) and rewrites two patterns in it:

* ``norm(a + b)`` of an ``nn.LayerNorm`` child, the sum used nowhere else, becomes
  one :func:`~sparsegemm.torch.add_layer_norm` call (:class:`ResidualNorm`);
* eager attention written out as ``softmax(q @ k.transpose(-1, -2) * scale [+ mask],
  dim=-1) [-> dropout] @ v`` becomes one call of the attention kernel
  (:class:`~sparsegemm.torch.attention.EagerAttention`). Where its q, k and v are
  three Linears over one input, split into heads and merged back as Hugging Face writes
  it, and its result goes to an output Linear, the whole chain becomes one
  :class:`~sparsegemm.torch.attention.SelfAttentionChain`: one kernel call where the
  projections run CSR.

The module then runs a :class:`TracedForward` in eval mode: its own traced forward
with those calls replaced. Its class, children and state_dict stay as they are.
"""

from __future__ import annotations

import inspect
from typing import Any

import torch.fx

from torch import nn

from .attention import (
    EagerAttention,
    SelfAttentionChain,
    eager_attention_calls,
    self_attention_chains,
)
from .layer_norm import ResidualNorm, residual_norm_calls

__all__ = ["TracedForward", "fuse_forward"]


class TracedForward:
    """A module's forward in eval mode with its patterns on sparsegemm's kernels: it runs
    the module's own forward as torch.fx traced it in eval mode (children called as they
    are), with the rewrites of :func:`fuse_forward`. In training mode the module's class
    forward runs. Kept in the module's ``__dict__`` as ``forward``, so a deep copy of the
    module copies it along with the module.

    A trace takes the branches of ``x is None`` tests as they went for the arguments it
    saw, so there is one traced forward per pattern of None arguments, made on the first
    call with that pattern (None where nothing is rewritten or the forward does not
    trace: the class forward runs)."""

    def __init__(self, module: nn.Module, names: tuple[str, ...], norms: bool,
                 attention: bool) -> None:
        self.module = module
        self.names = names  # the forward's arguments, all positional-or-keyword
        self.norms = norms
        self.attention = attention
        self.graphs: dict[tuple[bool, ...], torch.fx.GraphModule | None] = {}

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self.module.training:
            return type(self.module).forward(self.module, *args, **kwargs)
        if kwargs or len(args) != len(self.names):
            bound = inspect.signature(type(self.module).forward).bind(self.module, *args,
                                                                      **kwargs)
            bound.apply_defaults()
            args = bound.args[1:]
        nones = tuple(arg is None for arg in args)
        if nones not in self.graphs:
            self.graphs[nones] = fused_graph(self.module, self.names, nones, self.norms,
                                             self.attention)[0]
        graph_module = self.graphs[nones]
        if graph_module is None:
            return type(self.module).forward(self.module, *args)
        return graph_module.forward(*(arg for arg in args if arg is not None))


class ChildrenAsLeaves(torch.fx.Tracer):
    """Traces a module's own forward only: every direct child is one call."""

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        return "." not in module_qualified_name or super().is_leaf_module(m, module_qualified_name)


def _plain_parameters(module: nn.Module) -> list[inspect.Parameter] | None:
    """The arguments of ``module``'s class forward when all are plain
    positional-or-keyword ones (so the traced forward takes them in order), else None."""
    try:
        parameters = list(inspect.signature(type(module).forward).parameters.values())[1:]
    except (TypeError, ValueError):
        return None
    if any(p.kind is not inspect.Parameter.POSITIONAL_OR_KEYWORD for p in parameters):
        return None
    return parameters


def _with_nones(module: nn.Module, names: tuple[str, ...], nones: tuple[bool, ...]) -> nn.Module:
    """A module whose forward takes the arguments of ``module``'s that ``nones`` does not
    mark and calls ``module``'s class forward with None for the others. It holds
    ``module``'s children as its own, so a trace of it calls them by their names.
    (torch.fx's own way, ``concrete_args``, leaves its function patcher broken for every
    later trace in the process, torch 2.13.)"""
    kept = [name for name, none in zip(names, nones) if not none]
    arguments = ", ".join("None" if none else name for name, none in zip(names, nones))
    namespace: dict[str, Any] = {}
    exec(f"def forward(self, {', '.join(kept)}):\n"  # noqa: S102 - names from a signature
         f"    return self.call_forward({arguments})\n", namespace)
    wrapper = type(type(module).__name__, (nn.Module,), {"forward": namespace["forward"]})()
    for name, child in module.named_children():
        wrapper.add_module(name, child)
    wrapper.__dict__["call_forward"] = lambda *args: type(module).forward(module, *args)
    return wrapper


def fused_graph(module: nn.Module, names: tuple[str, ...], nones: tuple[bool, ...],
                norms: bool, attention: bool
                ) -> tuple[torch.fx.GraphModule | None, list[str], int, int]:
    """``module``'s forward traced for arguments ``names`` that are None where ``nones``
    says so, with its residual norms (``norms``) and eager attentions (``attention``) on
    the kernels: (the GraphModule, the norms' names, the number of attentions, the number
    of those in a :class:`SelfAttentionChain`), or (None, [], 0, 0) when there is nothing
    to rewrite or the forward does not trace."""
    training = module.training
    module.training = False  # only the module's own code is traced: its eval-mode path
    try:
        graph = ChildrenAsLeaves().trace(_with_nones(module, names, nones))
    except Exception:  # noqa: BLE001 - a forward fx cannot trace keeps its own forward
        return None, [], 0, 0
    finally:
        module.training = training
    norm_calls = residual_norm_calls(graph, module) if norms else []
    attention_calls = eager_attention_calls(graph, module) if attention else []
    # A forward that reads the module's own tensors (get_attr) is left alone: a later
    # .to() or .double() replaces buffers, which the traced copy would not see.
    if not (norm_calls or attention_calls) or any(node.op == "get_attr" for node in graph.nodes):
        return None, [], 0, 0
    added: dict[str, nn.Module] = {}
    for norm, total in norm_calls:
        name = f"_sparsegemm_residual_{norm.target}"
        added[name] = ResidualNorm(getattr(module, str(norm.target)))
        with graph.inserting_before(norm):
            fused = graph.call_module(name, total.args)
        _replace(graph, norm, fused, [norm, total])
    if attention_calls:
        added["_sparsegemm_eager_attention"] = EagerAttention()
    for call in attention_calls:
        with graph.inserting_before(call.output):
            fused = graph.call_module("_sparsegemm_eager_attention", call.arguments)
        _replace(graph, call.output, fused, call.replaced)
    children = dict(module.named_children())
    chains = (self_attention_chains(graph, "_sparsegemm_eager_attention", children)
              if attention_calls else [])
    for index, chain in enumerate(chains):
        name = f"_sparsegemm_self_attention_{index}"
        added[name] = SelfAttentionChain(*(children[n] for n in chain.projections))
        with graph.inserting_before(chain.output):
            fused = graph.call_module(name, (chain.input, *chain.arguments))
        _replace(graph, chain.output, fused, chain.replaced)
    graph.lint()
    # Built from a dict, the GraphModule holds the children the graph calls, and the
    # added modules, without making them the module's own.
    graph_module = torch.fx.GraphModule({**children, **added}, graph,
                                        class_name=type(module).__name__)
    return (graph_module, [str(norm.target) for norm, _ in norm_calls], len(attention_calls),
            len(chains))


def _replace(graph: torch.fx.Graph, output: torch.fx.Node, fused: torch.fx.Node,
             replaced: list[torch.fx.Node]) -> None:
    """Let ``fused`` stand for ``output`` and erase ``replaced`` (from the output back:
    each loses its last user in turn)."""
    output.replace_all_uses_with(fused)
    for node in replaced:
        graph.erase_node(node)


def fuse_forward(module: nn.Module, *, norms: bool = True,
                 attention: bool = True) -> tuple[list[str], int, int]:
    """Give ``module`` a :class:`TracedForward` where its forward calls an ``nn.LayerNorm``
    child on a sum used nowhere else (with ``norms``) or writes attention out eagerly
    (with ``attention``), as traced with the arguments that default to None left None.
    Returns the names of the norms fused, the number of attention calls replaced and how
    many of those became a :class:`SelfAttentionChain` with their projections; nothing
    happens ([], 0, 0) when there are none, when the forward does not trace, takes
    ``*args`` or keyword-only arguments, reads the module's own parameters or buffers,
    or already has an instance-level ``forward``. The traced forward calls the children
    that were there: after replacing one, ``del module.forward`` restores the class's
    forward."""
    parameters = _plain_parameters(module)
    if "forward" in vars(module) or parameters is None or not (norms or attention):
        return [], 0, 0
    if not attention and not any(type(child) is nn.LayerNorm for child in module.children()):
        return [], 0, 0  # the common case, without tracing
    names = tuple(p.name for p in parameters)
    nones = tuple(p.default is None for p in parameters)
    graph_module, norm_names, attentions, chains = fused_graph(module, names, nones, norms,
                                                               attention)
    if graph_module is None:
        return [], 0, 0
    traced = TracedForward(module, names, norms, attention)
    traced.graphs[nones] = graph_module
    module.forward = traced
    return norm_names, attentions, chains
