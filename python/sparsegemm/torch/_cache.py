"""Validated sparsity patterns for sparse weights held as torch tensors.

A sparse weight lives in a module as tensors (``indptr``, ``indices`` and the
``values`` parameter) so that ``state_dict``, ``torch.export`` and optimizers
see ordinary tensors. The kernels need a validated :class:`CSRMatrix`,
:class:`BSRMatrix` or :class:`BitmapMatrix`; building one copies and checks
every index, so it is built once per pattern and kept here until the
pattern's tensors are freed.

Only the *pattern* is cached, as a pattern-only matrix (``has_values`` False:
the structure and no value array): every product that records a gradient
passes the live ``values`` tensor to the kernel (as a zero-copy numpy view).

The inference path (:class:`KernelOperands`) also keeps, for a CSR weight whose
kernel runs in column chunks, a copy of the values in the order that kernel
reads them (chunk order, 1.0-1.6x faster than reading them in CSR order). The
copy is remade when ``values`` changes its memory or its ``_version`` counter,
which every in-place edit through the tensor bumps (optimizer steps,
``load_state_dict``, ``copy_`` under ``no_grad``).

A cached pattern is reused while ``indptr`` and ``indices`` are the same
storages with the same ``_version`` counters. Editing any of the tensors
through ``.data`` bypasses the counter; call :func:`clear_cache` after that.
"""

from __future__ import annotations

import math
import threading
import weakref
from typing import Any, Callable, Union

import numpy as np

import torch

from .. import _core
from .._dtypes import BFLOAT16
from ..formats import BitmapMatrix, BSRMatrix, CSRMatrix

_NUMPY_DTYPES = {torch.float32: np.float32, torch.float64: np.float64}

Pattern = Union[CSRMatrix, BSRMatrix, BitmapMatrix]


def _storage_ref(tensor: torch.Tensor, callback: Callable | None = None) -> weakref.ref:
    # Storage Python objects are preserved while alive and shared by aliases
    # (views, .detach()), so a weak reference identifies the memory itself.
    return weakref.ref(tensor.untyped_storage(), callback)


def _value_dtype(dtype: torch.dtype) -> Any:
    """The value dtype of a kernel pattern for values of ``dtype``: bfloat16 values go to
    the bfloat16-valued kernels as they are."""
    return BFLOAT16 if dtype == torch.bfloat16 else _NUMPY_DTYPES[dtype]


def tensor_version(tensor: torch.Tensor) -> int | None:
    """The tensor's version counter (bumped by in-place writes); None for an inference
    tensor, which keeps none (its in-place edits go unseen: call clear_cache after them)."""
    return None if tensor.is_inference() else tensor._version


def as_numpy(tensor: torch.Tensor) -> np.ndarray:
    """A numpy view of a CPU tensor's memory (no copy)."""
    return tensor.detach().numpy()


# Tensors from this size up are worth a huge page (core/large_array.h).
_HUGE_PAGE_BYTES = 2 << 20


def on_huge_pages(tensor: torch.Tensor) -> torch.Tensor:
    """``tensor`` (detached) copied into memory advised onto transparent huge pages, where it
    is a CPU tensor of at least 2 MiB and ``_core.huge_pages_enabled()``; else ``tensor``.

    For the values the kernels read straight from a module's parameter: a batch-1 product
    streams them from memory on every call, and torch allocates 4 KiB pages (unless
    ``THP_MEM_ALLOC_ENABLE`` is set), which streamed 10-15% slower here. The copy shares
    memory with a numpy array from the matrices' own allocator, kept alive by the tensor.
    """
    placed = empty_on_huge_pages(tensor.shape, tensor.dtype, tensor.device)
    if placed is None:
        return tensor
    return placed.copy_(tensor.detach())


def empty_on_huge_pages(shape: tuple, dtype: torch.dtype,
                        device: torch.device) -> torch.Tensor | None:
    """An uninitialised tensor on memory advised onto huge pages (see :func:`on_huge_pages`),
    or None where it would not be: not on the CPU, under 2 MiB, or huge pages turned off."""
    nbytes = math.prod(shape) * dtype.itemsize
    if device.type != "cpu" or nbytes < _HUGE_PAGE_BYTES or not _core.huge_pages_enabled():
        return None
    return torch.from_numpy(_core.large_buffer(nbytes)).view(dtype).view(shape)


