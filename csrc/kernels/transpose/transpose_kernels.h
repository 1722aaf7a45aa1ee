// Transpose tiles: the per-ISA function table and how to get it.
//
// drivers/transpose_driver.cpp blocks a transpose for the caches and threads and
// calls tile() on each block. AVX2 transposes 8x8 (float) or 4x4 (double)
// blocks in registers, AVX-512 16x16 or 8x8; a scalar loop copied one element
// per cycle and took about 12% of a batch-128 CSR linear call (x^T in, y^T out).
#pragma once

#include <cstdint>

#include "core/isa.h"

namespace sparsegemm {

template <typename T>
struct TransposeKernels {
  // dst[j * dst_ld + i] = src[i * src_ld + j] for i < rows, j < cols.
  void (*tile)(const T* src, int64_t rows, int64_t cols, int64_t src_ld, T* dst, int64_t dst_ld);
  // Rows (and columns) of the widest register block: tiles of this many rows
  // run on whole blocks.
  int64_t block_size;
};

// The kernels for one ISA. The caller must check isa_supported(isa).
template <typename T>
const TransposeKernels<T>& transpose_kernels(Isa isa);

namespace scalar {
template <typename T>
const TransposeKernels<T>& transpose_kernel_table();
}
namespace avx2 {
template <typename T>
const TransposeKernels<T>& transpose_kernel_table();
}
namespace avx512 {
template <typename T>
const TransposeKernels<T>& transpose_kernel_table();
}

}  // namespace sparsegemm
