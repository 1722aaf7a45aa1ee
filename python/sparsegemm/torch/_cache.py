"""Kernel handles for sparse weights held as torch tensors.

A sparse weight lives in a module as tensors (``indptr``, ``indices`` and the
``values`` parameter) so that ``state_dict``, ``torch.export`` and optimizers
see ordinary tensors. The kernels need a validated :class:`CSRMatrix`; building
one copies and checks every index, so it is built once per pattern and kept
here until the pattern's tensors are freed.

A cached handle is reused while the tensors are the same storages with the same
``_version`` counters: in-place edits (optimizer steps, ``load_state_dict``,
``with torch.no_grad(): values.mul_(...)``) bump the counter and the values are
re-copied into the handle (``with_data``, sharing the validated pattern) on the
next call. Edits through ``tensor.data`` bypass the version counter and are not
seen; call :func:`clear_cache` after such an edit.
"""

from __future__ import annotations

import threading
import weakref
from typing import Callable

import numpy as np
import torch

from ..formats import CSRMatrix

_NUMPY_DTYPES = {torch.float32: np.float32, torch.float64: np.float64}


def _storage_ref(tensor: torch.Tensor, callback: Callable | None = None) -> weakref.ref:
    # Storage Python objects are preserved while alive and shared by aliases
    # (views, .detach()), so a weak reference identifies the memory itself.
    return weakref.ref(tensor.untyped_storage(), callback)


def _same_storage(ref: weakref.ref, tensor: torch.Tensor) -> bool:
    return ref() is tensor.untyped_storage()


def as_numpy(tensor: torch.Tensor) -> np.ndarray:
    """A numpy view of a CPU tensor's memory (no copy)."""
    return tensor.detach().numpy()


class _ValuesSlot:
    """One matrix built from one state (storage, version, dtype) of a values tensor."""

    __slots__ = ("key", "matrix", "storage")

    def __init__(self, values: torch.Tensor, matrix: CSRMatrix):
        self.key = (values.data_ptr(), values._version, values.dtype)
        self.storage = _storage_ref(values)
        self.matrix = matrix

    def holds(self, values: torch.Tensor) -> bool:
        return (self.key == (values.data_ptr(), values._version, values.dtype)
                and _same_storage(self.storage, values))


class _PatternEntry:
    """The validated pattern of one (indptr, indices) pair and its value slots."""

    def __init__(self, indptr: torch.Tensor, indices: torch.Tensor, matrix: CSRMatrix,
                 on_free: Callable):
        self.versions = (indptr._version, indices._version)
        self.storages = (_storage_ref(indptr, on_free), _storage_ref(indices, on_free))
        self.pattern = matrix
        self.transpose: tuple[CSRMatrix, np.ndarray] | None = None
        self.forward: _ValuesSlot | None = None
        self.transposed: _ValuesSlot | None = None

    def holds(self, indptr: torch.Tensor, indices: torch.Tensor) -> bool:
        return (self.versions == (indptr._version, indices._version)
                and _same_storage(self.storages[0], indptr)
                and _same_storage(self.storages[1], indices))

    def freed(self) -> bool:
        return any(ref() is None for ref in self.storages)


class CsrHandleCache:
    """Maps CSR tensors (indptr, indices, values) to kernel handles."""

    def __init__(self) -> None:
        self._entries: dict[tuple, _PatternEntry] = {}
        self._lock = threading.Lock()

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)

    def _entry(self, indptr: torch.Tensor, indices: torch.Tensor, shape: tuple[int, int],
               values: torch.Tensor | None, dtype: torch.dtype) -> _PatternEntry:
        key = (indptr.data_ptr(), indices.data_ptr(), indices.numel(), shape)
        entry = self._entries.get(key)
        if entry is not None and entry.holds(indptr, indices):
            return entry
        if values is None:
            data = np.zeros(indices.numel(), dtype=_NUMPY_DTYPES[dtype])
        else:
            data = as_numpy(values.contiguous())
        matrix = CSRMatrix((data, as_numpy(indices), as_numpy(indptr)), shape=shape)

        def on_free(_ref: weakref.ref, key: tuple = key) -> None:
            stale = self._entries.get(key)
            if stale is not None and stale.freed():
                self._entries.pop(key, None)

        entry = _PatternEntry(indptr, indices, matrix, on_free)
        if values is not None:
            entry.forward = _ValuesSlot(values, matrix)
        self._entries[key] = entry
        return entry

    def matrix(self, indptr: torch.Tensor, indices: torch.Tensor, values: torch.Tensor,
               shape: tuple[int, int]) -> CSRMatrix:
        """The (rows x cols) CSR matrix with these tensors' current contents."""
        with self._lock:
            entry = self._entry(indptr, indices, shape, values, values.dtype)
            if entry.forward is None or not entry.forward.holds(values):
                data = as_numpy(values.contiguous())
                matrix = entry.pattern.astype(data.dtype).with_data(data)
                entry.forward = _ValuesSlot(values, matrix)
            return entry.forward.matrix

    def pattern(self, indptr: torch.Tensor, indices: torch.Tensor, shape: tuple[int, int],
                dtype: torch.dtype) -> CSRMatrix:
        """A ``dtype`` matrix with this pattern, for kernels that ignore the values."""
        with self._lock:
            return self._entry(indptr, indices, shape, None, dtype).pattern.astype(
                _NUMPY_DTYPES[dtype])

    def transposed(self, indptr: torch.Tensor, indices: torch.Tensor, values: torch.Tensor,
                   shape: tuple[int, int]) -> CSRMatrix:
        """The transpose (cols x rows) of :meth:`matrix`, values gathered as values[perm]."""
        with self._lock:
            entry = self._entry(indptr, indices, shape, values, values.dtype)
            if entry.transpose is None:
                entry.transpose = entry.pattern.transpose_with_permutation()
            if entry.transposed is None or not entry.transposed.holds(values):
                pattern_t, permutation = entry.transpose
                data = as_numpy(values.contiguous())
                matrix = pattern_t.astype(data.dtype).with_data(data[permutation])
                entry.transposed = _ValuesSlot(values, matrix)
            return entry.transposed.matrix


csr_handles = CsrHandleCache()


def clear_cache() -> None:
    """Forget every cached kernel handle (they are rebuilt on the next call).

    Needed only after editing a sparse module's tensors through ``.data``,
    which bypasses the version counter the cache relies on.
    """
    csr_handles.clear()
