"""PyTorch custom ops over the CSR and BSR kernels, in the ``sparsegemm::`` namespace.

Every op takes tensors only: a sparse (rows x cols) weight ``W`` is passed as
``indptr`` (int64, rows + 1), ``indices`` (int32, nnz), ``values`` (nnz) and
``cols`` (the column count, which the pattern alone does not determine),
so ``torch.export`` records the weight in the exported program and
``torch.compile`` traces the ops through their fake (shape-only)
implementations without graph breaks. Kernel handles are looked up in
:mod:`._cache` at run time, and the thread count is read from
``torch.get_num_threads()`` at each call, so ``torch.set_num_threads`` applies
to compiled graphs as well.

Ops (``...`` is any number of leading batch dimensions):

* ``csr_linear(x, indptr, indices, values, cols, bias)``: ``x @ W.T + bias``, x (..., cols).
  bfloat16 values are read as stored, as by ``bitmap_linear`` below (so are ``bsr_linear``'s)
* ``csr_linear_t(g, indptr, indices, values, cols)``: ``g @ W``, g (..., rows)
* ``csr_bmm(indptr, indices, values, cols, b, bias)``: ``W @ b[i] + bias[:, None]``,
  b (B, cols, N)
* ``csr_bmm_t(indptr, indices, values, cols, g)``: ``W.T @ g[i]``, g (B, rows, N)
* ``csr_sampled_dot(indptr, indices, a, b)``: ``sum_i (a[i] @ b[i].T)`` at W's stored
  positions, a (..., rows, n), b (..., cols, n): the gradient of ``values``.
* ``bsr_linear(x, indptr, indices, values, rows, cols, bias)``: ``x @ W.T + bias`` for a BSR
  weight, ``indptr`` per block row, block-column ``indices``, values (nblocks, R, C)
* ``bsr_linear_t(g, indptr, indices, values, rows, cols)``: ``g @ W``, by the BSR kernel on
  the transposed pattern (C x R blocks)
* ``bsr_sampled_dot(indptr, indices, a, b, blocksize)``: ``a.T @ b`` at the stored blocks,
  a (n, rows), b (n, cols): the gradient of BSR ``values``
* ``bitmap_linear(x, bitmap, values, cols, bias)``: ``x @ W.T + bias`` for a bitmap weight,
  ``bitmap`` int64 words (rows, ceil(cols / 64)) (bit ``c % 64`` of word ``c // 64`` marks
  column ``c``), values (nnz,) row-major. bfloat16 values are read as stored by the
  bfloat16-valued kernel: with bfloat16 x and bias, those are converted to float32 once per
  call and the output back to bfloat16; float32 x and bias (a float32 module storing
  bfloat16 weights) are used as they are and the output is float32. float16 values are
  widened to float32 on each call.
* ``bitmap_linear_t(g, bitmap, values, cols)``: ``g @ W``, by the CSR kernel on the transpose
* ``bitmap_sampled_dot(bitmap, a, b, cols, nnz)``: ``a @ b.T`` at the stored positions, a (rows, n),
  b (cols, n): the gradient of bitmap ``values``
* ``csr_conv2d(x, indptr, indices, values, kernel_size, stride, padding, dilation, bias)``:
  ``F.conv2d`` (groups=1, symmetric zero padding) of x (N, Cin, H, W) with the weight
  W (Cout x Cin*KH*KW) computed directly, without an im2col matrix.

No op keeps a copy of ``values``: the cache holds the validated pattern only
and each call hands the live tensor to the kernel.

``csr_linear``, ``bsr_linear``, ``bitmap_linear``, ``csr_bmm`` and ``csr_conv2d`` are
differentiable in their dense inputs, ``values`` and ``bias``; the gradient of ``values``
covers the stored positions only, so the sparsity pattern never fills in.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, List, Optional, Tuple

import numpy as np
import torch.nn.functional as F

import torch
from torch import Tensor

from .. import _core
from ..formats import BitmapMatrix, CSRMatrix
from ..ops import conv_geometry, conv_output_size
from ._cache import as_numpy, patterns, values_array

KERNEL_DTYPES = (torch.float32, torch.float64)
# Stored and returned in their own dtype, computed in float32 (the numpy face's
# rule for float16). The ops widen the stored values on every call, except the
# linear ops (CSR, BSR, bitmap), whose kernels read bfloat16 values as stored.
HALF_DTYPES = (torch.float16, torch.bfloat16)
STORAGE_DTYPES = KERNEL_DTYPES + HALF_DTYPES


def check_kernel_dtype(dtype: torch.dtype, what: str) -> None:
    """Raise TypeError unless ``dtype`` is one the ops take (float16/bfloat16 compute in
    float32)."""
    if dtype not in STORAGE_DTYPES:
        raise TypeError(
            f"{what} has dtype {dtype}; sparsegemm kernels compute in float32 or float64 "
            f"(float16 and bfloat16 in float32; convert with .float() or .double())"
        )


def _half_in_float32(impl: Callable) -> Callable:
    """Run ``impl`` in float32 when its tensors are float16/bfloat16, and return that dtype."""
    @functools.wraps(impl)
    def wrapper(*args):
        half = next((a.dtype for a in args if isinstance(a, Tensor) and a.dtype in HALF_DTYPES),
                    None)
        if half is None:
            return impl(*args)
        widened = [a.float() if isinstance(a, Tensor) and a.dtype in HALF_DTYPES else a
                   for a in args]
        return impl(*widened).to(half)
    return wrapper


def _check_operands(op: str, values: Tensor, **dense: Optional[Tensor]) -> None:
    check_kernel_dtype(values.dtype, f"sparsegemm.{op}: the sparse weight")
    for name, tensor in dense.items():
        if tensor is None:
            continue
        if tensor.dtype != values.dtype:
            raise TypeError(f"sparsegemm.{op}: {name} has dtype {tensor.dtype} but the sparse "
                            f"weight has {values.dtype}; they must match (as in F.linear)")
        if tensor.device.type not in ("cpu", "meta"):
            raise ValueError(f"sparsegemm.{op}: {name} is on {tensor.device}; sparsegemm runs on "
                             f"the CPU")
        if tensor.device != values.device:  # a meta input to a CPU weight, as F.linear refuses
            raise ValueError(f"sparsegemm.{op}: {name} is on {tensor.device} but the sparse "
                             f"weight is on {values.device}")


def _check_last_dim(op: str, name: str, tensor: Tensor, size: int) -> None:
    if tensor.dim() == 0 or tensor.shape[-1] != size:
        raise ValueError(f"sparsegemm.{op}: shape mismatch: {name} has shape {tuple(tensor.shape)} "
                         f"but the sparse weight needs {size} features in the last dimension")


def _check_batched(op: str, name: str, tensor: Tensor, size: int) -> None:
    if tensor.dim() != 3 or tensor.shape[1] != size:
        raise ValueError(f"sparsegemm.{op}: shape mismatch: {name} must be (B, {size}, N), "
                         f"got shape {tuple(tensor.shape)}")


def _bias_array(bias: Optional[Tensor]):
    return None if bias is None else as_numpy(bias.contiguous())


def _rows(indptr: Tensor) -> int:
    return indptr.shape[0] - 1


def _linear(kernel, pattern, x: Tensor, values: np.ndarray, bias: Optional[Tensor]) -> Tensor:
    """``x @ W.T + bias`` for x (..., cols) with W = ``pattern`` holding ``values``."""
    rows, cols = pattern.shape
    x2 = x.reshape(-1, cols).contiguous()
    out = torch.empty((x2.shape[0], rows), dtype=x.dtype)
    kernel(pattern._handle, as_numpy(x2), as_numpy(out), _bias_array(bias),
           torch.get_num_threads(), values)
    return out.view(*x.shape[:-1], rows)


def _check_linear_operands(op: str, x: Tensor, values: Tensor, bias: Optional[Tensor]) -> None:
    """As :func:`_check_operands`, but bfloat16 values also take float32 x and bias."""
    if values.dtype == torch.bfloat16 and x.dtype == torch.float32:
        _check_operands(op, x, bias=bias)
        _check_operands(op, values, x=x.new_empty(0, dtype=values.dtype))
    else:
        _check_operands(op, values, x=x, bias=bias)


def _linear_op(kernel, pattern_for: Callable, x: Tensor, values: Tensor,
               bias: Optional[Tensor]) -> Tensor:
    """A linear op's product: ``x @ W.T + bias`` by ``kernel`` over the pattern
    ``pattern_for(values dtype)``. bfloat16 values go to the kernel as they are: only x,
    bias and the output convert (x and bias to float32, the output back to x's dtype).
    float16 values are widened to float32 with the other tensors (_half_in_float32)."""
    if values.dtype == torch.bfloat16:
        y = _linear(kernel, pattern_for(values.dtype), x.float(), values_array(values),
                    None if bias is None else bias.float())
        return y.to(x.dtype)
    return _widened_linear(kernel, pattern_for, x, values, bias)


@_half_in_float32
def _widened_linear(kernel, pattern_for: Callable, x: Tensor, values: Tensor,
                    bias: Optional[Tensor]) -> Tensor:
    return _linear(kernel, pattern_for(values.dtype), x, values_array(values), bias)


# the direct path -----------------------------------------------------------------------------

# Direct-path outputs up to this many bytes are allocated by numpy and shared with torch
# (np.empty + torch.from_numpy, about 0.6 us) instead of torch.empty viewed by numpy
# (about 1.6 us): on a tiny layer that microsecond is a tenth of the call. Larger outputs
# stay torch's, 64-byte aligned for the kernels' stores (numpy's are 16-byte aligned).
# Neither storage can be resized: torch marks a tensor's storage fixed once numpy views it.
_NUMPY_OUTPUT_MAX_BYTES = 64 * 1024


def direct_output(rows: int, cols: int, like: Tensor, like_array: np.ndarray
                  ) -> tuple[Tensor, np.ndarray]:
    """A new (rows, cols) output of ``like``'s dtype (``like_array`` is its numpy view) and
    the numpy view of the output, for the kernels."""
    if rows * cols * like_array.itemsize <= _NUMPY_OUTPUT_MAX_BYTES:
        array = np.empty((rows, cols), like_array.dtype)
        return torch.from_numpy(array), array
    out = torch.empty(rows, cols, dtype=like.dtype)
    return out, out.numpy()


def can_call_kernel_directly(x: Tensor, values: Tensor, bias: Optional[Tensor]) -> bool:
    """True when a module may skip the custom op and call the kernel on numpy views.

    That is when nothing needs what the op provides: no gradient is recorded
    (grad mode off, e.g. ``no_grad``/``inference_mode``, or nothing requires
    grad), torch.compile/export is not tracing, and ``x`` is a plain CPU tensor
    of the weight's dtype, float32 or float64. Anything else (a wrong shape included) goes through
    the op, which gives the same result or raises its clear error.
    """
    if torch.compiler.is_compiling() or type(x) is not Tensor:
        return False
    if x.dtype != values.dtype or not x.is_cpu or x.dtype in HALF_DTYPES:
        return False  # half types: the op computes them in float32
    if torch.is_grad_enabled() and (x.requires_grad or values.requires_grad
                                    or (bias is not None and bias.requires_grad)):
        return False
    return True


def can_call_bfloat16_values_directly(x: Tensor, values: Tensor, bias: Optional[Tensor]) -> bool:
    """:func:`can_call_kernel_directly` for a weight holding bfloat16 values, which the
    kernels read as stored: x float32 (the output float32) or bfloat16 (computed in float32
    and rounded back, as the op does), bias None or of x's dtype."""
    if torch.compiler.is_compiling() or type(x) is not Tensor or not x.is_cpu:
        return False
    if values.dtype != torch.bfloat16 or x.dtype not in (torch.float32, torch.bfloat16):
        return False
    if bias is not None and bias.dtype != x.dtype:
        return False  # the op's error
    return not (torch.is_grad_enabled() and (x.requires_grad or values.requires_grad
                                             or (bias is not None and bias.requires_grad)))


def _kernel_rows(x: Tensor, cols: int) -> tuple[Tensor, np.ndarray]:
    """x as a (rows, cols) tensor with contiguous rows (a view where it can be) and the
    numpy view of it that the kernels take."""
    x2 = x if x.dim() == 2 and x.is_contiguous() else x.reshape(-1, cols).contiguous()
    return x2, (x2.detach().numpy() if x2.requires_grad else x2.numpy())


def linear_direct(x: Tensor, pattern, values: np.ndarray, bias: Optional[np.ndarray],
                  chunk_ordered: Optional[tuple] = None,
                  activation: Optional[str] = None) -> Tensor:
    """``activation(x @ W.T + bias)`` by the kernel of ``pattern`` (a CSRMatrix, BSRMatrix or
    BitmapMatrix)
    holding ``values``, the activation in its epilogue, without the op's dispatch: only
    after :func:`can_call_kernel_directly` and with ``x.shape[-1]`` checked.
    ``chunk_ordered`` is (chunk layout, the values in chunk order) for a CSR pattern
    (see ``KernelOperands``), or None."""
    handle = pattern._handle
    rows, cols = handle.rows, handle.cols
    matrix = x.dim() == 2
    # Inlined rather than _kernel_rows: this path is a tiny layer's whole overhead.
    x2 = x if matrix and x.is_contiguous() else x.reshape(-1, cols).contiguous()
    x_array = x2.detach().numpy() if x2.requires_grad else x2.numpy()
    out, out_array = direct_output(x2.shape[0], rows, x2, x_array)
    threads = torch.get_num_threads()
    if chunk_ordered is not None:
        layout, ordered = chunk_ordered
        _core.csr_linear_chunk_ordered(handle, x_array, out_array, bias, threads, values,
                                       ordered, layout, activation)
    else:
        kernel = (_core.csr_linear if type(pattern) is CSRMatrix else
                  _core.bitmap_linear if type(pattern) is BitmapMatrix else _core.bsr_linear)
        kernel(handle, x_array, out_array, bias, threads, values, activation)
    return out if matrix else out.view(*x.shape[:-1], rows)


def chunk_order(chunks: Optional[tuple]) -> tuple:
    """(chunk layout, values in chunk order) from ``KernelOperands``' last item, as the
    fused kernels take them: (0, None) where the weight runs unchunked."""
    return chunks if chunks is not None else (0, None)


def linear_pair_direct(x: Tensor, first: tuple, activation: Optional[str],
                       second: tuple) -> Tensor:
    """``(activation(x @ W1.T + b1)) @ W2.T + b2`` in one kernel call
    (``sparsegemm.feed_forward``) for two CSR layers' ``KernelOperands``, under the same
    conditions as :func:`linear_direct` for both."""
    pattern1, values1, bias1, chunks1 = first
    pattern2, values2, bias2, chunks2 = second
    cols1, ordered1 = chunk_order(chunks1)
    cols2, ordered2 = chunk_order(chunks2)
    rows = pattern2._handle.rows
    x2, x_array = _kernel_rows(x, pattern1._handle.cols)
    out, out_array = direct_output(x2.shape[0], rows, x2, x_array)
    _core.csr_linear_pair(pattern1._handle, values1, ordered1, cols1, bias1, activation,
                          pattern2._handle, values2, ordered2, cols2, bias2, x_array, out_array,
                          torch.get_num_threads())
    return out if x.dim() == 2 else out.view(*x.shape[:-1], rows)


def self_attention_direct(x: Tensor, projections: tuple[Any, Any], batch: int, heads: int,
                          scale: float) -> Optional[Tensor]:
    """Self-attention over ``x`` (``batch`` sequences of equal length, their rows stacked)
    in one kernel call (``_core.csr_self_attention``): the stacked q, k, v product, the
    attention of ``heads`` heads with ``scale``, and the output product, back to back, so
    no Python runs between them on caches the products have just filled. ``projections``
    is (the stacked q, k, v module, the output module). Returns the (rows, out) output, or
    None where either module would not run the float32 CSR kernel directly
    (``direct_csr_operands``): then the caller runs the steps one by one."""
    rows = x.reshape(-1, x.shape[-1]).contiguous()
    if rows.shape[0] == 0:
        return None
    qkv_projection, out_projection = projections
    qkv = _direct_csr_operands(qkv_projection, rows)
    if qkv is None:
        return None
    # The context the output projection reads has x's rows and a query's width, which
    # the caller makes x's width: x stands in for it in that projection's checks.
    out = _direct_csr_operands(out_projection, rows)
    if out is None:
        return None
    qkv_pattern, qkv_values, qkv_bias, qkv_chunks = qkv
    out_pattern, out_values, out_bias, out_chunks = out
    qkv_cols, qkv_ordered = chunk_order(qkv_chunks)
    out_cols, out_ordered = chunk_order(out_chunks)
    y = torch.empty((rows.shape[0], out_pattern._handle.rows), dtype=torch.float32)
    _core.csr_self_attention(
        qkv_pattern._handle, qkv_values, qkv_ordered, qkv_cols, qkv_bias,
        out_pattern._handle, out_values, out_ordered, out_cols, out_bias,
        rows.detach().numpy(), batch, heads, float(scale), y.numpy(), torch.get_num_threads())
    return y


def _direct_csr_operands(projection: Any, x: Tensor) -> Optional[tuple]:
    direct = getattr(projection, "direct_csr_operands", None)
    return direct(x) if direct is not None else None


# csr_linear ---------------------------------------------------------------------------------

@torch.library.custom_op("sparsegemm::csr_linear", mutates_args=())
def csr_linear(x: Tensor, indptr: Tensor, indices: Tensor, values: Tensor, cols: int,
               bias: Optional[Tensor]) -> Tensor:
    """``x @ W.T + bias`` (F.linear) for W = (indptr, indices, values), W (rows x cols)."""
    _check_linear_operands("csr_linear", x, values, bias)
    _check_last_dim("csr_linear", "x", x, cols)
    return _linear_op(
        _core.csr_linear,
        lambda dtype: patterns.entry(indptr, indices, (_rows(indptr), cols), dtype).matrix,
        x, values, bias)


@csr_linear.register_fake
def _(x, indptr, indices, values, cols, bias):
    _check_linear_operands("csr_linear", x, values, bias)
    _check_last_dim("csr_linear", "x", x, cols)
    return x.new_empty((*x.shape[:-1], _rows(indptr)))


@torch.library.custom_op("sparsegemm::csr_linear_t", mutates_args=())
@_half_in_float32
def csr_linear_t(g: Tensor, indptr: Tensor, indices: Tensor, values: Tensor, cols: int) -> Tensor:
    """``g @ W`` for g (..., rows): the input gradient of :func:`csr_linear`."""
    _check_operands("csr_linear_t", values, g=g)
    rows = _rows(indptr)
    _check_last_dim("csr_linear_t", "g", g, rows)
    transposed, permutation = patterns.entry(
        indptr, indices, (rows, cols), values.dtype
    ).transpose()
    return _linear(_core.csr_linear, transposed, g, values_array(values)[permutation], None)


@csr_linear_t.register_fake
def _(g, indptr, indices, values, cols):
    _check_operands("csr_linear_t", values, g=g)
    _check_last_dim("csr_linear_t", "g", g, _rows(indptr))
    return g.new_empty((*g.shape[:-1], cols), dtype=values.dtype)


# csr_sampled_dot ------------------------------------------------------------------------------

def _sampled_dot_shapes(indptr: Tensor, values_like: Tensor, a: Tensor, b: Tensor) -> None:
    rows = _rows(indptr)
    if (a.dim() < 2 or a.shape[:-2] != b.shape[:-2] or a.shape[-2] != rows
            or a.shape[-1] != b.shape[-1]):
        raise ValueError(f"sparsegemm.csr_sampled_dot: need a (..., {rows}, n) "
                         f"and b (..., cols, n) "
                         f"with the same leading dims, got {tuple(a.shape)} and {tuple(b.shape)}")


@torch.library.custom_op("sparsegemm::csr_sampled_dot", mutates_args=())
@_half_in_float32
def csr_sampled_dot(indptr: Tensor, indices: Tensor, a: Tensor, b: Tensor) -> Tensor:
    """``sum_i (a[i] @ b[i].T)`` at the stored positions of the pattern, in storage order."""
    _check_operands("csr_sampled_dot", a, b=b)
    _sampled_dot_shapes(indptr, a, a, b)
    rows, cols, n = _rows(indptr), b.shape[-2], a.shape[-1]
    pattern = patterns.entry(indptr, indices, (rows, cols), a.dtype).matrix
    a3 = as_numpy(a.reshape(-1, rows, n).contiguous())
    b3 = as_numpy(b.reshape(-1, cols, n).contiguous())
    threads = torch.get_num_threads()
    out = torch.zeros(indices.shape[0], dtype=a.dtype)
    out_array = as_numpy(out)
    partial = as_numpy(torch.empty_like(out)) if len(a3) > 1 else out_array
    for a2, b2 in zip(a3, b3):
        _core.csr_sampled_dot(pattern._handle, a2, b2, partial, threads)
        if partial is not out_array:
            out_array += partial
    return out


@csr_sampled_dot.register_fake
def _(indptr, indices, a, b):
    _check_operands("csr_sampled_dot", a, b=b)
    _sampled_dot_shapes(indptr, a, a, b)
    return a.new_empty((indices.shape[0],))


# csr_bmm --------------------------------------------------------------------------------------

@torch.library.custom_op("sparsegemm::csr_bmm", mutates_args=())
@_half_in_float32
def csr_bmm(indptr: Tensor, indices: Tensor, values: Tensor, cols: int, b: Tensor,
            bias: Optional[Tensor]) -> Tensor:
    """``W @ b[i] + bias[:, None]`` for each i, b (B, cols, N): the layout of a convolution."""
    _check_operands("csr_bmm", values, b=b, bias=bias)
    _check_batched("csr_bmm", "b", b, cols)
    rows = _rows(indptr)
    pattern = patterns.entry(indptr, indices, (rows, cols), values.dtype).matrix
    out = torch.empty((b.shape[0], rows, b.shape[2]), dtype=values.dtype)
    _batched_matmul(pattern, values_array(values), b, out, _bias_array(bias))
    return out


@csr_bmm.register_fake
def _(indptr, indices, values, cols, b, bias):
    _check_operands("csr_bmm", values, b=b, bias=bias)
    _check_batched("csr_bmm", "b", b, cols)
    return b.new_empty((b.shape[0], _rows(indptr), b.shape[2]), dtype=values.dtype)


@torch.library.custom_op("sparsegemm::csr_bmm_t", mutates_args=())
@_half_in_float32
def csr_bmm_t(indptr: Tensor, indices: Tensor, values: Tensor, cols: int, g: Tensor) -> Tensor:
    """``W.T @ g[i]`` for each i, g (B, rows, N): the input gradient of :func:`csr_bmm`."""
    _check_operands("csr_bmm_t", values, g=g)
    rows = _rows(indptr)
    _check_batched("csr_bmm_t", "g", g, rows)
    transposed, permutation = patterns.entry(
        indptr, indices, (rows, cols), values.dtype
    ).transpose()
    out = torch.empty((g.shape[0], cols, g.shape[2]), dtype=values.dtype)
    _batched_matmul(transposed, values_array(values)[permutation], g, out, None)
    return out


@csr_bmm_t.register_fake
def _(indptr, indices, values, cols, g):
    _check_operands("csr_bmm_t", values, g=g)
    _check_batched("csr_bmm_t", "g", g, _rows(indptr))
    return g.new_empty((g.shape[0], cols, g.shape[2]), dtype=values.dtype)


def _batched_matmul(pattern, values: np.ndarray, b: Tensor, out: Tensor,
                    bias: Optional[np.ndarray]) -> None:
    # Each b[i] is (K x N) with N contiguous: the panel kernel reads it in place.
    b_array = as_numpy(b.contiguous())
    out_array = as_numpy(out)
    threads = torch.get_num_threads()
    for b_i, out_i in zip(b_array, out_array):
        _core.csr_matmul(pattern._handle, b_i, out_i, bias, threads, values)


def bmm_direct(b: Tensor, pattern, values: np.ndarray, bias: Optional[np.ndarray]) -> Tensor:
    """:func:`csr_bmm` without the op's dispatch: only after
    :func:`can_call_kernel_directly`, with b (B, cols, N) checked."""
    out = torch.empty((b.shape[0], pattern.shape[0], b.shape[2]), dtype=b.dtype)
    _batched_matmul(pattern, values, b, out, bias)
    return out


# csr_conv2d -----------------------------------------------------------------------------------

def _check_conv(x: Tensor, indptr: Tensor, values: Tensor, cols: int, kernel_size: List[int],
                stride: List[int], padding: List[int], dilation: List[int],
                bias: Optional[Tensor]) -> List:
    _check_operands("csr_conv2d", values, x=x, bias=bias)
    try:
        *_, out_size = conv_geometry(tuple(x.shape), cols, tuple(kernel_size), tuple(stride),
                                     tuple(padding), tuple(dilation))
    except ValueError as error:
        raise ValueError(f"sparsegemm.csr_conv2d: {error}") from None
    return list(out_size)


@torch.library.custom_op("sparsegemm::csr_conv2d", mutates_args=())
@_half_in_float32
def csr_conv2d(x: Tensor, indptr: Tensor, indices: Tensor, values: Tensor, cols: int,
               kernel_size: List[int], stride: List[int], padding: List[int], dilation: List[int],
               bias: Optional[Tensor]) -> Tensor:
    """``F.conv2d(x, W, bias, stride, padding, dilation)`` by the direct sparse kernel.

    W (Cout, Cin, KH, KW) is stored as the Cout x (Cin*KH*KW) matrix (indptr, indices,
    values); the kernel reads ``values`` in place (no copy into the cached handle).
    """
    out_h, out_w = _check_conv(
        x, indptr, values, cols, kernel_size, stride, padding, dilation, bias
    )
    rows = _rows(indptr)
    pattern = patterns.entry(indptr, indices, (rows, cols), values.dtype).matrix
    return _conv2d(x, pattern, values_array(values), _bias_array(bias), kernel_size, stride,
                   padding, dilation, (out_h, out_w))


def _conv2d(x: Tensor, pattern, values: np.ndarray, bias: Optional[np.ndarray],
            kernel_size: List[int], stride: List[int], padding: List[int], dilation: List[int],
            out_size: Tuple[int, int], activation: Optional[str] = None) -> Tensor:
    out = torch.empty((x.shape[0], pattern.shape[0], *out_size), dtype=x.dtype)
    _core.csr_conv2d(pattern._handle, as_numpy(x.contiguous()), as_numpy(out), kernel_size, stride,
                     padding, dilation, bias, torch.get_num_threads(), values, activation)
    return out


def conv2d_direct(x: Tensor, pattern, values: np.ndarray, bias: Optional[np.ndarray],
                  kernel_size: List[int], stride: List[int], padding: List[int],
                  dilation: List[int], activation: Optional[str] = None) -> Optional[Tensor]:
    """``activation(csr_conv2d(...))`` without the op's dispatch, the activation in the
    kernel's epilogue: only after :func:`can_call_kernel_directly`, with x (N, C, H, W) of
    the weight's channels. None where the kernel does not fit the input (the op then
    raises its clear error)."""
    out_h, out_w = (conv_output_size(*axis)
                    for axis in zip(x.shape[2:], kernel_size, stride, padding, dilation))
    if out_h <= 0 or out_w <= 0:
        return None
    return _conv2d(x, pattern, values, bias, kernel_size, stride, padding, dilation,
                   (out_h, out_w), activation)


@csr_conv2d.register_fake
def _(x, indptr, indices, values, cols, kernel_size, stride, padding, dilation, bias):
    out_h, out_w = _check_conv(
        x, indptr, values, cols, kernel_size, stride, padding, dilation, bias
    )
    return x.new_empty((x.shape[0], _rows(indptr), out_h, out_w), dtype=values.dtype)


# bsr_linear -----------------------------------------------------------------------------------

def _check_bsr(op: str, indptr: Tensor, values: Tensor, rows: int, cols: int) -> None:
    if values.dim() != 3:
        raise ValueError(f"sparsegemm.{op}: values must be (nblocks, R, C), got shape "
                         f"{tuple(values.shape)}")
    block_rows = -(-rows // values.shape[1])
    if indptr.shape[0] != block_rows + 1:
        raise ValueError(f"sparsegemm.{op}: indptr has {indptr.shape[0]} entries but {rows} rows "
                         f"in blocks of {values.shape[1]} need {block_rows + 1}")


@torch.library.custom_op("sparsegemm::bsr_linear", mutates_args=())
def bsr_linear(x: Tensor, indptr: Tensor, indices: Tensor, values: Tensor, rows: int, cols: int,
               bias: Optional[Tensor]) -> Tensor:
    """``x @ W.T + bias`` for the BSR weight W (rows x cols): ``indptr`` per block row,
    block-column ``indices`` and ``values`` of shape (nblocks, R, C)."""
    _check_linear_operands("bsr_linear", x, values, bias)
    _check_bsr("bsr_linear", indptr, values, rows, cols)
    _check_last_dim("bsr_linear", "x", x, cols)
    blocksize = (values.shape[1], values.shape[2])
    return _linear_op(
        _core.bsr_linear,
        lambda dtype: patterns.entry(indptr, indices, (rows, cols), dtype, blocksize).matrix,
        x, values, bias)


@bsr_linear.register_fake
def _(x, indptr, indices, values, rows, cols, bias):
    _check_linear_operands("bsr_linear", x, values, bias)
    _check_bsr("bsr_linear", indptr, values, rows, cols)
    _check_last_dim("bsr_linear", "x", x, cols)
    return x.new_empty((*x.shape[:-1], rows))


@torch.library.custom_op("sparsegemm::bsr_linear_t", mutates_args=())
@_half_in_float32
def bsr_linear_t(g: Tensor, indptr: Tensor, indices: Tensor, values: Tensor, rows: int,
                 cols: int) -> Tensor:
    """``g @ W`` for g (..., rows): the input gradient of :func:`bsr_linear`.

    Runs the BSR kernel on the transposed pattern (C x R blocks, built once per
    pattern); each call gathers and transposes the blocks, ``values[perm].mT``.
    """
    _check_operands("bsr_linear_t", values, g=g)
    _check_bsr("bsr_linear_t", indptr, values, rows, cols)
    _check_last_dim("bsr_linear_t", "g", g, rows)
    transposed, permutation = patterns.entry(indptr, indices, (rows, cols), values.dtype,
                                             (values.shape[1], values.shape[2])).transpose()
    blocks_t = np.ascontiguousarray(as_numpy(values)[permutation].transpose(0, 2, 1))
    return _linear(_core.bsr_linear, transposed, g, blocks_t.reshape(-1), None)


@bsr_linear_t.register_fake
def _(g, indptr, indices, values, rows, cols):
    _check_operands("bsr_linear_t", values, g=g)
    _check_bsr("bsr_linear_t", indptr, values, rows, cols)
    _check_last_dim("bsr_linear_t", "g", g, rows)
    return g.new_empty((*g.shape[:-1], cols), dtype=values.dtype)


# Bounds the (n, blocks, R + C) gathers of bsr_sampled_dot, in elements.
_BLOCK_GRAD_CHUNK = 1 << 22


@torch.library.custom_op("sparsegemm::bsr_sampled_dot", mutates_args=())
@_half_in_float32
def bsr_sampled_dot(indptr: Tensor, indices: Tensor, a: Tensor, b: Tensor,
                    blocksize: List[int]) -> Tensor:
    """``a.T @ b`` at the stored blocks, as (nblocks, R, C), for a (n, rows), b (n, cols):
    the gradient of a BSR weight's values (padding entries get zero)."""
    _check_operands("bsr_sampled_dot", a, b=b)
    r, c = blocksize
    n, rows = a.shape
    cols = b.shape[1]
    a_blocks = F.pad(a, (0, (indptr.shape[0] - 1) * r - rows)).view(n, -1, r)
    b_blocks = F.pad(b, (0, -(-cols // c) * c - cols)).view(n, -1, c)
    block_rows = torch.repeat_interleave(torch.arange(indptr.shape[0] - 1), indptr.diff())
    block_cols = indices.long()
    out = a.new_empty((indices.shape[0], r, c))
    # Small numpy-free einsum over chunks of blocks: correct first, not a tuned kernel.
    chunk = max(1, _BLOCK_GRAD_CHUNK // max(1, n * (r + c)))
    for start in range(0, indices.shape[0], chunk):
        stop = start + chunk
        out[start:stop] = torch.einsum("nbi,nbj->bij", a_blocks[:, block_rows[start:stop]],
                                       b_blocks[:, block_cols[start:stop]])
    return out


@bsr_sampled_dot.register_fake
def _(indptr, indices, a, b, blocksize):
    _check_operands("bsr_sampled_dot", a, b=b)
    return a.new_empty((indices.shape[0], blocksize[0], blocksize[1]))


# autograd -------------------------------------------------------------------------------------

def _linear_setup_context(ctx, inputs, output):
    x, indptr, indices, values, cols, bias = inputs
    ctx.save_for_backward(x, indptr, indices, values)


def _linear_backward(ctx, grad):
    x, indptr, indices, values = ctx.saved_tensors
    rows, cols = _rows(indptr), x.shape[-1]
    grad_x = grad_values = grad_bias = None
    if ctx.needs_input_grad[0]:
        # bfloat16 values of a float32 product widen: the gradient stays float32.
        grad_x = torch.ops.sparsegemm.csr_linear_t(grad, indptr, indices, values.to(grad.dtype),
                                                   cols)
    if ctx.needs_input_grad[3]:
        # dW = dY.T @ X sampled at the stored positions.
        grad_values = torch.ops.sparsegemm.csr_sampled_dot(
            indptr, indices, grad.reshape(-1, rows).t(), x.reshape(-1, cols).t()
        ).to(values.dtype)
    if ctx.needs_input_grad[5]:
        grad_bias = grad.reshape(-1, rows).sum(0)
    return grad_x, None, None, grad_values, None, grad_bias


csr_linear.register_autograd(_linear_backward, setup_context=_linear_setup_context)


def _bmm_setup_context(ctx, inputs, output):
    indptr, indices, values, cols, b, bias = inputs
    ctx.save_for_backward(indptr, indices, values, b)


def _bmm_backward(ctx, grad):
    indptr, indices, values, b = ctx.saved_tensors
    grad_values = grad_b = grad_bias = None
    if ctx.needs_input_grad[2]:
        grad_values = torch.ops.sparsegemm.csr_sampled_dot(indptr, indices, grad, b)
    if ctx.needs_input_grad[4]:
        grad_b = torch.ops.sparsegemm.csr_bmm_t(indptr, indices, values, b.shape[1], grad)
    if ctx.needs_input_grad[5]:
        grad_bias = grad.sum((0, 2))
    return None, None, grad_values, None, grad_b, grad_bias


csr_bmm.register_autograd(_bmm_backward, setup_context=_bmm_setup_context)


def _conv2d_setup_context(ctx, inputs, output):
    x, indptr, indices, values, cols, kernel_size, stride, padding, dilation, bias = inputs
    ctx.save_for_backward(x, indptr, indices, values)
    ctx.cols = cols
    ctx.geometry = dict(kernel_size=kernel_size, dilation=dilation, padding=padding, stride=stride)


def _conv2d_backward(ctx, grad):
    # Through the im2col layout (only the forward pass is direct): with
    # columns = unfold(x), out = W @ columns, so d columns = W.T @ d out (folded
    # back onto x) and dW = d out @ columns.T at the stored positions.
    x, indptr, indices, values = ctx.saved_tensors
    grad_columns = grad.reshape(grad.shape[0], grad.shape[1], -1)
    grad_x = grad_values = grad_bias = None
    if ctx.needs_input_grad[0]:
        columns_grad = torch.ops.sparsegemm.csr_bmm_t(indptr, indices, values, ctx.cols,
                                                      grad_columns)
        grad_x = F.fold(columns_grad, x.shape[2:], **ctx.geometry)
    if ctx.needs_input_grad[3]:
        grad_values = torch.ops.sparsegemm.csr_sampled_dot(
            indptr, indices, grad_columns, F.unfold(x, **ctx.geometry))
    if ctx.needs_input_grad[9]:
        grad_bias = grad.sum((0, 2, 3))
    return grad_x, None, None, grad_values, None, None, None, None, None, grad_bias


csr_conv2d.register_autograd(_conv2d_backward, setup_context=_conv2d_setup_context)


def _bsr_linear_setup_context(ctx, inputs, output):
    x, indptr, indices, values, rows, cols, _bias = inputs
    ctx.save_for_backward(x, indptr, indices, values)
    ctx.shape = (rows, cols)


def _bsr_linear_backward(ctx, grad):
    x, indptr, indices, values = ctx.saved_tensors
    rows, cols = ctx.shape
    grad_x = grad_values = grad_bias = None
    if ctx.needs_input_grad[0]:
        grad_x = torch.ops.sparsegemm.bsr_linear_t(grad, indptr, indices, values.to(grad.dtype),
                                                   rows, cols)
    if ctx.needs_input_grad[3]:
        grad_values = torch.ops.sparsegemm.bsr_sampled_dot(
            indptr, indices, grad.reshape(-1, rows), x.reshape(-1, cols), list(values.shape[1:])
        ).to(values.dtype)
    if ctx.needs_input_grad[6]:
        grad_bias = grad.reshape(-1, rows).sum(0)
    return grad_x, None, None, grad_values, None, None, grad_bias


bsr_linear.register_autograd(_bsr_linear_backward, setup_context=_bsr_linear_setup_context)


# bitmap_linear --------------------------------------------------------------------------------

def _check_bitmap(op: str, bitmap: Tensor, cols: int) -> None:
    words = -(-cols // 64)
    if bitmap.dim() != 2 or bitmap.shape[1] != words or bitmap.dtype != torch.int64:
        raise ValueError(f"sparsegemm.{op}: bitmap must be int64 of shape (rows, {words}) "
                         f"(ceil(cols / 64) words per row), got {bitmap.dtype} "
                         f"{tuple(bitmap.shape)}")


@torch.library.custom_op("sparsegemm::bitmap_linear", mutates_args=())
def bitmap_linear(x: Tensor, bitmap: Tensor, values: Tensor, cols: int,
                  bias: Optional[Tensor]) -> Tensor:
    """``x @ W.T + bias`` for the bitmap weight W (rows x cols) = (bitmap, values)."""
    _check_linear_operands("bitmap_linear", x, values, bias)
    _check_bitmap("bitmap_linear", bitmap, cols)
    _check_last_dim("bitmap_linear", "x", x, cols)
    return _linear_op(
        _core.bitmap_linear,
        lambda dtype: patterns.bitmap_entry(bitmap, (bitmap.shape[0], cols), dtype).matrix,
        x, values, bias)


@bitmap_linear.register_fake
def _(x, bitmap, values, cols, bias):
    _check_linear_operands("bitmap_linear", x, values, bias)
    _check_bitmap("bitmap_linear", bitmap, cols)
    _check_last_dim("bitmap_linear", "x", x, cols)
    return x.new_empty((*x.shape[:-1], bitmap.shape[0]))


@torch.library.custom_op("sparsegemm::bitmap_linear_t", mutates_args=())
@_half_in_float32
def bitmap_linear_t(g: Tensor, bitmap: Tensor, values: Tensor, cols: int) -> Tensor:
    """``g @ W`` for g (..., rows): the input gradient of :func:`bitmap_linear`."""
    _check_operands("bitmap_linear_t", values, g=g)
    _check_bitmap("bitmap_linear_t", bitmap, cols)
    _check_last_dim("bitmap_linear_t", "g", g, bitmap.shape[0])
    entry = patterns.bitmap_entry(bitmap, (bitmap.shape[0], cols), values.dtype)
    transposed, permutation = entry.transpose()
    return _linear(_core.csr_linear, transposed, g, values_array(values)[permutation], None)


@bitmap_linear_t.register_fake
def _(g, bitmap, values, cols):
    _check_operands("bitmap_linear_t", values, g=g)
    _check_bitmap("bitmap_linear_t", bitmap, cols)
    _check_last_dim("bitmap_linear_t", "g", g, bitmap.shape[0])
    return g.new_empty((*g.shape[:-1], cols), dtype=values.dtype)


def _bitmap_sampled_shapes(bitmap: Tensor, a: Tensor, b: Tensor, cols: int) -> None:
    rows = bitmap.shape[0]
    if a.dim() != 2 or b.dim() != 2 or a.shape[0] != rows or b.shape != (cols, a.shape[1]):
        raise ValueError(f"sparsegemm.bitmap_sampled_dot: need a ({rows}, n) and b ({cols}, n), "
                         f"got {tuple(a.shape)} and {tuple(b.shape)}")


@torch.library.custom_op("sparsegemm::bitmap_sampled_dot", mutates_args=())
@_half_in_float32
def bitmap_sampled_dot(bitmap: Tensor, a: Tensor, b: Tensor, cols: int, nnz: int) -> Tensor:
    """``a @ b.T`` at the ``nnz`` stored positions of the bitmap, in storage order."""
    _check_operands("bitmap_sampled_dot", a, b=b)
    _check_bitmap("bitmap_sampled_dot", bitmap, cols)
    _bitmap_sampled_shapes(bitmap, a, b, cols)
    entry = patterns.bitmap_entry(bitmap, (bitmap.shape[0], cols), a.dtype)
    pattern = entry.csr()
    if pattern.nnz != nnz:
        raise ValueError(f"sparsegemm.bitmap_sampled_dot: the bitmap stores {pattern.nnz} "
                         f"entries, not nnz = {nnz}")
    out = torch.empty(nnz, dtype=a.dtype)
    _core.csr_sampled_dot(pattern._handle, as_numpy(a.contiguous()), as_numpy(b.contiguous()),
                          as_numpy(out), torch.get_num_threads())
    return out


@bitmap_sampled_dot.register_fake
def _(bitmap, a, b, cols, nnz):
    _check_operands("bitmap_sampled_dot", a, b=b)
    _check_bitmap("bitmap_sampled_dot", bitmap, cols)
    _bitmap_sampled_shapes(bitmap, a, b, cols)
    return a.new_empty((nnz,))


def _bitmap_linear_setup_context(ctx, inputs, output):
    x, bitmap, values, cols, _bias = inputs
    ctx.save_for_backward(x, bitmap, values)
    ctx.cols = cols


def _bitmap_linear_backward(ctx, grad):
    x, bitmap, values = ctx.saved_tensors
    rows, cols = bitmap.shape[0], ctx.cols
    grad_x = grad_values = grad_bias = None
    if ctx.needs_input_grad[0]:
        # bfloat16 values of a float32 product widen: the gradient stays float32.
        grad_x = torch.ops.sparsegemm.bitmap_linear_t(grad, bitmap, values.to(grad.dtype), cols)
    if ctx.needs_input_grad[2]:
        # dW = dY.T @ X sampled at the stored positions.
        grad_values = torch.ops.sparsegemm.bitmap_sampled_dot(
            bitmap, grad.reshape(-1, rows).t(), x.reshape(-1, cols).t(), cols, values.shape[0]
        ).to(values.dtype)
    if ctx.needs_input_grad[4]:
        grad_bias = grad.reshape(-1, rows).sum(0)
    return grad_x, None, grad_values, None, grad_bias


bitmap_linear.register_autograd(_bitmap_linear_backward,
                                setup_context=_bitmap_linear_setup_context)


# Under torch.autocast a sparse product runs in float32 (there are no
# reduced-precision kernels), as autocast's float32 ops do.
for _op in ("csr_linear", "csr_bmm", "csr_conv2d", "bsr_linear", "bitmap_linear"):
    torch.library.register_autocast(f"sparsegemm::{_op}", "cpu", torch.float32)