def values_array(values: torch.Tensor) -> np.ndarray:
    """The stored values as the flat contiguous array the kernels take (a view when
    possible; bfloat16 values as their uint16 bit patterns, which numpy can hold)."""
    values = values.contiguous()
    if values.dtype == torch.bfloat16:
        return as_numpy(values.view(torch.int16)).view(np.uint16).reshape(-1)
    return as_numpy(values).reshape(-1)


class _PatternEntry:
    """The validated pattern of one (indptr, indices) pair, and its transpose once asked for."""

    def __init__(self, indptr: torch.Tensor, indices: torch.Tensor, matrix: Pattern,
                 on_free: Callable):
        self.versions = (tensor_version(indptr), tensor_version(indices))
        self.storages = (_storage_ref(indptr, on_free), _storage_ref(indices, on_free))
        self.matrix = matrix
        self._transpose: tuple[Pattern, np.ndarray] | None = None
        self._csr: CSRMatrix | None = None

    def holds(self, indptr: torch.Tensor, indices: torch.Tensor) -> bool:
        return (self.versions == (tensor_version(indptr), tensor_version(indices))
                and self.storages[0]() is indptr.untyped_storage()
                and self.storages[1]() is indices.untyped_storage())

    def freed(self) -> bool:
        return any(ref() is None for ref in self.storages)

    def csr(self) -> CSRMatrix:
        """The pattern as CSR (for a bitmap: the same entries in the same order)."""
        if isinstance(self.matrix, BitmapMatrix):
            if self._csr is None:
                bitmap = self.matrix
                self._csr = CSRMatrix.pattern(bitmap.offsets, bitmap.column_indices(),
                                              bitmap.shape, bitmap.dtype)
            return self._csr
        assert isinstance(self.matrix, CSRMatrix)
        return self.matrix

    def transpose(self) -> tuple[Pattern, np.ndarray]:
        """(transposed pattern, permutation): values of the transpose are ``values[perm]``
        (for BSR, each gathered block is also transposed; a bitmap's transpose is CSR)."""
        if self._transpose is None:
            source = self.csr() if isinstance(self.matrix, BitmapMatrix) else self.matrix
            self._transpose = source.transpose_with_permutation()
        return self._transpose


class PatternCache:
    """Maps (indptr, indices, shape, blocksize, dtype) tensors to validated kernel patterns.

    ``generation`` counts :meth:`clear` calls, so a module that keeps its own
    reference to an entry (see :class:`PatternMemo`) knows when to drop it.
    """

    def __init__(self) -> None:
        self._entries: dict[tuple, _PatternEntry] = {}
        self._lock = threading.Lock()
        self.generation = 0

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self.generation += 1

    def __len__(self) -> int:
        return len(self._entries)

    def entry(self, indptr: torch.Tensor, indices: torch.Tensor, shape: tuple[int, int],
              dtype: torch.dtype, blocksize: tuple[int, int] | None = None) -> _PatternEntry:
        """The pattern of a CSR (``blocksize`` None) or BSR weight, built on first use."""
        key = (indptr.data_ptr(), indices.data_ptr(), indices.numel(), shape, blocksize, dtype)
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None and entry.holds(indptr, indices):
                return entry
            np_indptr, np_indices = as_numpy(indptr), as_numpy(indices)
            if blocksize is None:
                matrix: Pattern = CSRMatrix.pattern(np_indptr, np_indices, shape,
                                                    _value_dtype(dtype))
            else:
                matrix = BSRMatrix.pattern(np_indptr, np_indices, shape, blocksize,
                                           _value_dtype(dtype))
            return self._add(key, indptr, indices, matrix)

    def bitmap_entry(self, bitmap: torch.Tensor, shape: tuple[int, int],
                     dtype: torch.dtype) -> _PatternEntry:
        """The pattern of a bitmap weight (``bitmap``: int64 words, (rows, ceil(cols / 64)))."""
        key = ("bitmap", bitmap.data_ptr(), bitmap.numel(), shape, dtype)
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None and entry.holds(bitmap, bitmap):
                return entry
            words = as_numpy(bitmap.contiguous()).view(np.uint64)
            return self._add(key, bitmap, bitmap,
                             BitmapMatrix.pattern(words, shape, _value_dtype(dtype)))

    def _add(self, key: tuple, indptr: torch.Tensor, indices: torch.Tensor,
             matrix: Pattern) -> _PatternEntry:
        """Caches ``matrix`` under ``key`` until either tensor's storage is freed (lock held)."""

        def on_free(_ref: weakref.ref, key: tuple = key) -> None:
            stale = self._entries.get(key)
            if stale is not None and stale.freed():
                self._entries.pop(key, None)

        entry = _PatternEntry(indptr, indices, matrix, on_free)
        self._entries[key] = entry
        return entry


