"""Compact checkpoints of sparse models: the stored entries only, in safetensors.

:func:`save_sparse` writes a model after :func:`~sparsegemm.torch.sparsify`
(or one still carrying ``torch.nn.utils.prune`` masks) as one ``.safetensors``
file:

* a :class:`SparseLinear` / :class:`SparseConv2d` at ``name`` is
  ``name.values``, ``name.indices`` (column or block-column indices in the
  smallest integer type that holds them: uint8, int16 or int32),
  ``name.indptr`` (int32 unless it needs int64) and ``name.bias``;
* a dense layer with a prune mask is ``name.weight.values`` (its kept
  entries, row-major) and ``name.weight.mask`` (the mask as packed bits,
  ``ceil(numel / 8)`` bytes);
* everything else in the ``state_dict`` is stored as it is.

The JSON metadata entry ``"sparsegemm"`` records each sparse module's class,
format, blocksize and constructor arguments.  So a 90 % sparse CSR weight
takes ``0.1 * (4 + 2)`` bytes per dense entry instead of 4 (15 %).

:func:`load_sparse` fills a freshly constructed model of the same
architecture: sparse modules are built with their public constructors and
take the stored tensors as they are (``load_state_dict(..., assign=True)``),
so no dense weight of a sparse layer is ever built.  Build the fresh model
on the meta device (``with torch.device("meta"): model = make_model()``) and
its own dense weights are never allocated either.  Tensors are read one at a
time straight into their own memory (no memory map, no second copy of the
file), so the peak memory of a load is about the file size.
"""

from __future__ import annotations

import json
import math
import os
import struct
from collections.abc import Mapping
from typing import Any, Union

import numpy as np

import torch
from torch import nn

from .checkpoint import _prepared, _set_submodule
from .modules import SparseConv2d, SparseLinear

__all__ = ["save_sparse", "load_sparse", "checkpoint_bytes"]

FORMAT_VERSION = 1
_METADATA_KEY = "sparsegemm"
_SPARSE_CLASSES = {"SparseLinear": SparseLinear, "SparseConv2d": SparseConv2d}
_DTYPES = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8,
    "U8": torch.uint8, "BOOL": torch.bool,
}

PathLike = Union[str, "os.PathLike[str]"]


def _smallest_index_dtype(upper: int) -> torch.dtype:
    """The smallest safetensors integer type holding 0 .. upper - 1."""
    if upper <= 2**8:
        return torch.uint8
    if upper <= 2**15:
        return torch.int16
    return torch.int32


