"""Two sparse Linears in a row, run as one feed-forward kernel at inference.

:func:`sparsify` links a CSR layer to the layer that alone consumes its output
(a transformer's ``intermediate.dense`` and ``output.dense``, two Linears of an
``nn.Sequential``) when it can prove that data flow by tracing the modules that
call them. The modules and their state_dict stay as they were: on the
inference fast path the first layer computes both products in one call
(``sparsegemm.feed_forward``, whose hidden activations never make a round trip
through memory) and hands its output to the second layer, which returns that
very tensor instead of multiplying it again. Whenever either layer would not
take the fast path (gradients recorded, torch.compile tracing, another dtype,
a format other than CSR, an auto layer that has not decided for this row
count), each layer runs as it always does.

``nn.Dropout`` children between the two (``nn.TransformerEncoderLayer``'s
``linear2(dropout(activation(linear1(x))))``) are linked through: the pair runs
as one only while each of them is in eval mode, where dropout hands its input
on as the very same tensor.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache
from typing import Any, Optional

import torch
from torch import Tensor, nn

from . import ops as _ops

# Instance attributes kept out of nn.Module's registries (a linked partner is not a child).
_FEEDS = "_feeds_layer"
_FED_OUTPUT = "_fed_output"


def link(first: nn.Module, parent: nn.Module, name: str,
         dropouts: Sequence[nn.Dropout] = ()) -> None:
    """Mark the layer in ``parent``'s child slot ``name`` as the only consumer of ``first``'s
    output (see the module docstring), reached through ``dropouts``. The slot, not the
    module in it, is linked: a layer put there later (``freeze`` resolving an auto layer)
    is the one that runs."""
    first.__dict__[_FEEDS] = (parent, name, tuple(dropouts))


@cache
def _eval_dropout_passes_its_input() -> bool:
    """Whether this torch's dropout in eval mode returns its input tensor itself (the
    second layer recognises the fed output by identity)."""
    probe = torch.zeros(1)
    return nn.Dropout(0.5).eval()(probe) is probe


def _dropouts_pass_through(first: nn.Module) -> bool:
    target = first.__dict__[_FEEDS]
    dropouts = target[2] if len(target) > 2 else ()  # a link pickled before dropouts
    return not dropouts or (_eval_dropout_passes_its_input()
                            and not any(dropout.training for dropout in dropouts))


def carry_link(old: nn.Module, new: nn.Module) -> None:
    """Give ``new``, which replaces ``old`` in the model, ``old``'s link (if any)."""
    target = old.__dict__.get(_FEEDS)
    if target is not None:
        new.__dict__[_FEEDS] = target


def linked_layer(module: nn.Module) -> Optional[nn.Module]:
    """The layer that ``module``'s output feeds now, where :func:`link` joined them."""
    target = module.__dict__.get(_FEEDS)
    return None if target is None else target[0]._modules.get(target[1])


def csr_layer_for(module: nn.Module, rows: int) -> Any:
    """The CSR ``SparseLinear`` that ``module`` runs for ``rows`` rows, or None: a
    ``SparseLinear`` stands for itself, an ``AutoSparseLinear`` for its decision at that
    row count, once made."""
    decisions = getattr(module, "decisions", None)
    if decisions is not None:  # an AutoSparseLinear
        from .auto import row_bucket

        decision = decisions.get(row_bucket(rows))
        if decision is None or getattr(module, "_shared_input", None) is not None:
            return None
        module = module._module(decision)  # type: ignore[operator]  # an AutoSparseLinear
    if (getattr(module, "format", None) != "csr" or getattr(module, "blocksize", None) is not None
            or getattr(module, "_shared_input", None) is not None):
        return None
    return module


def fused_output(first: nn.Module, x: Tensor) -> Optional[Tensor]:
    """``second(first(x))`` in one kernel call where ``first`` is linked and both layers
    would take the inference fast path, else None (then each runs on its own)."""
    if type(x) is not Tensor:  # an fx proxy or a tensor subclass: each layer runs alone
        return None
    second = linked_layer(first)
    if second is None or x.dim() == 0 or not _dropouts_pass_through(first):
        return None
    cols = x.shape[-1]
    rows = x.numel() // cols if cols else 0
    one, two = csr_layer_for(first, rows), csr_layer_for(second, rows)
    if one is None or two is None or cols != one.in_features:
        return None
    parameters1, parameters2 = one._parameters, two._parameters
    values1, bias1 = parameters1["values"], parameters1.get("bias")
    values2, bias2 = parameters2["values"], parameters2.get("bias")
    if not (_ops.can_call_kernel_directly(x, values1, bias1)
            and _ops.can_call_kernel_directly(x, values2, bias2)):
        return None
    operands1 = one._kernel_operands.get(one._buffers["indptr"], one._buffers["indices"], values1,
                                         bias1, one._matrix_shape)
    operands2 = two._kernel_operands.get(two._buffers["indptr"], two._buffers["indices"], values2,
                                         bias2, two._matrix_shape)
    y = _ops.linear_pair_direct(x, operands1, one.activation, operands2)
    if two.activation is not None:
        from .modules import apply_activation

        y = apply_activation(y, two.activation)
    # Keyed by identity, so that threads running one model at once each find their own
    # output. An entry holds its tensor alive, so no other tensor can take its id
    # before the second layer consumes it.
    fed = second.__dict__.get(_FED_OUTPUT)
    if fed is None:
        fed = second.__dict__.setdefault(_FED_OUTPUT, {})
    fed[id(y)] = y
    return y


def take_fed_input(second: nn.Module, x: Tensor) -> bool:
    """True when ``x`` is the output that the linked layer before ``second`` already
    computed for it (``second`` then returns ``x`` as it is)."""
    fed = second.__dict__.get(_FED_OUTPUT)
    return fed is not None and fed.pop(id(x), None) is x