patterns = PatternCache()


class EmptyWhenCopied:
    """A module's cache of derived operands: a copied or pickled module starts with an
    empty one (its contents, such as validated patterns, are rebuilt and not picklable)."""

    __slots__ = ()

    def __getstate__(self) -> dict:
        return {}

    def __setstate__(self, state: dict) -> None:
        type(self).__init__(self)

    def __deepcopy__(self, memo: dict) -> EmptyWhenCopied:
        return type(self)()


class KernelOperands(EmptyWhenCopied):
    """One module's shortcut to what its kernel reads, for the per-call inference path.

    Holds the validated pattern from :data:`patterns`, numpy views of the
    ``values`` and ``bias`` tensors and, for a CSR weight whose kernel runs in
    column chunks, the values in chunk order (a copy). They are reused while the
    module holds the very same tensor objects, ``indptr``/``indices``/``values``
    keep their ``_version`` counters, ``values``/``bias`` keep their memory
    (``data_ptr``) and :func:`clear_cache` has not run since; otherwise they are
    looked up or made again (a new pattern is validated once, in :data:`patterns`).
    In-place edits of the values through the tensor bump its counter, so they
    are seen on the next call.
    """

    __slots__ = ("_tensors", "_key", "operands")

    def __init__(self) -> None:
        # The tensors themselves (not their ids, which Python may reuse once freed).
        self._tensors: tuple = ()
        self._key: tuple = ()
        #: (pattern, values as the flat array the kernel takes, bias array or None,
        #: (chunk layout, values in chunk order) or None)
        self.operands: tuple = ()

    def get(self, indptr: torch.Tensor, indices: torch.Tensor, values: torch.Tensor,
            bias: torch.Tensor | None, shape: tuple[int, int],
            blocksize: tuple[int, int] | None = None, chunk_order: bool = True,
            bitmap: bool = False) -> tuple:
        """(pattern, values array, bias array or None, chunk-ordered values or None).

        ``chunk_order=False`` (a convolution's kernels read storage order) makes no
        chunk-ordered copy. With ``bitmap``, ``indptr`` and ``indices`` are both the
        bitmap's words (a bitmap weight has no other pattern tensor)."""
        # An inference tensor keeps no version counter: its values are read in CSR order.
        inference = values.is_inference()
        # A dtype or device change (module.double()) gives values new memory: a new data_ptr.
        key = (tensor_version(indptr), tensor_version(indices), tensor_version(values),
               values.data_ptr(), None if bias is None else bias.data_ptr(), patterns.generation)
        tensors = self._tensors
        if (not tensors or tensors[0] is not indptr or tensors[1] is not indices
                or tensors[2] is not values or tensors[3] is not bias or key != self._key):
            pattern = (patterns.bitmap_entry(indptr, shape, values.dtype) if bitmap else
                       patterns.entry(indptr, indices, shape, values.dtype, blocksize)).matrix
            bias_array = None if bias is None else as_numpy(bias.contiguous())
            array = values_array(values)
            chunk_ordered = None
            if blocksize is None and chunk_order and not inference and not bitmap:
                layout, ordered = pattern._handle.values_in_chunk_order(array)
                chunk_ordered = None if ordered is None else (layout, ordered)
            self.operands = (pattern, array, bias_array, chunk_ordered)
            self._tensors, self._key = (indptr, indices, values, bias), key
        return self.operands


def clear_cache() -> None:
    """Forget every cached pattern (they are rebuilt on the next call).

    Values are always read live, so this is needed only after editing a sparse
    module's ``indptr``/``indices`` through ``.data``, which bypasses the
    version counter the cache relies on.
    """
    patterns.clear()
    for cache in other_caches:
        cache.clear()


#: Caches of other weight kinds (their modules register them) that clear_cache empties too.
other_caches: list = []
