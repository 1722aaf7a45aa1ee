"""``norm(x + residual)`` in one kernel call, and the module forwards that use it.

A post-norm transformer block (BERT and its family) ends in
``LayerNorm(projection + residual)`` twice per layer. torch runs the add and the
norm as two passes over memory; :func:`add_layer_norm` makes one
(:func:`sparsegemm.layer_norm`). Once a model's Linears are sparse, such passes
are a visible part of what is left.

``sparsify`` finds ``norm(a + b)`` in the forward of a module with sparse
children (:func:`residual_norm_calls`) and replaces it by a :class:`ResidualNorm`
call in the module's traced forward (:mod:`.traced_forward`).
"""

from __future__ import annotations

import operator
import weakref
from typing import Any, Optional

import numpy as np
import torch.fx

import torch
from torch import Tensor, nn

from .. import _core

__all__ = ["ResidualNorm", "add_layer_norm"]

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


def residual_norm_calls(graph: torch.fx.Graph,
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
