"""Drop-in replacements for nn.Linear and nn.Conv2d with sparse weights.

The weight is stored as CSR, BSR or bitmap tensors: ``indptr`` and ``indices`` buffers
(the sparsity pattern, fixed) and a ``values`` parameter (the stored entries,
which an optimizer may update): ``(nnz,)`` for CSR, ``(nblocks, R, C)`` for BSR,
whose ``indptr``/``indices`` count block rows and block columns. A BSR block
keeps all of its R*C entries, so training may fill in the zeros inside a
stored block (never outside one, and never the padding past the matrix edge). A bitmap
(Linear only) keeps a ``bitmap`` buffer instead of ``indptr``/``indices``: int64 words
of shape (rows, ceil(cols / 64)), bit ``c % 64`` of word ``c // 64`` marking column ``c``,
with ``values`` (nnz,) in row-major order. Products go through the ``sparsegemm::`` custom ops,
so the modules work under autograd, ``torch.compile`` and ``torch.export``.
"""

from __future__ import annotations

import math
import sys
from typing import Any

import numpy as np
import torch.nn.functional as F

import torch
from torch import Tensor, nn

from ..formats import BitmapMatrix, BSRMatrix, CSRMatrix
from ..ops import LINEAR_ACTIVATIONS, conv_pair
from . import feed_forward
from . import ops as _ops
from ._cache import KernelOperands, as_numpy, empty_on_huge_pages, on_huge_pages
from ._format_choice import FormatChoice, check_format, choose_format
from .feed_forward import _FED_OUTPUT, _FEEDS

__all__ = ["SparseConv2d", "SparseLinear", "is_linear_map", "masked_weight"]


def is_hf_conv1d(module: nn.Module) -> bool:
    """True for Hugging Face's ``Conv1D`` (GPT-2's Linear, weight stored (in, out)).

    transformers is only consulted when the caller has already imported it.
    """
    pytorch_utils = sys.modules.get("transformers.pytorch_utils")
    conv1d = getattr(pytorch_utils, "Conv1D", None)
    return conv1d is not None and isinstance(module, conv1d)


def is_linear_map(module: nn.Module) -> bool:
    """True for a module that :meth:`SparseLinear.from_dense` converts exactly: an
    ``nn.Linear`` (or a subclass that keeps its forward) or Hugging Face's ``Conv1D``."""
    if isinstance(module, nn.Linear):
        return type(module).forward is nn.Linear.forward
    return is_hf_conv1d(module)


def input_rows(x: Tensor) -> int:
    """The rows a Linear's product has for input ``x``: its leading dimensions flattened."""
    return x.numel() // x.shape[-1] if x.dim() and x.shape[-1] else 0


def masked_weight(module: nn.Module) -> tuple[Tensor, Tensor]:
    """``(weight, keep)`` of a dense module: the weight with pruned entries zero and
    the boolean mask of entries to store.

    A module pruned with ``torch.nn.utils.prune`` (``weight_orig`` and
    ``weight_mask``) stores the entries its mask keeps, with values
    ``weight_orig * weight_mask``; any other module stores its nonzero entries.
    """
    if hasattr(module, "weight_orig") and hasattr(module, "weight_mask"):
        mask = module.weight_mask.detach()
        weight = module.weight_orig.detach() * mask
        return weight, mask != 0
    weight = module.weight.detach()
    return weight, weight != 0


def _linear_weight(module: nn.Module) -> tuple[Tensor, Tensor]:
    """:func:`masked_weight` of a linear map as (out_features, in_features)."""
    weight, keep = masked_weight(module)
    return (weight.t(), keep.t()) if is_hf_conv1d(module) else (weight, keep)


# Activations a sparse module can apply to its output right after the product, while
# it is hot in cache (sparsify moves a ReLU/GELU that follows a layer here).
ACTIVATIONS = LINEAR_ACTIVATIONS


def check_activation(activation: str | None) -> str | None:
    if activation is not None and activation not in ACTIVATIONS:
        raise ValueError(f"activation must be None or one of {ACTIVATIONS}, got {activation!r}")
    return activation


# Hugging Face's GELU modules (transformers.activations) and the form each computes:
# the erf GELU, or the tanh approximation however it is written.
_HF_GELU_MODULES = {
    "GELUActivation": "gelu",
    "GELUTanh": "gelu_tanh",
    "PytorchGELUTanh": "gelu_tanh",
    "NewGELUActivation": "gelu_tanh",
    "FastGELUActivation": "gelu_tanh",
}


def activation_of(module: Any) -> str | None:
    """The fusable name of an activation: an ``nn.ReLU``/``nn.GELU`` module, ``F.relu``,
    ``F.gelu`` or ``torch.relu``, or one of Hugging Face's GELU modules; else None."""
    if module in (F.relu, torch.relu):
        return "relu"
    if module is F.gelu:
        return "gelu"
    if type(module) is nn.ReLU:
        return "relu"
    if type(module) is nn.GELU:
        return "gelu" if module.approximate == "none" else "gelu_tanh"
    kind = type(module)
    # Only the class as transformers defines it, not a subclass or a forward swapped in.
    if (kind.__module__ == "transformers.activations"
            and getattr(kind.forward, "__module__", None) == "transformers.activations"):
        return _HF_GELU_MODULES.get(kind.__name__)
    return None


