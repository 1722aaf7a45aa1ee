"""``norm(x + residual)`` in one kernel call, and the module forwards that use it.

A post-norm transformer block (BERT and its family) ends in
``LayerNorm(projection + residual)`` twice per layer. torch runs the add and the
norm as two passes over memory; :func:`add_layer_norm` makes one
(:func:`sparsegemm.layer_norm`). Once a model's Linears are sparse, such passes
are a visible part of what is left.

``sparsify`` finds ``norm(a + b)`` in the forward of a module with sparse
children by tracing that forward with torch.fx (children as leaves), and gives
the module a :class:`ResidualNormForward`: the traced forward with those calls
replaced by :func:`add_layer_norm`, run in eval mode. The module's class,
children and state_dict stay as they are.
"""

from __future__ import annotations

import inspect
import operator
import weakref
from typing import Any, Optional

import numpy as np
import torch.fx

import torch
from torch import Tensor, nn

from .. import _core

__all__ = ["ResidualNormForward", "add_layer_norm", "fuse_residual_norms"]

_KERNEL_DTYPES = (torch.float32, torch.float64)


def _plain(tensor: Any, dtype: torch.dtype) -> bool:
    """A plain strided CPU tensor of ``dtype`` (not a subclass, fx proxy or fake tensor)."""
    return (type(tensor) is Tensor and tensor.dtype == dtype and tensor.is_cpu
            and tensor.layout == torch.strided)


ParameterArrays = tuple[Optional[np.ndarray], Optional[np.ndarray]]


def _kernel_parameters(x: Any, residual: Any, norm: nn.Module) -> ParameterArrays | None:
    """``norm``'s weight and bias as arrays where the kernel applies (see
    :func:`layer_norm_kernel_applies`), else None. Called on every forward, so it reads
    ``_parameters`` rather than the slower module attributes."""
    if type(norm) is not nn.LayerNorm or type(x) is not Tensor:
        return None
    dtype, shape = x.dtype, x.shape
    if (dtype not in _KERNEL_DTYPES or not _plain(x, dtype) or not _plain(residual, dtype)
            or shape != residual.shape or len(shape) == 0 or x.numel() == 0
            or norm.normalized_shape != (shape[-1],)):
        return None
    weight, bias = norm._parameters.get("weight"), norm._parameters.get("bias")
    if torch.is_grad_enabled() and (
            x.requires_grad or residual.requires_grad
            or any(p is not None and p.requires_grad for p in (weight, bias))):
        return None
    if torch.compiler.is_compiling():
        return None
    return _parameter_arrays(norm, weight, bias, dtype)


# Per LayerNorm: its weight and bias as they were, their data pointers, and numpy
# views of them. The views share the parameters' memory, so in-place updates
# (load_state_dict) show; a parameter replaced or moved is viewed anew.
_parameter_cache: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _parameter_arrays(norm: nn.LayerNorm, weight: Tensor | None, bias: Tensor | None,
                      dtype: torch.dtype) -> ParameterArrays | None:
    pointers = tuple(0 if p is None else p.data_ptr() for p in (weight, bias))
    cached = _parameter_cache.get(norm)
    if cached is not None and cached[0] is weight and cached[1] is bias and cached[2] == pointers:
        return cached[3]
    if not all(p is None or _plain(p.detach(), dtype) for p in (weight, bias)):
        return None  # not cached: the next call checks again
    arrays = (_array_of(weight), _array_of(bias))
    _parameter_cache[norm] = (weight, bias, pointers, arrays)
    return arrays


def _array_of(parameter: Tensor | None) -> np.ndarray | None:
    return None if parameter is None else np.ascontiguousarray(parameter.detach().numpy())


def layer_norm_kernel_applies(x: Any, residual: Any, norm: nn.Module) -> bool:
    """Whether :func:`add_layer_norm` runs the kernel: an ``nn.LayerNorm`` over the last
    dimension, ``x`` and ``residual`` plain float32 or float64 CPU tensors of one shape
    and dtype (its parameters too), nothing empty, no gradient recorded and no
    torch.compile trace."""
    return _kernel_parameters(x, residual, norm) is not None


def _rows(tensor: Tensor, cols: int) -> np.ndarray:
    """``tensor`` as a (rows, cols) array with contiguous rows (a view where it can be)."""
    rows = (tensor.detach() if tensor.requires_grad else tensor).numpy().reshape(-1, cols)
    return rows if cols == 1 or rows.strides[1] == rows.itemsize else np.ascontiguousarray(rows)


def add_layer_norm(x: Tensor, residual: Tensor, norm: nn.LayerNorm) -> Tensor:
    """``norm(x + residual)``, on sparsegemm's kernel where
    :func:`layer_norm_kernel_applies`, else as written. The result is a new contiguous
    tensor; it equals torch's to float rounding (the kernel's mean and variance are
    two-pass sums in another order)."""
    parameters = _kernel_parameters(x, residual, norm)
    if parameters is None:
        return norm(x + residual)
    cols = x.shape[-1]
    rows = _rows(x, cols)
    out = np.empty(tuple(x.shape), dtype=rows.dtype)
    _core.layer_norm(rows, _rows(residual, cols), *parameters, out.reshape(-1, cols),
                     float(norm.eps), torch.get_num_threads())
    return torch.from_numpy(out)


