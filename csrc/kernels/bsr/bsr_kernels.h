// Block-sparse (BSR) x dense kernels: the per-ISA function table and how to get it.
//
// Each ISA's kernels live in their own file (bsr_scalar.cpp, bsr_avx2.cpp,
// bsr_avx512.cpp), compiled with that ISA's flags and written once in
// bsr_kernels.inl against the Vec<T> traits of kernels/simd/. The block shapes
// listed in bsr_block_shapes.inc have register-tiled kernels specialised at
// compile time; any other R x C runs a generic (slower, still vectorised)
// kernel. The functions are single-threaded and never allocate: the drivers in
// drivers/ split block rows across threads and own all buffers.
#pragma once

#include <cstdint>
#include <type_traits>

#include "core/bfloat16.h"
#include "core/bsr_matrix.h"
#include "core/isa.h"

namespace sparsegemm {

// W is the stored value type (float, double or bfloat16_t); the dense
// operands, bias and results have its compute type T = compute_t<W>.
template <typename W>
struct BsrKernels {
  using T = compute_t<W>;
  // Panel product, for dense operands with many columns:
  //   c[r, 0:n] = bias[r] + sum_k a[r, k] * b[k, 0:n]
  // for the logical rows r of block rows [block_row_begin, block_row_end).
  // b is a.cols x n with row stride ldb (columns contiguous); c has row stride
  // ldc. bias may be null (treated as zero). Rows and columns of the padding
  // are neither read from b nor written to c.
  void (*spmm_block_rows)(const BsrView<W>& a, int64_t block_row_begin, int64_t block_row_end,
                          const T* b, int64_t ldb, int64_t n, const T* bias, T* c, int64_t ldc);

  // The same product with c stored transposed: c(r, j) at ct[j * ldct + r]
  // (ct is n x a.rows). This is nn.Linear's y = x @ a.T for b = x.T, written
  // straight into y rather than through a transposed copy.
  void (*spmm_block_rows_transposed)(const BsrView<W>& a, int64_t block_row_begin,
                                     int64_t block_row_end, const T* b, int64_t ldb, int64_t n,
                                     const T* bias, T* ct, int64_t ldct);

  // Few-vector product (batch 1 to a handful), streaming the blocks once:
  //   y(v, r) = bias[r] + sum_k a[r, k] * x(v, k)   for v < nvec
  // with x(v, k) = x[v * x_vstride + k * x_kstride] and
  // y(v, r) = y[v * y_vstride + r * y_rstride]. No gathers: each block's
  // output rows are accumulated together against broadcast x(v, k).
  void (*gemv_block_rows)(const BsrView<W>& a, int64_t block_row_begin, int64_t block_row_end,
                          const T* x, int64_t x_vstride, int64_t x_kstride, int64_t nvec,
                          const T* bias, T* y, int64_t y_vstride, int64_t y_rstride);
};

// The kernels for one ISA. The caller must check isa_supported(isa).
template <typename W>
const BsrKernels<W>& bsr_kernels(Isa isa);

namespace scalar {
template <typename W>
const BsrKernels<W>& bsr_kernel_table();
}
namespace avx2 {
template <typename W>
const BsrKernels<W>& bsr_kernel_table();
}
namespace avx512 {
template <typename W>
const BsrKernels<W>& bsr_kernel_table();
}

}  // namespace sparsegemm