def linked(layer: nn.Module) -> bool:
    """True where a sparse Linear's output may come from elsewhere (see
    :func:`output_computed_elsewhere`): a shared-input group that stacks or may stack it,
    or a feed-forward link. A group that left it alone does not count."""
    group = layer._shared_input
    links = layer.__dict__
    return ((group is not None and group.stacks)
            or _FEEDS in links or _FED_OUTPUT in links)


def output_computed_elsewhere(layer: nn.Module, x: Tensor) -> Tensor | None:
    """A sparse Linear's output for ``x`` where something other than its own product
    gives it, else None: the stacked product of its shared-input group
    (shared_input.py), the layer before it that already computed it, or the
    feed-forward kernel it runs with the layer it feeds (feed_forward.py)."""
    group = layer._shared_input
    if group is not None:
        stacked = group.output(layer, x)
        if stacked is not None:
            return stacked
    links = layer.__dict__
    if _FED_OUTPUT in links and feed_forward.take_fed_input(layer, x):
        return x
    if _FEEDS in links:
        return feed_forward.fused_output(layer, x)
    return None


def apply_activation(y: Tensor, activation: str | None) -> Tensor:
    """``activation`` applied to a layer's fresh output ``y`` (ReLU in place when no
    gradient is recorded through ``y``)."""
    if activation is None:
        return y
    if activation == "relu":
        fresh = type(y) is Tensor and not y.requires_grad  # not a proxy, no graph through it
        return torch.relu_(y) if fresh else torch.relu(y)
    return F.gelu(y, approximate="tanh" if activation == "gelu_tanh" else "none")


def linear_holding(weight: Tensor, bias: Tensor | None) -> nn.Linear:
    """A new ``nn.Linear`` holding copies of ``weight`` (out, in) and ``bias``."""
    linear = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None,
                       device=weight.device, dtype=weight.dtype)
    with torch.no_grad():
        linear.weight.copy_(weight)
        if bias is not None:
            linear.bias.copy_(bias)
    return linear


def conv_holding(conv: nn.Module, weight: Tensor, bias: Tensor | None) -> nn.Conv2d:
    """A new ``nn.Conv2d`` configured as ``conv`` (an ``nn.Conv2d`` or a
    :class:`SparseConv2d`), holding copies of ``weight`` and ``bias``."""
    copy = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride,
                     conv.padding, conv.dilation, conv.groups, bias is not None,
                     conv.padding_mode, device=weight.device, dtype=weight.dtype)
    with torch.no_grad():
        copy.weight.copy_(weight)
        if bias is not None:
            copy.bias.copy_(bias)
    return copy