class ResidualNormForward:
    """A module's forward in eval mode with its ``norm(a + b)`` calls on
    :func:`add_layer_norm`: ``graph_module`` runs the module's own forward as torch.fx
    traced it in eval mode (children called as they are). In training mode the
    module's class forward runs. Kept in the module's ``__dict__`` as ``forward``, so
    a deep copy of the module copies it along with the module."""

    def __init__(self, module: nn.Module, graph_module: torch.fx.GraphModule,
                 parameters: int) -> None:
        self.module = module
        self.graph_module = graph_module
        self.parameters = parameters  # the forward's arguments, all positional-or-keyword

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self.module.training:
            return type(self.module).forward(self.module, *args, **kwargs)
        if kwargs or len(args) != self.parameters:
            bound = inspect.signature(type(self.module).forward).bind(self.module, *args,
                                                                      **kwargs)
            bound.apply_defaults()
            args = bound.args[1:]
        return self.graph_module.forward(*args)


class _ChildrenAsLeaves(torch.fx.Tracer):
    """Traces a module's own forward only: every direct child is one call."""

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        return "." not in module_qualified_name or super().is_leaf_module(m, module_qualified_name)


def _plain_parameters(module: nn.Module) -> int | None:
    """The number of arguments of ``module``'s class forward when all are plain
    positional-or-keyword ones (so the traced forward takes them in order), else None."""
    try:
        parameters = list(inspect.signature(type(module).forward).parameters.values())[1:]
    except (TypeError, ValueError):
        return None
    if any(p.kind is not inspect.Parameter.POSITIONAL_OR_KEYWORD for p in parameters):
        return None
    return len(parameters)


def _residual_norm_calls(graph: torch.fx.Graph,
                         module: nn.Module) -> list[tuple[torch.fx.Node, torch.fx.Node]]:
    """The calls ``norm(add(a, b))`` in ``graph`` of an ``nn.LayerNorm`` child, where the
    sum goes to that norm alone: (norm call, sum) pairs."""
    children = dict(module.named_children())
    calls = []
    for node in graph.nodes:
        if (node.op != "call_module" or type(children.get(node.target)) is not nn.LayerNorm
                or len(node.args) != 1 or node.kwargs):
            continue
        total = node.args[0]
        if (isinstance(total, torch.fx.Node) and total.op == "call_function"
                and total.target in (operator.add, torch.add) and len(total.args) == 2
                and not total.kwargs and len(total.users) == 1
                and all(isinstance(a, torch.fx.Node) for a in total.args)):
            calls.append((node, total))
    return calls


class ResidualNorm(nn.Module):
    """``norm(x + residual)`` through :func:`add_layer_norm`, as one module call: the
    traced forwards call it so, and a module stays a call when a GraphModule is
    unpickled (its code is traced again, modules kept as leaves), where a plain
    function would be traced through to its fallback."""

    def __init__(self, norm: nn.LayerNorm) -> None:
        super().__init__()
        self.norm = norm

    def forward(self, x: Tensor, residual: Tensor) -> Tensor:
        return add_layer_norm(x, residual, self.norm)


def fuse_residual_norms(module: nn.Module) -> list[str]:
    """Give ``module`` a :class:`ResidualNormForward` where its forward calls an
    ``nn.LayerNorm`` child on a sum used nowhere else; returns those children's names
    (empty when there are none, when the forward does not trace, takes ``*args`` or
    keyword-only arguments, reads the module's own parameters or buffers, or already has
    an instance-level ``forward``). The traced forward calls the children that were
    there: after replacing one, ``del module.forward`` restores the class's forward."""
    parameters = _plain_parameters(module)
    if ("forward" in vars(module) or parameters is None
            or not any(type(child) is nn.LayerNorm for child in module.children())):
        return []
    training = module.training
    module.training = False  # only the module's own code is traced: its eval-mode path
    try:
        graph = _ChildrenAsLeaves().trace(module)
    except Exception:  # noqa: BLE001 - a forward fx cannot trace keeps its own forward
        return []
    finally:
        module.training = training
    norms = _residual_norm_calls(graph, module)
    # A forward that reads the module's own tensors (get_attr) is left alone: a later
    # .to() or .double() replaces buffers, which the traced copy would not see.
    if not norms or any(node.op == "get_attr" for node in graph.nodes):
        return []
    added: dict[str, nn.Module] = {}
    for norm, total in norms:
        name = f"_sparsegemm_residual_{norm.target}"
        added[name] = ResidualNorm(getattr(module, str(norm.target)))
        with graph.inserting_before(norm):
            fused = graph.call_module(name, total.args)
        norm.replace_all_uses_with(fused)
        graph.erase_node(norm)
        graph.erase_node(total)
    graph.lint()
    # Built from a dict, the GraphModule holds the children the graph calls, and the
    # added modules, without making them the module's own.
    graph_module = torch.fx.GraphModule({**dict(module.named_children()), **added}, graph,
                                        class_name=type(module).__name__)
    module.forward = ResidualNormForward(module, graph_module, parameters)
    return [str(norm.target) for norm, _ in norms]
