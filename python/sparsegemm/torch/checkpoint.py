"""Reloading a sparsified model: its state dict into a fresh, dense model.

A sparse layer saves ``values``, ``indptr`` and ``indices`` (and ``bias``)
instead of ``weight``; the shape of ``values`` records the format: (nnz,) for
CSR, (nblocks, R, C) for BSR with R x C blocks. A freshly built model has
dense layers there, so a plain ``load_state_dict`` (or Hugging Face's
``from_pretrained``) finds ``weight`` missing and ``values`` unexpected.
:func:`load_sparsified` first turns exactly the layers the state dict records
as sparse into sparse modules of the recorded format, then loads;
:func:`from_pretrained` does the same for a Hugging Face checkpoint directory.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from .attention import SparseMultiheadAttention
from .modules import SparseConv2d, SparseLinear, _linear_weight, is_linear_map

__all__ = ["from_pretrained", "load_sparsified"]

_SPARSE_KEYS = ("values", "indptr", "indices")


def sparse_layer_names(state_dict: Mapping[str, Any]) -> list[str]:
    """Qualified names of the layers that ``state_dict`` stores as sparse."""
    names = []
    for key in state_dict:
        if key == "values" or key.endswith(".values"):
            name = key[: -len("values")].rstrip(".")
            prefix = f"{name}." if name else ""
            if (all(prefix + part in state_dict for part in _SPARSE_KEYS)
                    or prefix + "bitmap" in state_dict):
                names.append(name)
    return names


def _empty_sparse_linear(dense: nn.Module, values: Tensor, bitmap: bool = False) -> SparseLinear:
    """A SparseLinear shaped like the linear map ``dense``, in the format the state dict
    records: a ``bitmap`` key, else BSR when ``values`` holds blocks, else CSR."""
    weight, _ = _linear_weight(dense)
    blocksize = (values.shape[1], values.shape[2]) if values.dim() == 3 else None
    format = "bitmap" if bitmap else ("csr" if blocksize is None else "bsr")
    module = SparseLinear(weight.shape[1], weight.shape[0], bias=dense.bias is not None,
                          format=format, blocksize=blocksize,
                          device=weight.device, dtype=weight.dtype)
    module.values.requires_grad_(weight.requires_grad)
    return module


def _empty_sparse_conv(conv: nn.Conv2d) -> SparseConv2d:
    module = SparseConv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride,
                          conv.padding, conv.dilation, conv.groups, conv.bias is not None,
                          conv.padding_mode, device=conv.weight.device, dtype=conv.weight.dtype)
    module.values.requires_grad_(conv.weight.requires_grad)
    return module


def _set_submodule(model: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent_name), child, module)


def _sparse_attention(mha: nn.MultiheadAttention, name: str,
                      state_dict: Mapping[str, Any]) -> SparseMultiheadAttention:
    """``mha`` split into projections, each sparse where ``state_dict`` records it so."""
    def convert(linear: nn.Linear, projection: str) -> nn.Module:
        values = state_dict.get(f"{name}.{projection}.values")
        if values is None:
            return linear
        return _empty_sparse_linear(linear, values, f"{name}.{projection}.bitmap" in state_dict)

    attention = SparseMultiheadAttention.from_dense(mha, convert)
    stacked = state_dict.get(f"{name}.in_proj.values")
    if stacked is not None:  # q, k and v stacked for self-attention (see sparsify)
        e = mha.embed_dim
        like = mha.out_proj.weight
        dense = nn.Linear(e, 3 * e, bias=f"{name}.in_proj.bias" in state_dict,
                          device=like.device, dtype=like.dtype)
        attention.in_proj = _empty_sparse_linear(dense, stacked,
                                                 f"{name}.in_proj.bitmap" in state_dict)
    return attention.train(mha.training)


def convert_recorded_layers(model: nn.Module, state_dict: Mapping[str, Any]) -> list[str]:
    """Replace each dense layer of ``model`` that ``state_dict`` stores as sparse by an
    empty sparse module of the recorded format; returns the converted layers' names."""
    converted = []
    for name in sparse_layer_names(state_dict):
        if not name:
            raise ValueError("the state dict is a single sparse layer: build a SparseLinear or "
                             "SparseConv2d and call its load_state_dict")
        parent_name = name.rpartition(".")[0]
        try:
            parent = model.get_submodule(parent_name)
            if isinstance(parent, SparseMultiheadAttention):  # converted with a sibling
                continue
            if isinstance(parent, nn.MultiheadAttention):  # a projection of a packed attention
                _set_submodule(model, parent_name,
                               _sparse_attention(parent, parent_name, state_dict))
                converted.append(parent_name)
                continue
            module = model.get_submodule(name)
        except AttributeError:
            if ".variants." in f"{name}.":
                raise ValueError(f"{name!r} comes from an AutoSparseLinear or AutoSparseConv2d "
                                 f"that was not frozen: "
                                 f"call sparsegemm.torch.freeze(model) before saving") from None
            raise ValueError(f"the state dict holds a sparse weight for {name!r}, which this model "
                             f"does not have: is it the same architecture?") from None
        if isinstance(module, (SparseLinear, SparseConv2d)):
            continue  # already sparse: its own load takes the stored pattern
        values = state_dict[f"{name}.values"]
        if is_linear_map(module):
            replacement: nn.Module = _empty_sparse_linear(module, values,
                                                          f"{name}.bitmap" in state_dict)
        elif isinstance(module, nn.Conv2d):
            replacement = _empty_sparse_conv(module)
        else:
            raise ValueError(f"the state dict holds a sparse weight for {name!r}, but the model "
                             f"has a {type(module).__name__} there; sparsegemm converts Linear, "
                             f"transformers' Conv1D and Conv2d layers")
        _set_submodule(model, name, replacement)
        converted.append(name)
    return converted


