// CSR x dense kernels: the per-ISA function table and how to get it.
//
// Each ISA's kernels live in their own file (csr_scalar.cpp, csr_avx2.cpp,
// csr_avx512.cpp), compiled with that ISA's flags, and written once in
// csr_kernels.inl against the Vec<T> traits of kernels/simd/. The functions
// are single-threaded and never allocate: the drivers in drivers/ split rows
// across threads and own all buffers.
#pragma once

#include <cstdint>
#include <type_traits>
#include <utility>

#include "core/bfloat16.h"
#include "core/csr_matrix.h"
#include "core/isa.h"

namespace sparsegemm {

// Up to this many dense vectors use the few-vector (gather or scalar-load)
// kernels; the drivers use the panel kernel for more. Those kernels load one
// element per stored entry and vector, so even two vectors run faster as a
// (masked) panel.
constexpr int64_t kGatherMaxVectors = 1;

// W is the stored value type (float, double or bfloat16_t); the dense
// operands, bias and results have its compute type T = compute_t<W> (float
// for bfloat16 values, which the kernels widen as they load them).
template <typename W>
struct CsrKernels {
  using T = compute_t<W>;
  // Column chunks for spmm_rows_packed: where layout.columns > 0, callers
  // pass it a view with chunk bounds of that width (CsrMatrix::
  // column_chunk_bounds), best in that chunk order (CsrMatrix::
  // chunk_ordered_view). spmm_rows ignores chunk bounds.
  ChunkLayout (*chunk_layout)(int64_t rows, int64_t cols, int64_t nnz);

  // Panel product, for dense operands with many columns:
  //   c[r, 0:n] = bias[r] + sum_j a[r, j] * b[j, 0:n]   for r in [row_begin, row_end)
  // b is a.cols x n with row stride ldb (columns contiguous); c has row stride ldc.
  // bias may be null (treated as zero).
  void (*spmm_rows)(const CsrView<W>& a, int64_t row_begin, int64_t row_end, const T* b,
                    int64_t ldb, int64_t n, const T* bias, T* c, int64_t ldc);

  // The panel product over one packed panel of b, as the drivers pack x^T or
  // im2col(x): P = packed_panel_columns(a.rows, a.cols, a.nnz, n) columns as a contiguous
  // a.cols x P block with row stride panel_ld >= P (element (k, j) at
  // packed[k * panel_ld + j]). A contiguous panel touches a few pages where a
  // strided b touches one page per row of b, which made the strided kernel
  // TLB-bound: 1.1-1.6x slower on Zen 3 at 384-3072 columns of a.
  //   c[r, 0:P] = bias[r] + sum_j a[r, j] * b[j, 0:P]
  // P is the widest panel (1, 2 or 4 vectors) whose slice of b fits the
  // kernel's cache budget (larger for denser matrices, which run in column
  // chunks), narrowed to the fewest vectors that hold n columns where b has
  // only n (n <= 0: no limit): the kernel's cost grows with P, not with the
  // columns that are real. spmm_rows_packed takes that P as panel_columns.
  int64_t (*packed_panel_columns)(int64_t rows, int64_t cols, int64_t nnz, int64_t n);
  void (*spmm_rows_packed)(const CsrView<W>& a, int64_t row_begin, int64_t row_end, const T* packed,
                           int64_t panel_ld, int64_t panel_columns, const T* bias, T* c,
                           int64_t ldc);

  // Gather product, for a single dense vector (batch 1; nvec > 1 loops over vectors):
  //   y(v, r) = bias[r] + sum_j a[r, j] * x(v, j)   for v < nvec, r in [row_begin, row_end)
  // with x(v, k) = x[v * x_vstride + k * x_kstride] and y(v, r) = y[v * y_vstride + r * y_rstride].
  // Requires (a.cols - 1) * x_kstride < 2^31 (the gather offsets are 32-bit).
  void (*gather_rows)(const CsrView<W>& a, int64_t row_begin, int64_t row_end, const T* x,
                      int64_t x_vstride, int64_t x_kstride, int64_t nvec, const T* bias, T* y,
                      int64_t y_vstride, int64_t y_rstride);
  // The same product with scalar loads of x instead of vector gathers (see
  // prefer_hardware_gather() in core/isa.h for which one the drivers use).
  void (*scalar_gather_rows)(const CsrView<W>& a, int64_t row_begin, int64_t row_end, const T* x,
                             int64_t x_vstride, int64_t x_kstride, int64_t nvec, const T* bias,
                             T* y, int64_t y_vstride, int64_t y_rstride);

  // Sampled dense-dense product at the stored positions (SDDMM):
  //   out[j] = sum_t a[r, t] * b[k, t]   for each stored (r, k) at position j, r in [row_begin,
  //   row_end)
  // a is a.rows x n and b is a.cols x n, each with contiguous rows (strides lda, ldb).
  // a's values are not read; this computes e.g. the gradient of a sparse weight.
  void (*sampled_dot_rows)(const CsrView<W>& pattern, int64_t row_begin, int64_t row_end,
                           const T* a, int64_t lda, const T* b, int64_t ldb, int64_t n, T* out);
};

// The kernels for one ISA. The caller must check isa_supported(isa).
template <typename W>
const CsrKernels<W>& csr_kernels(Isa isa);

namespace scalar {
template <typename W>
const CsrKernels<W>& csr_kernel_table();
}
namespace avx2 {
template <typename W>
const CsrKernels<W>& csr_kernel_table();
}
namespace avx512 {
template <typename W>
const CsrKernels<W>& csr_kernel_table();
}

}  // namespace sparsegemm
