"""Int8 sparse Linear layers: a pruned weight stored as int8, for inference.

:class:`SparseLinearInt8` keeps a pruned ``nn.Linear`` weight as
:class:`sparsegemm.Int8BitmapMatrix` arrays (one bit per weight, the kept
weights as int8, one float32 scale per output row) in three buffers, so its
``state_dict`` holds the compact arrays and the scales. Its forward quantizes
each row of ``x`` on the fly and multiplies exactly in int32 (see
:mod:`sparsegemm.quantized` for the arithmetic), as torch's ``quantize_dynamic``
does for dense weights, while streaming ``(1 - s) + 1/8`` bytes per weight
instead of 1.

It is inference-only: int8 values have no gradient (fine-tune in float32,
convert last). The product is the custom op ``sparsegemm::int8_bitmap_linear``,
so ``torch.compile`` and ``torch.export`` trace through it.
"""

from __future__ import annotations

import threading
import weakref
from typing import Any, Optional

import numpy as np

import torch
from torch import Tensor, nn

from ..quantized import Int8BitmapMatrix
from ._cache import as_numpy, other_caches
from .modules import _linear_weight, apply_activation, is_hf_conv1d, linear_holding

__all__ = ["SparseLinearInt8", "int8_bitmap_linear"]


class _Int8MatrixCache:
    """Validated :class:`Int8BitmapMatrix` per (bitmap, values, scales) tensors.

    Building one copies and checks the arrays, so it is built once and reused
    while the three tensors are the same storages with the same ``_version``
    counters (an in-place edit or ``load_state_dict`` rebuilds it).
    """

    def __init__(self) -> None:
        self._entries: dict[tuple, tuple[tuple, tuple, Int8BitmapMatrix]] = {}
        self._lock = threading.Lock()

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def matrix(self, bitmap: Tensor, values: Tensor, scales: Tensor, cols: int) -> Int8BitmapMatrix:
        tensors = (bitmap, values, scales)
        key = tuple(t.data_ptr() for t in tensors) + (cols,)
        versions = tuple(t._version for t in tensors)
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None:
                refs, held_versions, matrix = entry
                storages = tuple(ref() for ref in refs)
                if held_versions == versions and all(
                        s is t.untyped_storage() for s, t in zip(storages, tensors)):
                    return matrix
            matrix = Int8BitmapMatrix(
                (as_numpy(values.contiguous()), as_numpy(bitmap.contiguous()).view(np.uint64),
                 as_numpy(scales.contiguous())),
                shape=(bitmap.shape[0], cols))

            def forget(_ref: weakref.ref, key: tuple = key) -> None:
                self._entries.pop(key, None)

            refs = tuple(weakref.ref(t.untyped_storage(), forget) for t in tensors)
            self._entries[key] = (refs, versions, matrix)
            return matrix


int8_matrices = _Int8MatrixCache()
other_caches.append(int8_matrices)


