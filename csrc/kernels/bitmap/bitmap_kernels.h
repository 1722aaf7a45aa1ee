// Bitmap x dense kernels: the per-ISA function table and how to get it.
//
// Each ISA's kernels live in their own file (bitmap_scalar.cpp,
// bitmap_avx2.cpp, bitmap_avx512.cpp), compiled with that ISA's flags, and
// are written once in bitmap_kernels.inl against the Vec<T> traits of
// kernels/simd/ plus BitExpand<T> (bitmap_expand_<isa>.h), which turns a few
// bits of the bitmap and the packed values behind them into one vector. The
// functions are single-threaded and never allocate: the drivers in drivers/ split
// rows across threads.
//
// V is the stored value type and T = compute_t<V> the type of x, bias, y and
// every sum: float/float, double/double, or bfloat16_t values computed in
// float (BitExpand<bfloat16_t> widens them as it expands). The AVX-512
// level's bfloat16 kernels need VBMI2's word expand (bitmap_avx512ext.cpp);
// without it, bitmap_kernels() hands out AVX2's there.
#pragma once

#include <cstdint>

#include "core/bitmap_matrix.h"
#include "core/isa.h"

namespace sparsegemm {

template <typename V>
struct BitmapKernels {
  using T = compute_t<V>;
  // y(v, r) = bias[r] + sum_k a[r, k] * x(v, k)   for v < nvec, r in [row_begin, row_end)
  // with x(v, k) = x[v * x_vstride + k] (k contiguous, a.cols entries per vector)
  // and y(v, r) = y[v * y_vstride + r * y_rstride]. bias may be null.
  //
  // gemv_rows streams the bitmap once per vector and multiplies stored
  // entries only (as CSR does: x's Inf/NaN at an unstored column never reach y).
  // Several rows are walked together so their value loads overlap.
  void (*gemv_rows)(const BitmapView<V>& a, int64_t row_begin, int64_t row_end, const T* x,
                    int64_t x_vstride, int64_t nvec, const T* bias, T* y, int64_t y_vstride,
                    int64_t y_rstride);
  // The same product for several vectors: a tile of rows x 256 columns is
  // expanded once (zeros where bits are clear) and multiplied with up to 16
  // vectors from registers. Requires every x(v, k) to be finite, since the
  // expanded zeros are multiplied (0 * Inf would give NaN where gemv_rows
  // gives a number); the drivers check.
  void (*small_batch_rows)(const BitmapView<V>& a, int64_t row_begin, int64_t row_end, const T* x,
                           int64_t x_vstride, int64_t nvec, const T* bias, T* y, int64_t y_vstride,
                           int64_t y_rstride);
  // bfloat16 values only, and only where the CPU has AVX512-BF16 (null
  // elsewhere): gemv_rows for x given in bfloat16, every vector per row
  // (bitmap_avx512bf16.cpp). x(v, k) must be finite and x holds
  // words_per_row * 64 entries per vector, zero past a.cols.
  void (*gemv_rows_bf16_input)(const BitmapView<V>& a, int64_t row_begin, int64_t row_end,
                               const bfloat16_t* x, int64_t x_vstride, int64_t nvec, const T* bias,
                               T* y, int64_t y_vstride, int64_t y_rstride) = nullptr;
  // float values at the AVX-512 level and bfloat16 ones there with VBMI2
  // (null elsewhere): gemv_rows by the stored columns of plan (a's window
  // plan) instead of by the bits, for very sparse rows
  // (bitmap_windows_avx512.h). The same contract as gemv_rows; only the order
  // of the additions differs.
  void (*gemv_rows_indexed)(const ColumnWindowPlan& plan, const BitmapView<V>& a, int64_t row_begin,
                            int64_t row_end, const T* x, int64_t x_vstride, int64_t nvec,
                            const T* bias, T* y, int64_t y_vstride, int64_t y_rstride) = nullptr;
};

// The kernels for one ISA. The caller must check isa_supported(isa).
template <typename V>
const BitmapKernels<V>& bitmap_kernels(Isa isa);

namespace scalar {
template <typename V>
const BitmapKernels<V>& bitmap_kernel_table();
}
namespace avx2 {
template <typename V>
const BitmapKernels<V>& bitmap_kernel_table();
}
namespace avx512 {
template <typename V>
const BitmapKernels<V>& bitmap_kernel_table();
void gemv_rows_indexed(const ColumnWindowPlan& plan, const BitmapView<float>& a, int64_t row_begin,
                       int64_t row_end, const float* x, int64_t x_vstride, int64_t nvec,
                       const float* bias, float* y, int64_t y_vstride, int64_t y_rstride);
}  // namespace avx512
namespace avx512ext {
template <typename V>
const BitmapKernels<V>& bitmap_kernel_table();
void gemv_rows_indexed(const ColumnWindowPlan& plan, const BitmapView<bfloat16_t>& a,
                       int64_t row_begin, int64_t row_end, const float* x, int64_t x_vstride,
                       int64_t nvec, const float* bias, float* y, int64_t y_vstride,
                       int64_t y_rstride);
}  // namespace avx512ext
namespace avx512bf16 {
void gemv_rows_bf16_input(const BitmapView<bfloat16_t>& a, int64_t row_begin, int64_t row_end,
                          const bfloat16_t* x, int64_t x_vstride, int64_t nvec, const float* bias,
                          float* y, int64_t y_vstride, int64_t y_rstride);
}

}  // namespace sparsegemm
