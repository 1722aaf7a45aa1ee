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
so ``torch.compile`` and ``torch.export`` trace through it; in eager inference
the module calls the kernel directly (the op's dispatch cost a small layer
more than its kernel).

Below about 80% sparsity, at 16 rows and more, the bitmap kernels do a dense
product's work plus the expansion of the bitmap, and torch's dense int8 GEMM
(FBGEMM, what ``quantize_dynamic`` runs) is faster over the same int8 weight
with its zeros filled in. A module built with ``kernel="auto"`` (as
:func:`~sparsegemm.torch.sparsify` builds them) times both per row bucket, the
first time it sees one, and runs the faster; ``kernel="dense"`` always runs
FBGEMM. The dense copy is built from the stored int8 values when first needed
and is not part of the ``state_dict``.
"""

from __future__ import annotations

import threading
import warnings
import weakref
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np

import torch
from torch import Tensor, nn

from .. import _core
from ..planner import _rotating, _time_candidates, cold_copies
from ..quantized import Int8BitmapMatrix
from ..timing import COLD_MAX_BATCH
from ._cache import EmptyWhenCopied, as_numpy, other_caches, tensor_version
from .auto import nearest_bucket, row_bucket
from .modules import _linear_weight, apply_activation, is_hf_conv1d, linear_holding
from .ops import _kernel_rows, direct_output

__all__ = ["INT8_KERNELS", "Int8Decision", "SparseLinearInt8", "int8_bitmap_linear"]

#: What :class:`SparseLinearInt8` computes with: sparsegemm's int8 bitmap kernels,
#: torch's dense int8 GEMM (FBGEMM) over the same int8 weight, or the faster of the
#: two per row bucket, timed on first use.
INT8_KERNELS = ("bitmap", "dense", "auto")


class _Int8MatrixCache:
    """Validated :class:`Int8BitmapMatrix` per (bitmap, values, scales) tensors.

    Building one copies and checks the arrays, so it is built once and reused
    while the three tensors are the same storages with the same ``_version``
    counters (an in-place edit or ``load_state_dict`` rebuilds it).
    """

    def __init__(self) -> None:
        self._entries: dict[tuple, tuple[tuple, tuple, Int8BitmapMatrix]] = {}
        self._lock = threading.Lock()
        self.generation = 0  # clear() calls, so modules' own memos know to look again

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self.generation += 1

    def matrix(self, bitmap: Tensor, values: Tensor, scales: Tensor, cols: int) -> Int8BitmapMatrix:
        tensors = (bitmap, values, scales)
        key = tuple(t.data_ptr() for t in tensors) + (cols,)
        versions = tuple(tensor_version(t) for t in tensors)
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


def _dense_int8_packs(matrix: Int8BitmapMatrix, bias: Optional[Tensor], count: int = 1) -> list:
    """``count`` separately packed copies of FBGEMM's form of the int8 weight (zeros where
    nothing is stored, the same per-row scales) and bias, for
    ``torch.ops.quantized.linear_dynamic``."""
    weight = torch.from_numpy(matrix.to_dense())
    scales = torch.from_numpy(np.array(matrix.scales)).double()
    scales[scales == 0] = 1.0  # an all-zero row: any positive scale gives zeros
    bias32 = None if bias is None else bias.detach().float().contiguous()
    with warnings.catch_warnings():  # torch marks its quantized tensors deprecated
        warnings.simplefilter("ignore")
        # q * scale / scale rounds back to q exactly: the same integers as the bitmap's.
        quantized = torch.quantize_per_channel(weight, scales,
                                               torch.zeros(len(scales), dtype=torch.long), 0,
                                               torch.qint8)
        return [torch.ops.quantized.linear_prepack(quantized, bias32) for _ in range(count)]


def _dense_int8_linear(packed: Any, x: Tensor, out_features: int) -> Tensor:
    """``x @ W.T + b`` by FBGEMM, x quantized per tensor with the 7-bit range that
    ``quantize_dynamic`` uses (so no CPU's int8 multiply saturates)."""
    x2 = x.reshape(-1, x.shape[-1]).contiguous()
    y = torch.ops.quantized.linear_dynamic(x2, packed, True)
    return y if x.dim() == 2 else y.view(*x.shape[:-1], out_features)


class _Int8Operands(EmptyWhenCopied):
    """One module's shortcut to its kernel's operands for the per-call inference path:
    the validated matrix (from :data:`int8_matrices`) and the bias as numpy, reused
    while the module holds the same tensors with the same ``_version`` counters and
    memory and :func:`clear_cache` has not run; plus FBGEMM's packed copy of the
    weight once a dense int8 product needs it (remade with the matrix)."""

    __slots__ = ("_tensors", "_key", "matrix", "bias", "_packed")

    def __init__(self) -> None:
        self._tensors: tuple = ()
        self._key: tuple = ()
        self.matrix: Optional[Int8BitmapMatrix] = None
        self.bias: Optional[np.ndarray] = None
        self._packed: Any = None

    def get(self, bitmap: Tensor, values: Tensor, scales: Tensor, bias: Optional[Tensor],
            cols: int) -> _Int8Operands:
        key = (tensor_version(bitmap), tensor_version(values), tensor_version(scales),
               bitmap.data_ptr(), values.data_ptr(), scales.data_ptr(),
               None if bias is None else bias.data_ptr(), int8_matrices.generation)
        tensors = self._tensors
        if (not tensors or tensors[0] is not bitmap or tensors[1] is not values
                or tensors[2] is not scales or tensors[3] is not bias or key != self._key):
            self.matrix = int8_matrices.matrix(bitmap, values, scales, cols)
            self.bias = None if bias is None else as_numpy(bias.detach().float().contiguous())
            self._packed = None
            self._tensors, self._key = (bitmap, values, scales, bias), key
        return self

    def packed(self, bias: Optional[Tensor]) -> Any:
        if self._packed is None:
            assert self.matrix is not None
            self._packed = _dense_int8_packs(self.matrix, bias)[0]
        return self._packed


def _bitmap_linear(matrix: Int8BitmapMatrix, x: Tensor, bias: Optional[np.ndarray]) -> Tensor:
    """``x @ W.T + bias`` by the int8 bitmap kernel straight on numpy views (x float32,
    its last dimension checked by the caller)."""
    rows, cols = matrix.shape
    x2, x_array = _kernel_rows(x, cols)
    out, out_array = direct_output(x2.shape[0], rows, x2, x_array)
    _core.int8_bitmap_linear(matrix._handle, x_array, out_array, bias, torch.get_num_threads())
    return out if x.dim() == 2 else out.view(*x.shape[:-1], rows)


@dataclass(frozen=True)
class Int8Decision:
    """Which int8 product a :class:`SparseLinearInt8` runs for one row bucket, and why."""

    rows: int  # the row count it was timed at
    kernel: str  # 'bitmap' or 'dense'
    bitmap_seconds: float
    dense_seconds: float  # inf where the dense product is unavailable
    reason: str = ""

    def describe(self) -> str:
        if self.kernel == "dense":
            return (f"rows {self.rows}: dense int8 (FBGEMM), "
                    f"{self.bitmap_seconds / self.dense_seconds:.2f}x the bitmap kernel")
        if self.reason:
            return f"rows {self.rows}: bitmap ({self.reason})"
        return (f"rows {self.rows}: bitmap, "
                f"{self.dense_seconds / self.bitmap_seconds:.2f}x dense int8 (FBGEMM)")


def time_int8_products(operands: _Int8Operands, bias: Optional[Tensor], rows: int,
                       repeats: int = 5, rounds: int = 3) -> tuple[float, float, str]:
    """Median seconds of the bitmap and the dense int8 product at ``rows`` random rows,
    interleaved as the planner times (cold, over copies past the last-level cache, up
    to :data:`~sparsegemm.timing.COLD_MAX_BATCH` rows), and why the dense one could
    not run (its time then inf)."""
    matrix = operands.matrix
    assert matrix is not None
    out_features, in_features = matrix.shape
    x = torch.randn(max(1, rows), in_features, generator=torch.Generator().manual_seed(0))
    try:
        packed = operands.packed(bias)
        dense_y = _dense_int8_linear(packed, x, out_features)
    except (RuntimeError, AttributeError) as error:  # no quantized engine in this build
        return 1.0, float("inf"), f"dense int8 unavailable: {type(error).__name__}"
    bias_array = operands.bias
    bitmap_y = _bitmap_linear(matrix, x, bias_array)
    scale = float(bitmap_y.norm()) or 1.0
    if float((dense_y - bitmap_y).norm()) > 0.05 * scale:  # both quantize x: a few percent
        return 1.0, float("inf"), "dense int8 disagreed with the bitmap kernel"
    cold = rows <= COLD_MAX_BATCH
    matrices = [matrix] + [Int8BitmapMatrix((np.array(matrix.data), np.array(matrix.bits),
                                             np.array(matrix.scales)), shape=matrix.shape)
                           for _ in range(cold_copies(matrix.nbytes) - 1 if cold else 0)]
    packs = [packed] + _dense_int8_packs(
        matrix, bias, cold_copies(out_features * in_features) - 1 if cold else 0)
    runners = {"bitmap": _rotating(matrices, lambda m: _bitmap_linear(m, x, bias_array)),
               "dense": _rotating(packs, lambda p: _dense_int8_linear(p, x, out_features))}
    for name, copies in (("bitmap", matrices), ("dense", packs)):
        for _ in copies:  # builds each copy's plans (the bitmap kernels make them on first use)
            runners[name]()
    with torch.inference_mode():
        times = _time_candidates(runners, repeats, rounds)
    return times["bitmap"], times["dense"], ""


class SparseLinearInt8(nn.Module):
    """``nn.Linear`` with a pruned weight stored as int8 (a bitmap of the kept weights,
    their int8 values and one float32 scale per output row); inference only.

    Build one with :meth:`from_dense` (or ``SparseLinear.from_dense(linear,
    weight_dtype="int8")``, or ``sparsify(model, weight_dtype="int8")``).
    ``SparseLinearInt8(in_features, out_features, nnz=...)`` gives an empty
    weight meant to receive a ``load_state_dict``. Inputs of any float dtype are
    computed in float32 and the output has the input's dtype.

    ``kernel`` (see :data:`INT8_KERNELS`): ``"bitmap"`` runs sparsegemm's int8
    bitmap kernels (x quantized per row); ``"dense"`` runs torch's FBGEMM dense
    int8 GEMM over the same int8 weight (x quantized per tensor, as
    ``quantize_dynamic`` does); ``"auto"`` times both on the first eager
    inference call of each row bucket (powers of two) and keeps the faster in
    ``decisions`` (:meth:`decide`; ``frozen`` stops the timing, an unseen bucket then
    runs its nearest decided one). Under ``torch.compile`` and ``torch.export``
    the product is always the bitmap kernel's custom op.
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
                 device: Any = None, kernel: str = "bitmap"):
        super().__init__()
        if kernel not in INT8_KERNELS:
            raise ValueError(f"kernel must be one of {INT8_KERNELS}, got {kernel!r}")
        self.kernel = kernel
        self.decisions: dict[int, Int8Decision] = {}  # row bucket -> decision ('auto')
        self.frozen = False
        self._operands = _Int8Operands()
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
    def from_dense(cls, linear: nn.Module, *, kernel: str = "bitmap") -> SparseLinearInt8:
        """Quantize the kept (nonzero, or unmasked) weights of ``linear`` per output row.

        ``linear`` is an ``nn.Linear`` or Hugging Face's ``Conv1D``, pruned or
        not (a dense weight stores every entry). The bias is copied in float32.
        ``kernel``: see the class.
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
        module = cls(in_features, out_features, bias=linear.bias is not None, nnz=matrix.nnz,
                     kernel=kernel)
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
        buffers, bias = self._buffers, self._parameters.get("bias")
        # Eager float32 inference: the kernels without the op's dispatch and checks (the
        # binding checks shapes); anything else goes through the op.
        if (type(x) is Tensor and x.dtype == torch.float32 and x.is_cpu and x.dim() > 0
                and x.shape[-1] == self.in_features and not torch.compiler.is_compiling()):
            bitmap, values, scales = buffers["bitmap"], buffers["values"], buffers["scales"]
            assert bitmap is not None and values is not None and scales is not None
            operands = self._operands.get(bitmap, values, scales, bias, self.in_features)
            if self._kernel_for(x) == "dense":
                y = _dense_int8_linear(operands.packed(bias), x, self.out_features)
            else:
                assert operands.matrix is not None
                y = _bitmap_linear(operands.matrix, x, operands.bias)
        else:
            y = torch.ops.sparsegemm.int8_bitmap_linear(x, buffers["bitmap"], buffers["values"],
                                                        buffers["scales"], self.in_features,
                                                        bias)
        return apply_activation(y, self.activation)

    def _kernel_for(self, x: Tensor) -> str:
        """'bitmap' or 'dense' for ``x``: by ``kernel``, or its row bucket's decision."""
        if self.kernel != "auto":
            return self.kernel
        rows = x.numel() // self.in_features if self.in_features else 0
        decision = self.decisions.get(row_bucket(rows))
        if decision is None:
            if self.frozen:
                decision = self._nearest(row_bucket(rows))
                return "bitmap" if decision is None else decision.kernel
            decision = self.decide(rows)
        return decision.kernel

    def decide(self, rows: int) -> Int8Decision:
        """Time the bitmap and the dense int8 product at ``rows`` rows and keep the faster
        for their row bucket (``kernel="auto"`` calls this on first use)."""
        bias = self._parameters.get("bias")
        operands = self._operands.get(self.bitmap, self.values, self.scales, bias,
                                      self.in_features)
        bitmap_s, dense_s, reason = time_int8_products(operands, bias, rows)
        kernel = "dense" if dense_s < bitmap_s else "bitmap"
        decision = Int8Decision(max(1, rows), kernel, bitmap_s, dense_s, reason)
        self.decisions[row_bucket(rows)] = decision
        return decision

    def _nearest(self, bucket: int) -> Optional[Int8Decision]:
        if not self.decisions:
            return None
        return self.decisions[nearest_bucket(self.decisions, bucket)]

    def describe(self) -> str:
        """Which product runs: the kernel, or for 'auto' each row bucket's decision."""
        if self.kernel != "auto":
            return {"bitmap": "bitmap kernel", "dense": "dense int8 (FBGEMM)"}[self.kernel]
        if not self.decisions:
            return "auto: bitmap or dense int8, decided on the first call of each row count"
        frozen = " (frozen)" if self.frozen else ""
        return "auto" + frozen + ": " + "; ".join(self.decisions[bucket].describe()
                                                  for bucket in sorted(self.decisions))

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
                f"sparsity={self.sparsity:.1%}, nnz={self.nnz}, {self.describe()}")