def _sparse_entry(qualified: str, module: nn.Module) -> tuple[dict[str, torch.Tensor], dict]:
    _, cols = module.matrix_shape
    block_cols = cols if module.blocksize is None else -(-cols // module.blocksize[1])
    indptr_dtype = torch.int32 if module.indptr[-1] < 2**31 else torch.int64
    tensors = {
        f"{qualified}.values": module.values.detach(),
        f"{qualified}.indices": module.indices.to(_smallest_index_dtype(block_cols)),
        f"{qualified}.indptr": module.indptr.to(indptr_dtype),
    }
    if module.bias is not None:
        tensors[f"{qualified}.bias"] = module.bias.detach()
    info: dict[str, Any] = {
        "class": type(module).__name__,
        "format": module.format,
        "blocksize": list(module.blocksize) if module.blocksize is not None else None,
        "bias": module.bias is not None,
        "dtype": str(module.values.dtype).replace("torch.", ""),
    }
    if isinstance(module, SparseLinear):
        info.update(in_features=module.in_features, out_features=module.out_features)
    else:
        info.update(in_channels=module.in_channels, out_channels=module.out_channels,
                    kernel_size=list(module.kernel_size), stride=list(module.stride),
                    padding=module.padding if isinstance(module.padding, str)
                    else list(module.padding),
                    dilation=list(module.dilation))
    return tensors, info


def save_sparse(model: nn.Module, path: PathLike) -> dict[str, int]:
    """Write ``model`` to ``path`` (safetensors) storing only the kept entries of sparse layers.

    Returns ``{"file_bytes": ..., "sparse_bytes": ..., "sparse_dense_bytes": ...}``:
    the file size, the bytes of the tensors of sparse layers (sparse modules
    and masked weights), and what those weights would take dense.
    """
    from safetensors.torch import save_file

    tensors: dict[str, torch.Tensor] = {}
    sparse_info: dict[str, dict] = {}
    masked_info: dict[str, dict] = {}
    sparse_bytes = dense_bytes = 0
    covered = set()
    for qualified, module in model.named_modules():
        if any(qualified.startswith(prefix + ".") for prefix in covered):
            continue
        if isinstance(module, (SparseLinear, SparseConv2d)):
            entry, info = _sparse_entry(qualified, module)
            sparse_info[qualified] = info
            covered.add(qualified)
            dense_bytes += math.prod(module.weight_shape) * module.values.element_size()
        elif hasattr(module, "weight_orig") and hasattr(module, "weight_mask"):
            weight = (module.weight_orig * module.weight_mask).detach()
            keep = module.weight_mask.detach().bool()
            bits = np.packbits(keep.reshape(-1).numpy())
            entry = {f"{qualified}.weight.values": weight[keep].contiguous(),
                     f"{qualified}.weight.mask": torch.from_numpy(bits)}
            masked_info[qualified] = {"shape": list(keep.shape),
                                      "dtype": str(weight.dtype).replace("torch.", "")}
            dense_bytes += weight.numel() * weight.element_size()
        else:
            continue
        sparse_bytes += sum(t.numel() * t.element_size() for key, t in entry.items()
                            if not key.endswith(".bias"))
        tensors.update(entry)
    prefixes = tuple(p + "." for p in covered) + tuple(p + ".weight_" for p in masked_info)
    for key, value in model.state_dict().items():
        if not key.startswith(prefixes) and key not in tensors:
            tensors[key] = value.detach()
    metadata = {_METADATA_KEY: json.dumps({"version": FORMAT_VERSION, "sparse": sparse_info,
                                           "masked": masked_info})}
    tensors = {k: v.contiguous() for k, v in tensors.items()}
    save_file(tensors, os.fspath(path), metadata=metadata)
    return {"file_bytes": os.path.getsize(path), "sparse_bytes": sparse_bytes,
            "sparse_dense_bytes": dense_bytes}


def checkpoint_bytes(path: PathLike) -> int:
    """Size of a checkpoint file in bytes."""
    return os.path.getsize(path)


def _read_header(handle) -> tuple[dict, int]:
    (length,) = struct.unpack("<Q", handle.read(8))
    if length > 100 * 2**20:
        raise ValueError(f"not a safetensors file: header of {length} bytes")
    header = json.loads(handle.read(length))
    return header, 8 + length


def _read_tensor(handle, entry: dict, base: int, as_dtype: torch.dtype | None = None
                 ) -> torch.Tensor:
    """Read one tensor from an open file straight into a new tensor's memory.

    With ``as_dtype`` (widening stored indices) the conversion goes through a
    small buffer, chunk by chunk, so the narrow copy is never held whole.
    """
    dtype = _DTYPES.get(entry["dtype"])
    if dtype is None:
        raise ValueError(f"unsupported dtype {entry['dtype']!r} in checkpoint")
    start, stop = entry["data_offsets"]
    shape = entry["shape"]
    count = math.prod(shape)
    itemsize = dtype.itemsize
    if stop - start != count * itemsize:
        raise ValueError(f"corrupt checkpoint: {stop - start} bytes for {count} x {dtype}")
    handle.seek(base + start)
    if as_dtype is None or as_dtype == dtype:
        tensor = torch.empty(shape, dtype=dtype)
        _read_into(handle, tensor)
        return tensor
    tensor = torch.empty(count, dtype=as_dtype)
    chunk = torch.empty(min(count, _CHUNK_ELEMENTS), dtype=dtype)
    for first in range(0, count, _CHUNK_ELEMENTS):
        piece = chunk[: min(_CHUNK_ELEMENTS, count - first)]
        _read_into(handle, piece)
        tensor[first : first + piece.numel()] = piece
    return tensor.reshape(shape)


_CHUNK_ELEMENTS = 1 << 18


def _read_into(handle, tensor: torch.Tensor) -> None:
    nbytes = tensor.numel() * tensor.element_size()
    if nbytes == 0:
        return
    view = tensor.reshape(-1).view(torch.uint8).numpy() if tensor.dtype != torch.bool else \
        tensor.reshape(-1).numpy().view(np.uint8)
    if handle.readinto(memoryview(view)) != nbytes:
        raise ValueError("corrupt checkpoint: file ends early")



def _build_sparse(info: Mapping[str, Any], nnz: int) -> nn.Module:
    cls = _SPARSE_CLASSES.get(info["class"])
    if cls is None:
        raise ValueError(f"unknown sparse module class {info['class']!r} in checkpoint")
    common = dict(nnz=nnz, format=info["format"],
                  blocksize=tuple(info["blocksize"]) if info["blocksize"] else None,
                  device="meta", dtype=getattr(torch, info["dtype"]))
    if cls is SparseLinear:
        return SparseLinear(info["in_features"], info["out_features"], bias=info["bias"], **common)
    padding = info["padding"]
    return SparseConv2d(info["in_channels"], info["out_channels"], tuple(info["kernel_size"]),
                        tuple(info["stride"]), padding if isinstance(padding, str)
                        else tuple(padding), tuple(info["dilation"]), 1, info["bias"], **common)


def load_sparse(model: nn.Module, path: PathLike, *, strict: bool = True,
                prepare: bool = True) -> nn.Module:
    """Load a :func:`save_sparse` checkpoint into ``model`` (same architecture), in place.

    Layers stored sparse are replaced by sparse modules built from the
    checkpoint; masked layers get their dense weight back with the mask
    attached as ``torch.nn.utils.prune`` does; all other tensors are loaded
    with ``load_state_dict(strict=strict, assign=True)``, which also
    materialises a model built on the meta device.  With ``prepare`` (default)
    the model is then arranged for inference as :func:`~sparsegemm.torch.sparsify`
    left it (see :func:`~sparsegemm.torch.load_sparsified`).  Returns ``model``.
    """
    from ..prune.api import apply_mask

    with open(path, "rb") as handle:
        header, base = _read_header(handle)
        meta = json.loads(header.get("__metadata__", {}).get(_METADATA_KEY, "null") or "null")
        if not isinstance(meta, dict) or meta.get("version") != FORMAT_VERSION:
            raise ValueError(f"{os.fspath(path)!r} is not a sparsegemm checkpoint "
                             f"(version {FORMAT_VERSION})")
        entries = {k: v for k, v in header.items() if k != "__metadata__"}
        used: set = set()
        loaded: dict[str, torch.Tensor] = {}

        def take(key: str, as_dtype: torch.dtype | None = None) -> torch.Tensor:
            if key not in entries:
                raise ValueError(f"checkpoint lacks tensor {key!r}")
            used.add(key)
            return _read_tensor(handle, entries[key], base, as_dtype)

        for qualified, info in meta["sparse"].items():
            values = take(f"{qualified}.values")
            state = {"values": values, "indices": take(f"{qualified}.indices", torch.int32),
                     "indptr": take(f"{qualified}.indptr", torch.int64)}
            if info["bias"]:
                state["bias"] = take(f"{qualified}.bias")
            module = _build_sparse(info, state["indices"].numel())
            module.load_state_dict(state, assign=True)
            module.values.requires_grad_(True)
            _set_submodule(model, qualified, module)
            loaded.update({f"{qualified}.{key}": t for key, t in module.state_dict().items()})
        for qualified, info in meta["masked"].items():
            shape = tuple(info["shape"])
            kept = take(f"{qualified}.weight.values")
            bits = take(f"{qualified}.weight.mask").numpy()
            keep = torch.from_numpy(np.unpackbits(bits, count=math.prod(shape)).astype(bool))
            weight = torch.zeros(math.prod(shape), dtype=kept.dtype)
            weight[keep] = kept
            layer = model.get_submodule(qualified)
            if hasattr(layer, "weight_orig"):
                raise ValueError(f"load into a fresh model: {qualified!r} already has a mask")
            layer.weight = nn.Parameter(weight.reshape(shape))
            apply_mask(layer, keep.reshape(shape))
            loaded.update({f"{qualified}.weight_orig": layer.weight_orig,
                           f"{qualified}.weight_mask": layer.weight_mask})
        loaded.update({k: _read_tensor(handle, e, base) for k, e in entries.items()
                       if k not in used})
    model.load_state_dict(loaded, strict=strict, assign=True)
    return _prepared(model) if prepare and meta["sparse"] else model