def _check_int8_operands(x: Tensor, bitmap: Tensor, values: Tensor, scales: Tensor, cols: int,
                         bias: Optional[Tensor]) -> None:
    words = -(-cols // 64)
    if bitmap.dtype != torch.int64 or bitmap.dim() != 2 or bitmap.shape[1] != words:
        raise ValueError(f"sparsegemm.int8_bitmap_linear: bitmap must be int64 of shape "
                         f"(rows, {words}), got {bitmap.dtype} {tuple(bitmap.shape)}")
    if values.dtype != torch.int8 or values.dim() != 1:
        raise ValueError(f"sparsegemm.int8_bitmap_linear: values must be a 1-d int8 tensor, "
                         f"got {values.dtype} {tuple(values.shape)}")
    if scales.dtype != torch.float32 or tuple(scales.shape) != (bitmap.shape[0],):
        raise ValueError(f"sparsegemm.int8_bitmap_linear: scales must be float32 of shape "
                         f"({bitmap.shape[0]},), got {scales.dtype} {tuple(scales.shape)}")
    if not x.is_floating_point():
        raise TypeError(f"sparsegemm.int8_bitmap_linear: x must be floating point, got {x.dtype}")
    if x.dim() == 0 or x.shape[-1] != cols:
        raise ValueError(f"sparsegemm.int8_bitmap_linear: x must have shape (..., {cols}), "
                         f"got {tuple(x.shape)}")
    if bias is not None and tuple(bias.shape) != (bitmap.shape[0],):
        raise ValueError(f"sparsegemm.int8_bitmap_linear: bias must have shape "
                         f"({bitmap.shape[0]},), got {tuple(bias.shape)}")
    if any(not t.is_cpu for t in (x, bitmap, values, scales)):
        raise ValueError("sparsegemm.int8_bitmap_linear runs on CPU tensors only")


@torch.library.custom_op("sparsegemm::int8_bitmap_linear", mutates_args=())
def int8_bitmap_linear(x: Tensor, bitmap: Tensor, values: Tensor, scales: Tensor, cols: int,
                       bias: Optional[Tensor]) -> Tensor:
    """``x @ W.T + bias`` for the int8 bitmap weight (bitmap, values, scales), x quantized
    per row; computed in float32 and returned in ``x``'s dtype."""
    _check_int8_operands(x, bitmap, values, scales, cols, bias)
    matrix = int8_matrices.matrix(bitmap, values, scales, cols)
    x32 = x.detach().to(torch.float32).contiguous()
    bias32 = None if bias is None else as_numpy(bias.detach().to(torch.float32).contiguous())
    result = matrix.linear(as_numpy(x32), bias32, num_threads=torch.get_num_threads())
    return torch.from_numpy(result).to(x.dtype)


@int8_bitmap_linear.register_fake
def _(x, bitmap, values, scales, cols, bias):
    _check_int8_operands(x, bitmap, values, scales, cols, bias)
    return x.new_empty((*x.shape[:-1], bitmap.shape[0]))


class SparseLinearInt8(nn.Module):
    """``nn.Linear`` with a pruned weight stored as int8 (a bitmap of the kept weights,
    their int8 values and one float32 scale per output row); inference only.

    Build one with :meth:`from_dense` (or ``SparseLinear.from_dense(linear,
    weight_dtype="int8")``, or ``sparsify(model, weight_dtype="int8")``).
    ``SparseLinearInt8(in_features, out_features, nnz=...)`` gives an empty
    weight meant to receive a ``load_state_dict``. Inputs of any float dtype are
    computed in float32 and the output has the input's dtype.
    """

    format = "int8-bitmap"
    weight_dtype = torch.int8
    bitmap: Tensor
    values: Tensor
    scales: Tensor
    bias: Optional[nn.Parameter]
    #: Applied to the output right after the product (sparsify fuses a following ReLU/GELU).
    activation: Optional[str] = None

    # Buffers outside inference mode even when built inside it: inference tensors have
    # no version counter, which the operand cache keys on.
    @torch.inference_mode(False)
    def __init__(self, in_features: int, out_features: int, bias: bool = True, *, nnz: int = 0,
                 device: Any = None):
        super().__init__()
        self.in_features, self.out_features = int(in_features), int(out_features)
        words = -(-self.in_features // 64)
        self.register_buffer("bitmap", torch.zeros((out_features, words), dtype=torch.int64,
                                                   device=device))
        self.register_buffer("values", torch.zeros(nnz, dtype=torch.int8, device=device))
        self.register_buffer("scales", torch.zeros(out_features, dtype=torch.float32,
                                                   device=device))
        self.bias = (nn.Parameter(torch.zeros(out_features, device=device), requires_grad=False)
                     if bias else None)

    @classmethod
    def from_dense(cls, linear: nn.Module) -> SparseLinearInt8:
        """Quantize the kept (nonzero, or unmasked) weights of ``linear`` per output row.

        ``linear`` is an ``nn.Linear`` or Hugging Face's ``Conv1D``, pruned or
        not (a dense weight stores every entry). The bias is copied in float32.
        """
        if not (isinstance(linear, nn.Linear) or is_hf_conv1d(linear)):
            raise TypeError(f"from_dense needs an nn.Linear (or transformers' Conv1D), "
                            f"got {type(linear).__name__}")
        weight, keep = _linear_weight(linear)
        if not weight.is_floating_point():
            raise TypeError(f"the Linear's weight must be floating point, got {weight.dtype}")
        weight = weight.detach().float().cpu()
        keep = keep.cpu() & (weight != 0)  # a zero stores nothing, quantized or not
        matrix = Int8BitmapMatrix.from_dense(as_numpy(weight * keep))
        out_features, in_features = weight.shape
        module = cls(in_features, out_features, bias=linear.bias is not None, nnz=matrix.nnz)
        module.bitmap.copy_(torch.from_numpy(
            np.array(matrix.bits).view(np.int64).reshape(out_features, -1)))
        module.values.copy_(torch.from_numpy(np.array(matrix.data)))
        module.scales.copy_(torch.from_numpy(np.array(matrix.scales)))
        source_bias: Any = linear.bias
        if module.bias is not None:
            module.bias.data.copy_(source_bias.detach().float())
        return module

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys,
                              unexpected_keys, error_msgs):
        incoming = state_dict.get(prefix + "values")
        if isinstance(incoming, Tensor) and incoming.shape != self.values.shape:
            self.values = self.values.new_empty(incoming.shape)  # the stored pattern's size
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys,
                                      unexpected_keys, error_msgs)

    @property
    def nnz(self) -> int:
        return self.values.numel()

    @property
    def sparsity(self) -> float:
        size = self.in_features * self.out_features
        return 1.0 - self.nnz / size if size else 0.0

    def forward(self, x: Tensor) -> Tensor:
        if torch.is_grad_enabled() and x.requires_grad:
            raise RuntimeError("SparseLinearInt8 is inference-only (int8 values have no "
                               "gradient): fine-tune the float32 model, then convert it")
        y = torch.ops.sparsegemm.int8_bitmap_linear(x, self.bitmap, self.values, self.scales,
                                                    self.in_features, self.bias)
        return apply_activation(y, self.activation)

    def dense_weight(self) -> Tensor:
        """The dequantized weight (float32, zeros where not stored)."""
        matrix = int8_matrices.matrix(self.bitmap, self.values, self.scales, self.in_features)
        return torch.from_numpy(matrix.to_dense())

    @property
    def weight(self) -> Tensor:
        """The dequantized weight, read-only, built on each access."""
        return self.dense_weight()

    def to_dense(self) -> nn.Linear:
        """An ``nn.Linear`` (float32) with the dequantized weight."""
        return linear_holding(self.dense_weight(), self.bias)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"bias={self.bias is not None}, format={self.format}, weight_dtype=int8, "
                f"sparsity={self.sparsity:.1%}, nnz={self.nnz}")