def load_sparsified(model: nn.Module, state_dict: Mapping[str, Any], *,
                    strict: bool = True, prepare: bool = True) -> nn.Module:
    """Load the state dict of a sparsified model into ``model``, in place.

    ``model`` is a fresh instance of the architecture (dense layers, as built),
    or an already sparsified one. Every layer the state dict stores as sparse
    becomes a :class:`SparseLinear` (CSR or BSR, as recorded; also for
    ``nn.Linear`` subclasses and transformers' ``Conv1D``),
    :class:`SparseConv2d` or, for ``nn.MultiheadAttention``, a
    :class:`SparseMultiheadAttention`; then ``model.load_state_dict(state_dict,
    strict=strict)`` runs. With ``prepare`` (default), the model is then arranged for
    inference as :func:`sparsify` left it (:func:`~sparsegemm.torch.sparsify.prepare_loaded`:
    fused activations, linked feed-forward pairs, stacked q/k/v, attention on the
    kernel), which the state dict does not record. Returns ``model``. Build optimizers
    after loading.

    Example::

        torch.save(sparsify(model).state_dict(), "sparse.pt")
        model = load_sparsified(MyModel(), torch.load("sparse.pt"))
    """
    convert_recorded_layers(model, state_dict)
    model.load_state_dict(state_dict, strict=strict)
    return _prepared(model) if prepare else model


def _prepared(model: nn.Module) -> nn.Module:
    from .sparsify import prepare_loaded  # sparsify imports this module's neighbours

    return prepare_loaded(model)


def _read_checkpoint(directory: str | os.PathLike) -> dict[str, Tensor]:
    """The tensors of a ``save_pretrained`` directory (safetensors, one file or sharded)."""
    from safetensors.torch import load_file

    index = os.path.join(directory, "model.safetensors.index.json")
    if os.path.exists(index):
        with open(index) as handle:
            files = sorted(set(json.load(handle)["weight_map"].values()))
    elif os.path.exists(os.path.join(directory, "model.safetensors")):
        files = ["model.safetensors"]
    else:
        raise FileNotFoundError(f"no model.safetensors (or its index) in {directory!r}; "
                                f"from_pretrained reads a local save_pretrained directory")
    tensors: dict[str, Tensor] = {}
    for name in files:
        tensors.update(load_file(os.path.join(directory, name)))
    return tensors


def from_pretrained(model_class: Any, directory: str | os.PathLike, *, prepare: bool = True,
                    **kwargs: Any) -> nn.Module:
    """``model_class.from_pretrained(directory, **kwargs)`` for a model saved after
    :func:`sparsify`: the sparse layers come back sparse, with their weights.

    ``model_class`` is a transformers model class (``BertModel``,
    ``AutoModelForCausalLM``, ...); ``directory`` is a local ``save_pretrained``
    directory. Hugging Face loads everything it knows (config, dense layers,
    tied weights) and would re-initialise the sparse layers at random; here
    they are then converted to the recorded formats and loaded from the files.
    Plain ``model_class.from_pretrained`` on such a directory lists the sparse
    layers' ``values``/``indptr``/``indices`` as unexpected and their
    ``weight`` as missing: use this function instead. ``prepare`` arranges the
    model for inference as :func:`load_sparsified` does.
    """
    import transformers

    verbosity = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_error()  # its report lists the sparse keys we load next
    try:
        model = model_class.from_pretrained(directory, **kwargs)
    finally:
        transformers.logging.set_verbosity(verbosity)
    state_dict = _read_checkpoint(directory)
    converted = convert_recorded_layers(model, state_dict)
    with torch.no_grad():
        for name in converted:
            prefix = f"{name}."
            layer = {key[len(prefix):]: value for key, value in state_dict.items()
                     if key.startswith(prefix)}
            model.get_submodule(name).load_state_dict(layer, strict=True)
    return _prepared(model) if prepare else model