def batchnorm_affine(bn: nn.BatchNorm2d, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    """``(scale, shift)`` per channel of an eval-mode ``bn``: it computes x * scale + shift."""
    scale = torch.rsqrt(bn.running_var + bn.eps)
    if bn.weight is not None:
        scale = scale * bn.weight
    shift = -bn.running_mean * scale
    if bn.bias is not None:
        shift = shift + bn.bias
    return scale.detach().to(dtype), shift.detach().to(dtype)


def folded_bias(bias: Tensor | None, scale: Tensor, shift: Tensor,
                requires_grad: bool) -> nn.Parameter:
    """The bias of a layer whose output a BatchNorm scales and shifts, folded in."""
    folded = shift if bias is None else bias.detach() * scale + shift
    return nn.Parameter(folded.clone(), requires_grad=requires_grad)


def fold_batchnorm_into_conv(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> None:
    """Fold eval-mode ``bn`` into the dense ``conv`` that feeds it (weights and bias)."""
    scale, shift = batchnorm_affine(bn, conv.weight.dtype)
    with torch.no_grad():
        conv.weight.mul_(scale.view(-1, 1, 1, 1))
    conv.bias = folded_bias(conv.bias, scale, shift, conv.weight.requires_grad)


def _csr_tensors(weight: Tensor, keep: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """CSR (indptr int64, indices int32, values) of the kept entries of a 2-d weight."""
    rows, cols = keep.nonzero(as_tuple=True)  # row-major order: sorted within each row
    counts = torch.bincount(rows, minlength=weight.shape[0])
    indptr = torch.zeros(weight.shape[0] + 1, dtype=torch.int64)
    torch.cumsum(counts, 0, out=indptr[1:])
    return indptr, cols.to(torch.int32), weight[rows, cols].clone()


def _bsr_tensors(weight: Tensor, keep: Tensor,
                 blocksize: tuple[int, int]) -> tuple[Tensor, Tensor, Tensor]:
    """BSR (indptr int64, indices int32, values (nblocks, R, C)) of the R x C blocks of a
    2-d weight holding a kept entry; entries past the matrix edge are zero padding."""
    r, c = blocksize
    rows, cols = weight.shape
    block_rows, block_cols = -(-rows // r), -(-cols // c)
    padding = (0, block_cols * c - cols, 0, block_rows * r - rows)
    weight = F.pad(weight * keep, padding).reshape(block_rows, r, block_cols, c)
    kept = F.pad(keep, padding).reshape(block_rows, r, block_cols, c).any(dim=3).any(dim=1)
    row_ids, col_ids = kept.nonzero(as_tuple=True)  # row-major: sorted within each block row
    indptr = torch.zeros(block_rows + 1, dtype=torch.int64)
    torch.cumsum(torch.bincount(row_ids, minlength=block_rows), 0, out=indptr[1:])
    values = weight.permute(0, 2, 1, 3)[row_ids, col_ids].clone()
    return indptr, col_ids.to(torch.int32), values


def _bitmap_tensors(weight: Tensor, keep: Tensor) -> tuple[Tensor, Tensor]:
    """Bitmap (int64 words, (rows, ceil(cols / 64))) and values (row-major) of the kept
    entries of a 2-d weight."""
    rows, cols = keep.shape
    words = -(-cols // 64)
    packed = np.zeros((rows, words * 8), dtype=np.uint8)
    packed[:, :-(-cols // 8)] = np.packbits(keep.cpu().numpy(), axis=1, bitorder="little")
    bitmap = torch.from_numpy(packed.view(np.int64).reshape(rows, words).copy())
    return bitmap.to(weight.device), weight[keep].clone()


class _SparseWeight(nn.Module):
    """Shared storage of a CSR or BSR weight viewed as a (rows x cols) matrix.

    ``weight_shape`` is the dense weight's shape (e.g. (out, in, kh, kw)); the
    matrix is its first dimension by the product of the rest.
    """

    indptr: Tensor
    indices: Tensor
    #: Applied to the output right after the product (see :data:`ACTIVATIONS`); None: none.
    activation: str | None = None

    def _init_sparse_weight(self, weight_shape: tuple[int, ...], nnz: int, *, format: str,
                            blocksize: tuple[int, int] | None, device: Any, dtype: Any) -> None:
        if format not in ("csr", "bsr", "bitmap"):
            raise ValueError(f"format must be 'csr', 'bsr' or 'bitmap' (use from_dense for "
                             f"'auto'), got {format!r}")
        choice = check_format(format, blocksize)
        dtype = torch.get_default_dtype() if dtype is None else dtype
        self.weight_shape = tuple(int(s) for s in weight_shape)
        self._matrix_shape = (self.weight_shape[0], math.prod(self.weight_shape[1:]))
        self.format = format
        self.blocksize = choice.blocksize
        rows = self.weight_shape[0]
        self._kernel_operands = KernelOperands()
        if format == "bitmap":
            words = -(-math.prod(self.weight_shape[1:]) // 64)
            self.register_buffer("bitmap", torch.zeros((rows, words), dtype=torch.int64,
                                                       device=device))
            self.values = nn.Parameter(torch.zeros((nnz,), dtype=dtype, device=device))
            return
        if self.blocksize is None:
            pointers, values_shape = rows + 1, (nnz,)
        else:
            pointers, values_shape = -(-rows // self.blocksize[0]) + 1, (nnz, *self.blocksize)
        self.register_buffer("indptr", torch.zeros(pointers, dtype=torch.int64, device=device))
        self.register_buffer("indices", torch.zeros(nnz, dtype=torch.int32, device=device))
        self.values = nn.Parameter(torch.zeros(values_shape, dtype=dtype, device=device))

    @property
    def matrix_shape(self) -> tuple[int, int]:
        return self._matrix_shape

    def __setstate__(self, state: dict) -> None:
        # Modules pickled before the inference path existed lack its two attributes.
        super().__setstate__(state)
        if "_matrix_shape" not in self.__dict__:
            self._matrix_shape = (self.weight_shape[0], math.prod(self.weight_shape[1:]))
        if "_kernel_operands" not in self.__dict__:
            self._kernel_operands = KernelOperands()

    @property
    def nnz(self) -> int:
        """Stored values (for BSR: every entry of every stored block, padding included)."""
        return self.values.numel()

    @property
    def sparsity(self) -> float:
        """Fraction of the weight's entries that are zero, stored or not: the weight
        sparsity that :func:`sparsify`'s report shows (a BSR block's zeros count)."""
        size = math.prod(self.weight_shape)
        return 1.0 - int(self.values.detach().count_nonzero()) / size if size else 0.0

    @property
    def stored_fraction(self) -> float:
        """Stored values over the weight's entries: what the kernels multiply (for BSR,
        every entry of every stored block, padding included, so it may exceed 1)."""
        size = math.prod(self.weight_shape)
        return self.nnz / size if size else 0.0

    # Storage is made outside inference mode even when a module is built inside it:
    # inference tensors have no version counter (the operand caches key on it) and
    # cannot be saved for backward, so the module could neither run nor be fine-tuned.
    @torch.inference_mode(False)
    def _copy_from_dense(self, dense: nn.Module, weight: Tensor, keep: Tensor) -> None:
        """Take the kept entries of ``weight`` and a copy of ``dense``'s bias."""
        weight, keep = weight.reshape(self.matrix_shape), keep.reshape(self.matrix_shape)
        if self.format == "bitmap":
            self.bitmap, values = _bitmap_tensors(weight, keep)
        elif self.blocksize is None:
            indptr, indices, values = _csr_tensors(weight, keep)
        else:
            indptr, indices, values = _bsr_tensors(weight, keep, self.blocksize)
        trainable = getattr(dense, "weight_orig", dense.weight).requires_grad
        if self.format != "bitmap":
            self.indptr, self.indices = indptr, indices
        self.values = nn.Parameter(on_huge_pages(values), requires_grad=trainable)
        if dense.bias is not None:
            self.bias = nn.Parameter(dense.bias.detach().clone(),
                                     requires_grad=dense.bias.requires_grad)
        self.check_pattern()

    def _apply(self, fn: Any, recurse: bool = True) -> Any:
        # Refuse a dtype the ops cannot take (complex, say) here, at .to() time,
        # rather than at the next forward; float16/bfloat16 compute in float32.
        probe = fn(torch.empty(0, dtype=self.values.dtype, device=self.values.device))
        _ops.check_kernel_dtype(probe.dtype, f"{type(self).__name__} converted to {probe.dtype}")
        return super()._apply(fn, recurse)

    def check_pattern(self) -> None:
        """Raise ValueError if the pattern and values do not form a valid CSR, BSR or bitmap
        weight."""
        values = self.values if self.values.dtype in _ops.KERNEL_DTYPES else self.values.float()
        if self.format == "bitmap":
            words = as_numpy(self.bitmap)
            if self.bitmap.dtype != torch.int64 or words.ndim != 2:
                raise ValueError(f"bitmap must be a 2-d int64 tensor, got {self.bitmap.dtype} "
                                 f"{tuple(self.bitmap.shape)}")
            BitmapMatrix((as_numpy(values), words.view(np.uint64)), shape=self.matrix_shape)
            return
        arrays = (as_numpy(values), as_numpy(self.indices), as_numpy(self.indptr))
        if self.blocksize is None:
            CSRMatrix(arrays, shape=self.matrix_shape)
            return
        if tuple(self.values.shape[1:]) != self.blocksize or self.values.dim() != 3:
            raise ValueError(f"values must have shape (nblocks, {self.blocksize[0]}, "
                             f"{self.blocksize[1]}), got {tuple(self.values.shape)}")
        BSRMatrix(arrays, shape=self.matrix_shape)

    def dense_weight(self) -> Tensor:
        """The weight as a dense tensor of ``weight_shape`` (zeros where not stored)."""
        rows, cols = self.matrix_shape
        if self.format == "bitmap":
            words = as_numpy(self.bitmap.contiguous()).view(np.uint8)
            keep = np.unpackbits(words, axis=1, bitorder="little")[:, :cols].astype(bool)
            dense = torch.zeros((rows, cols), dtype=self.values.dtype, device=self.values.device)
            dense[torch.from_numpy(keep).to(dense.device)] = self.values.detach()
            return dense.reshape(self.weight_shape)
        r, c = self.blocksize or (1, 1)
        block_rows = self.indptr.shape[0] - 1
        block_cols = -(-cols // c)
        row_ids = torch.repeat_interleave(torch.arange(block_rows, device=self.indptr.device),
                                          self.indptr.diff())
        blocks = torch.zeros((block_rows, block_cols, r, c), dtype=self.values.dtype,
                             device=self.values.device)
        blocks[row_ids, self.indices.long()] = self.values.detach().reshape(-1, r, c)
        dense = blocks.permute(0, 2, 1, 3).reshape(block_rows * r, block_cols * c)
        return dense[:rows, :cols].reshape(self.weight_shape).clone()

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys,
                              unexpected_keys, error_msgs):
        # A freshly constructed module holds an empty pattern: take the stored
        # pattern's sizes before the copy (the optimizer must be built after loading).
        mismatch = self._stored_format_mismatch(state_dict.get(prefix + "values"))
        if mismatch is not None:
            error_msgs.append(f"{prefix or 'module'}: invalid sparse pattern: {mismatch}")
            return
        names = ("bitmap", "values") if self.format == "bitmap" else ("indptr", "indices", "values")
        for name in names:
            incoming = state_dict.get(prefix + name)
            current = getattr(self, name)
            if isinstance(incoming, Tensor) and incoming.shape != current.shape:
                if name == "values":
                    fresh = empty_on_huge_pages(incoming.shape, current.dtype, current.device)
                    self.values = nn.Parameter(
                        current.new_empty(incoming.shape) if fresh is None else fresh,
                        requires_grad=current.requires_grad)
                else:
                    setattr(self, name, current.new_empty(incoming.shape))
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys,
                                      unexpected_keys, error_msgs)
        try:
            self.check_pattern()
        except (ValueError, TypeError) as error:
            error_msgs.append(f"{prefix or 'module'}: invalid sparse pattern: {error}")

    def _stored_format_mismatch(self, values: Any) -> str | None:
        """Why a state dict's ``values`` cannot load here, or None: its shape records the
        format, (nnz,) for CSR and (nblocks, R, C) for BSR with R x C blocks."""
        if not isinstance(values, Tensor) or values.dim() not in (1, 3):
            return None
        blocksize = tuple(int(s) for s in values.shape[1:]) if values.dim() == 3 else None
        if blocksize == self.blocksize:
            return None
        stored = "CSR" if blocksize is None else f"BSR with {blocksize} blocks"
        held = "CSR" if self.blocksize is None else f"BSR with {self.blocksize} blocks"
        build = ("format='csr'" if blocksize is None
                 else f"format='bsr', blocksize={blocksize}")
        return (f"the state dict holds a {stored} weight but this {type(self).__name__} stores "
                f"{held}: construct it with {build}, or load the whole model with "
                f"sparsegemm.torch.load_sparsified(model, state_dict)")

    @property
    def weight(self) -> Tensor:
        """The weight as a dense tensor, read-only, built on each access.

        For code that reads ``module.weight`` (utilities, fused fast paths,
        dtype and device checks); it carries no gradient and writing to it
        changes nothing. The module itself multiplies with the sparse storage.
        """
        return self.dense_weight()

    def _sparse_repr(self) -> str:
        text = (f"format={self.format}, sparsity={self.sparsity:.1%} (zeros in the weight), "
                f"stored={self.stored_fraction:.1%}, nnz={self.nnz}")
        if self.blocksize is not None:
            text += f", blocksize={self.blocksize}, nblocks={self.indices.numel()}"
        if self.activation is not None:
            text += f", activation={self.activation}"
        group = getattr(self, "_shared_input", None)
        if group is not None and group.state == "stacked":
            text += f", {group.describe(self)}"
        return text


class SparseLinear(_SparseWeight):
    """``nn.Linear`` with a sparse weight: ``y = x @ W.T + b`` for any leading dims.

    Build one from a pruned ``nn.Linear`` with :meth:`from_dense`. Constructing
    ``SparseLinear(in_features, out_features)`` directly gives an empty pattern
    (all-zero weight), meant to receive a ``load_state_dict`` (pass the same
    ``format`` and ``blocksize``; ``nnz`` counts stored blocks for BSR). float32
    and float64 are computed natively; float16 and bfloat16 (``.half()``,
    ``.to(torch.bfloat16)``) are stored as such and computed in float32, as in
    the numpy API (the kernels read bfloat16 values as stored, at 2 bytes each;
    float16 values are widened on each call); under ``torch.autocast`` the
    product runs in float32. The
    input must have the weight's dtype (as in ``F.linear``). ``weight`` is a
    read-only dense view, for code that reads it.
    """

    #: Set by sparsify on siblings that may read one input (see shared_input.py).
    _shared_input: Any = None

    @torch.inference_mode(False)  # see _copy_from_dense
    def __init__(self, in_features: int, out_features: int, bias: bool = True, *, nnz: int = 0,
                 format: str = "csr", blocksize: tuple[int, int] | None = None,
                 device: Any = None, dtype: Any = None):
        super().__init__()
        self.in_features = int(in_features)
        self.out_features = int(out_features)
        self._init_sparse_weight((out_features, in_features), nnz, format=format,
                                 blocksize=blocksize, device=device, dtype=dtype)
        self.bias = (nn.Parameter(torch.zeros(out_features, dtype=self.values.dtype, device=device))
                     if bias else None)

    @classmethod
    def from_dense(cls, linear: nn.Linear, *, format: str = "csr",
                   blocksize: tuple[int, int] | None = None, batch_hint: int = 1,
                   choice: FormatChoice | None = None,
                   weight_dtype: Any = None) -> SparseLinear:
        """A SparseLinear storing the nonzeros (or the prune mask) of ``linear``'s weight.

        ``linear`` is an ``nn.Linear`` or Hugging Face's ``Conv1D`` (GPT-2's
        projections, whose weight is stored transposed).

        ``format``: 'csr'; 'bsr' with ``blocksize`` (R, C), default (4, 1), storing
        every block that holds a kept entry; 'bitmap' (one bit per weight plus the
        kept values, for batch 1-16 at 30-80% sparsity); or 'auto', which times the weight
        with :func:`sparsegemm.plan` at ``batch_hint`` input rows and stores the
        format and blocksize it picks. If the planner would keep the layer
        dense, 'auto' still returns the fastest sparse format it timed (use
        :func:`sparsify` to leave such layers dense). ``choice`` (internal)
        is an already resolved format. The bias is copied; ``linear`` is not
        modified.

        ``weight_dtype=torch.bfloat16`` (a float32 ``linear``, any format) stores
        the kept values rounded to bfloat16, at 2 bytes each, while the module
        keeps float32 input, bias and output: its forward runs the
        bfloat16-valued kernel. A bfloat16 ``linear`` stores bfloat16 values
        without it.

        ``weight_dtype="int8"`` (or ``torch.int8``) returns a
        :class:`~sparsegemm.torch.SparseLinearInt8` instead: the kept weights
        quantized to int8 per output row in the int8 bitmap format (inference
        only; ``format`` and ``blocksize`` do not apply).
        """
        if weight_dtype in (torch.int8, "int8"):
            from .quantized import SparseLinearInt8  # imports this module

            return SparseLinearInt8.from_dense(linear)  # type: ignore[return-value]
        if not (isinstance(linear, nn.Linear) or is_hf_conv1d(linear)):
            raise TypeError(f"from_dense needs an nn.Linear (or transformers' Conv1D), "
                            f"got {type(linear).__name__}")
        weight, keep = _linear_weight(linear)
        _ops.check_kernel_dtype(weight.dtype, "the Linear's weight")
        if choice is None:
            choice = choose_format(weight, format, blocksize, batch_hint=batch_hint,
                                   fallback_to_sparse=True)
        out_features, in_features = weight.shape
        module = cls(in_features, out_features, bias=linear.bias is not None,
                     format=choice.format, blocksize=choice.blocksize, device=weight.device,
                     dtype=weight.dtype)
        module._copy_from_dense(linear, weight, keep)
        if weight_dtype is not None:
            module._store_weight_dtype(weight_dtype)
        return module

    def _store_weight_dtype(self, weight_dtype: Any) -> None:
        """Keep the values in ``weight_dtype`` (bfloat16, float32 module)."""
        if weight_dtype not in (torch.bfloat16, "bfloat16"):
            raise TypeError(f"weight_dtype must be torch.bfloat16, 'int8' (or None), "
                            f"got {weight_dtype!r}")
        if self.values.dtype != torch.float32:
            raise ValueError(f"weight_dtype=torch.bfloat16 needs a float32 module, got "
                             f"{self.values.dtype}")
        self.values = nn.Parameter(on_huge_pages(self.values.detach().to(torch.bfloat16)),
                                   requires_grad=self.values.requires_grad)

    def forward(self, x: Tensor) -> Tensor:
        """``activation(x @ W.T + bias)``: the activation in the kernel's epilogue on the
        inference fast path (while the output is in cache), else by torch after the custom
        op, which records the gradient."""
        links = self.__dict__  # checked here: a call costs more than these lookups
        if self._shared_input is not None or _FEEDS in links or _FED_OUTPUT in links:
            computed = output_computed_elsewhere(self, x)
            if computed is not None:
                return computed
        activation = self.activation
        # Straight from the registries: nn.Module.__getattr__ costs a microsecond or two a call.
        parameters, buffers = self._parameters, self._buffers
        values, bias = parameters["values"], parameters.get("bias")
        features_match = x.dim() > 0 and x.shape[-1] == self.in_features
        direct = _ops.can_call_kernel_directly(x, values, bias) and features_match
        if (not direct and features_match
                and _ops.can_call_bfloat16_values_directly(x, values, bias)):
            return self._bfloat16_values_direct(x, values, bias, activation)
        if self.format == "bitmap":
            if direct:  # as below
                operands = self._kernel_operands.get(buffers["bitmap"], buffers["bitmap"], values,
                                                     bias, self._matrix_shape, bitmap=True)
                return _ops.linear_direct(x, *operands, activation)
            return apply_activation(torch.ops.sparsegemm.bitmap_linear(
                x, buffers["bitmap"], values, self.in_features, bias), activation)
        if direct:
            # Inference fast path: the same kernel without the custom op's dispatch and checks.
            operands = self._kernel_operands.get(buffers["indptr"], buffers["indices"], values,
                                                 bias, self._matrix_shape, self.blocksize)
            return _ops.linear_direct(x, *operands, activation)
        if self.blocksize is not None:
            y = torch.ops.sparsegemm.bsr_linear(x, self.indptr, self.indices, self.values,
                                                self.out_features, self.in_features, self.bias)
        else:
            y = torch.ops.sparsegemm.csr_linear(x, self.indptr, self.indices, self.values,
                                                self.in_features, self.bias)
        return apply_activation(y, activation)

    def direct_csr_operands(self, x: Tensor) -> tuple | None:
        """The operands its forward would hand the float32 CSR kernel for ``x`` on the
        inference fast path (see ``KernelOperands``), where that path would run with no
        activation and no link to a sibling; else None. For callers that run this layer
        inside a larger kernel call (:class:`SparseMultiheadAttention`)."""
        if (linked(self) or self.format != "csr" or self.blocksize is not None
                or self.activation is not None):
            return None
        parameters, buffers = self._parameters, self._buffers
        values, bias = parameters["values"], parameters.get("bias")
        if (values.dtype != torch.float32 or x.dim() == 0 or x.shape[-1] != self.in_features
                or not _ops.can_call_kernel_directly(x, values, bias)):
            return None
        return self._kernel_operands.get(buffers["indptr"], buffers["indices"], values, bias,
                                         self._matrix_shape, None)

    def _bfloat16_values_direct(self, x: Tensor, values: Tensor, bias: Tensor | None,
                                activation: str | None) -> Tensor:
        """The op's result for bfloat16 values without its dispatch, which on a decoder's
        batch-1 bitmap layer cost as much as a tenth of the kernel's time warm and a third
        cold: x and bias in float32, the output back in x's dtype, a bfloat16 output's
        activation applied after the rounding as the op's caller does."""
        buffers = self._buffers
        if self.format == "bitmap":
            bitmap = buffers["bitmap"]
            pattern, array, _, chunks = self._kernel_operands.get(
                bitmap, bitmap, values, None, self._matrix_shape, bitmap=True)
        else:
            pattern, array, _, chunks = self._kernel_operands.get(
                buffers["indptr"], buffers["indices"], values, None, self._matrix_shape,
                self.blocksize)
        bias_array = None if bias is None else as_numpy(bias.detach().float().contiguous())
        if x.dtype == torch.float32:
            return _ops.linear_direct(x, pattern, array, bias_array, chunks, activation)
        y = _ops.linear_direct(x.float(), pattern, array, bias_array, chunks)
        return apply_activation(y.to(x.dtype), activation)

    def to_dense(self) -> nn.Linear:
        """An equivalent ``nn.Linear`` (a copy; zeros where entries are not stored), without
        the fused ``activation``."""
        return linear_holding(self.dense_weight(), self.bias)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"bias={self.bias is not None}, {self._sparse_repr()}")


class SparseConv2d(_SparseWeight):
    """``nn.Conv2d`` (groups=1, zero padding) with a sparse weight.

    The weight (Cout, Cin, kh, kw) is stored as a Cout x (Cin*kh*kw) CSR matrix.
    A 1x1 convolution without padding multiplies it with each image viewed as
    Cin x (H*W), the spatial dimension contiguous: no transposes, no copies for
    a contiguous input with stride 1. Every other kernel size, stride, padding
    and dilation runs the direct sparse convolution (``sparsegemm::csr_conv2d``),
    which never builds the (Cin*kh*kw) x L im2col matrix; its backward pass
    still goes through ``F.unfold``/``F.fold``.
    """

    @torch.inference_mode(False)  # see _copy_from_dense
    def __init__(self, in_channels: int, out_channels: int, kernel_size: Any, stride: Any = 1,
                 padding: Any = 0, dilation: Any = 1, groups: int = 1, bias: bool = True,
                 padding_mode: str = "zeros", *, nnz: int = 0, format: str = "csr",
                 blocksize: tuple[int, int] | None = None, device: Any = None, dtype: Any = None):
        super().__init__()
        if groups != 1:
            raise ValueError(f"SparseConv2d supports groups=1 only, got groups={groups}")
        if padding_mode != "zeros":
            raise ValueError(
                f"SparseConv2d supports padding_mode='zeros' only, got {padding_mode!r}"
            )
        self.in_channels = int(in_channels)
        self.out_channels = int(out_channels)
        self.kernel_size = conv_pair(kernel_size, "kernel_size", 1)
        self.stride = conv_pair(stride, "stride", 1)
        self.dilation = conv_pair(dilation, "dilation", 1)
        if isinstance(padding, str):
            if padding not in ("same", "valid"):
                raise ValueError(f"padding must be 'same', 'valid' or ints, got {padding!r}")
            if padding == "same" and self.stride != (1, 1):
                raise ValueError("padding='same' is not supported for strided convolutions")
            self.padding: Any = padding
        else:
            self.padding = conv_pair(padding, "padding", 0)
        if format != "csr":
            raise NotImplementedError(f"SparseConv2d stores CSR only, got format={format!r}")
        self.groups = 1
        self.padding_mode = "zeros"
        self._init_sparse_weight((out_channels, in_channels, *self.kernel_size), nnz,
                                 format=format, blocksize=blocksize, device=device, dtype=dtype)
        self.bias = (nn.Parameter(torch.zeros(out_channels, dtype=self.values.dtype, device=device))
                     if bias else None)

    @classmethod
    def from_dense(cls, conv: nn.Conv2d, *, format: str = "csr",
                   blocksize: tuple[int, int] | None = None) -> SparseConv2d:
        """A SparseConv2d storing the nonzeros (or the prune mask) of ``conv``'s weight.

        Convolutions store CSR only: ``format`` must be 'csr' or 'auto' (which
        means CSR here). Raises ValueError for groups > 1 or a padding mode
        other than 'zeros'.
        """
        if not isinstance(conv, nn.Conv2d):
            raise TypeError(f"from_dense needs an nn.Conv2d, got {type(conv).__name__}")
        weight, keep = masked_weight(conv)
        _ops.check_kernel_dtype(weight.dtype, "the Conv2d's weight")
        requested = check_format(format, blocksize).format
        if requested in ("bsr", "bitmap"):
            raise NotImplementedError(f"SparseConv2d stores CSR only (there is no {requested} "
                                      "convolution kernel); use format='csr'")
        module = cls(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride,
                     conv.padding, conv.dilation, conv.groups, conv.bias is not None,
                     conv.padding_mode, format="csr", device=weight.device, dtype=weight.dtype)
        module._copy_from_dense(conv, weight, keep)
        return module

    def _explicit_padding(self) -> tuple[int, int, int, int]:
        """(left, right, top, bottom) zero padding, as F.conv2d applies it."""
        if self.padding == "valid":
            return (0, 0, 0, 0)
        if self.padding == "same":
            total_h = self.dilation[0] * (self.kernel_size[0] - 1)
            total_w = self.dilation[1] * (self.kernel_size[1] - 1)
            return (total_w // 2, total_w - total_w // 2, total_h // 2, total_h - total_h // 2)
        ph, pw = self.padding
        return (pw, pw, ph, ph)

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() == 3:  # unbatched (C, H, W), as nn.Conv2d accepts
            return self.forward(x.unsqueeze(0)).squeeze(0)
        if x.dim() != 4:
            raise ValueError(f"SparseConv2d expects (N, C, H, W) or (C, H, W) input, "
                             f"got shape {tuple(x.shape)}")
        if x.shape[1] != self.in_channels:
            raise ValueError(f"expected {self.in_channels} input channels, got {x.shape[1]}")
        # Inference fast path, as SparseLinear's: the kernels without the ops' dispatch,
        # which cost a tiny convolution several times its kernel's time.
        operands = None
        if _ops.can_call_kernel_directly(x, self.values, self.bias):
            operands = self._kernel_operands.get(self.indptr, self.indices, self.values,
                                                 self.bias, self._matrix_shape, chunk_order=False)
        left, right, top, bottom = self._explicit_padding()
        if self.kernel_size == (1, 1) and (left, right, top, bottom) == (0, 0, 0, 0):
            if self.stride != (1, 1):
                x = x[:, :, ::self.stride[0], ::self.stride[1]]
            out_h, out_w = x.shape[2], x.shape[3]
            columns = x.reshape(x.shape[0], self.in_channels, out_h * out_w)
            if operands is not None:
                y = _ops.bmm_direct(columns, *operands[:3])
            else:
                y = torch.ops.sparsegemm.csr_bmm(self.indptr, self.indices, self.values,
                                                 self.matrix_shape[1], columns, self.bias)
            return apply_activation(y.view(x.shape[0], self.out_channels, out_h, out_w),
                                    self.activation)
        if left != right or top != bottom:
            x = F.pad(x, (left, right, top, bottom))
            left = top = 0
        geometry = (list(self.kernel_size), list(self.stride), [top, left], list(self.dilation))
        if operands is not None:  # the activation runs in the kernel's epilogue
            y = _ops.conv2d_direct(x, *operands[:3], *geometry, self.activation)
            if y is not None:
                return y
        return apply_activation(
            torch.ops.sparsegemm.csr_conv2d(x, self.indptr, self.indices, self.values,
                                            self.matrix_shape[1], *geometry, self.bias),
            self.activation)

    def fold_batchnorm(self, bn: nn.BatchNorm2d) -> None:
        """Fold eval-mode ``bn``, which follows this convolution, into it: each output
        channel's stored values and bias are scaled and shifted as ``bn`` would scale
        and shift that channel (no entry is added, so the pattern is unchanged)."""
        scale, shift = batchnorm_affine(bn, self.values.dtype)
        row_of_value = torch.repeat_interleave(torch.arange(self.out_channels),
                                               self.indptr.diff())
        with torch.no_grad():
            self.values.mul_(scale[row_of_value])
        self.bias = folded_bias(self.bias, scale, shift, self.values.requires_grad)

    def to_dense(self) -> nn.Conv2d:
        """An equivalent ``nn.Conv2d`` (a copy; zeros where entries are not stored), without
        the fused ``activation``."""
        return conv_holding(self, self.dense_weight(), self.bias)

    def extra_repr(self) -> str:
        text = (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}")
        if self.padding not in ((0, 0), "valid"):
            text += f", padding={self.padding}"
        if self.dilation != (1, 1):
            text += f", dilation={self.dilation}"
        return text + f", bias={self.bias is not None}, {self._sparse_repr()}"
