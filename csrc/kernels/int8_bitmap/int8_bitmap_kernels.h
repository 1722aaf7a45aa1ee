// Int8 bitmap x int8 vectors: exact int32 products, the per-ISA function
// table and how to get it (semantics in core/int8_bitmap_matrix.h).
//
// Each ISA's kernels live in their own file (int8_bitmap_scalar.cpp,
// int8_bitmap_avx2.cpp, int8_bitmap_avx512.cpp), compiled with that ISA's
// flags, and are written once in int8_bitmap_kernels.inl against
// Int8Expand (int8_expand_<isa>.h), which turns 16 bits of the bitmap and the
// packed int8 values behind them into 16 int16 lanes. The avx512 file reuses
// the AVX2 expander: there is no AVX-512 (VNNI) code yet, because it could
// not be run and tested where this family was written. The functions are
// single-threaded and never allocate: drivers/int8_bitmap_driver.cpp splits
// rows across threads and owns the scratch buffers.
#pragma once

#include <cstdint>

#include "core/bitmap_matrix.h"
#include "core/isa.h"

namespace sparsegemm {

// Columns the vector kernels read at a time from each vector: the drivers pad
// every vector to a multiple of this (with zeros) so no kernel needs a tail.
constexpr int64_t kInt8VectorPadding = 64;

struct Int8BitmapKernels {
  // acc(v, r) = sum over stored k of q[r, k] * x(v, k)   for v < nvec, r in [row_begin, row_end)
  // with x(v, k) = x[v * x_vstride + k], int8 values held as int16, for k below
  // a.cols rounded up to kInt8VectorPadding (zeros past a.cols), and
  // acc(v, r) = acc[v * acc_vstride + r]. Exact: the caller keeps a.cols <= kMaxInt8Cols.
  //
  // gemv_rows streams the bitmap once per vector, walking several rows
  // together so their value loads overlap; small_batch_rows expands a tile of
  // rows x 256 columns to int16 once and multiplies it with up to 16 vectors.
  // Both give the same integers; the drivers run gemv_rows for one vector.
  void (*gemv_rows)(const BitmapView<int8_t>& a, int64_t row_begin, int64_t row_end,
                    const int16_t* x, int64_t x_vstride, int64_t nvec, int32_t* acc,
                    int64_t acc_vstride);
  void (*small_batch_rows)(const BitmapView<int8_t>& a, int64_t row_begin, int64_t row_end,
                           const int16_t* x, int64_t x_vstride, int64_t nvec, int32_t* acc,
                           int64_t acc_vstride);
};

// The kernels for one ISA. The caller must check isa_supported(isa).
const Int8BitmapKernels& int8_bitmap_kernels(Isa isa);

namespace scalar {
const Int8BitmapKernels& int8_bitmap_kernel_table();
}
namespace avx2 {
const Int8BitmapKernels& int8_bitmap_kernel_table();
}
namespace avx512 {
const Int8BitmapKernels& int8_bitmap_kernel_table();
}

}  // namespace sparsegemm
