#include "ops/csr_ops.h"

#include <algorithm>
#include <climits>
#include <cstdint>

#include "core/isa.h"
#include "core/parallel.h"
#include "kernels/csr/csr_kernels.h"
#include "kernels/transpose/transpose.h"
#include "ops/buffer.h"

namespace sparsegemm {

namespace {

// Runs kernel(row_begin, row_end) over row ranges balanced by stored entries.
template <typename T, typename Kernel>
void for_row_ranges(const CsrMatrix<T>& a, int threads, int64_t row_cost, const Kernel& kernel) {
  const std::vector<int64_t> bounds = split_rows_by_cost(a.indptr().data(), a.rows(), threads, row_cost);
  const int64_t parts = static_cast<int64_t>(bounds.size()) - 1;
  parallel_for(threads, parts, [&](int64_t p) { kernel(bounds[p], bounds[p + 1]); });
}

bool gather_offsets_fit(int64_t cols, int64_t kstride) {
  return cols <= 1 || (cols - 1) <= INT32_MAX / std::max<int64_t>(kstride, 1);
}

// The matrix's structure with its own values, or with `values` when not null.
template <typename T>
CsrView<T> view_with_values(const CsrMatrix<T>& a, const T* values) {
  CsrView<T> view = a.view();
  if (values != nullptr) view.values = values;
  return view;
}

// The gather kernel over all rows: y(v, r) = bias[r] + a[r, :] . x(v, :).
template <typename T>
void gather_product(const CsrMatrix<T>& a, const T* values, const T* x, int64_t x_vstride,
                    int64_t x_kstride, int64_t nvec, const T* bias, T* y, int64_t y_vstride,
                    int64_t y_rstride, int num_threads) {
  const CsrView<T> view = view_with_values(a, values);
  const CsrKernels<T>& kernels = csr_kernels<T>(active_isa());
  const int threads = threads_for_work(num_threads, (a.nnz() + a.rows()) * nvec);
  for_row_ranges(a, threads, 4, [&](int64_t r0, int64_t r1) {
    kernels.gather_rows(view, r0, r1, x, x_vstride, x_kstride, nvec, bias, y, y_vstride, y_rstride);
  });
}

// The panel kernel over all rows: c = a @ b (+ bias), b with contiguous columns.
template <typename T>
void panel_product(const CsrMatrix<T>& a, const T* values, const T* b, int64_t ldb, int64_t n,
                   const T* bias, T* c, int64_t ldc, int num_threads) {
  const CsrView<T> view = view_with_values(a, values);
  const CsrKernels<T>& kernels = csr_kernels<T>(active_isa());
  const int threads = threads_for_work(num_threads, (a.nnz() + a.rows()) * n);
  for_row_ranges(a, threads, 2, [&](int64_t r0, int64_t r1) {
    kernels.spmm_rows(view, r0, r1, b, ldb, n, bias, c, ldc);
  });
}

// Row stride for a packed copy of a dense operand with n columns: rounded up
// to whole cache lines, so every row starts on a line and no vector load of
// the panel kernel straddles two lines.
template <typename T>
int64_t padded_stride(int64_t n) {
  constexpr int64_t kLine = 64 / sizeof(T);
  return (n + kLine - 1) / kLine * kLine;
}

template <typename T>
bool cache_line_aligned(const T* p, int64_t ld) {
  return reinterpret_cast<uintptr_t>(p) % 64 == 0 && (ld * static_cast<int64_t>(sizeof(T))) % 64 == 0;
}

}  // namespace

template <typename T>
void csr_matmul(const CsrMatrix<T>& a, const T* b, int64_t b_rstride, int64_t b_cstride, int64_t n,
                const T* bias, T* c, int64_t ldc, int num_threads, const T* values) {
  const int64_t rows = a.rows(), k = a.cols();
  if (rows == 0 || n == 0) return;
  if (n <= kGatherMaxVectors) {
    // Vector v of the gather is column v of b; output (v, r) is c[r, v].
    if (gather_offsets_fit(k, b_rstride)) {
      gather_product(a, values, b, b_cstride, b_rstride, n, bias, c, 1, ldc, num_threads);
    } else {
      ScratchBuffer<T> bt(static_cast<size_t>(k * n));  // b transposed: n x k
      transpose(b, k, n, b_rstride, b_cstride, bt.data(), k, num_threads);
      gather_product(a, values, bt.data(), k, 1, n, bias, c, 1, ldc, num_threads);
    }
    return;
  }
  // Packing b costs k * n copies against nnz * n multiply-adds: worth it for
  // aligned loads once each row of b is reused a few times, and needed when its
  // columns are not contiguous (e.g. Fortran order).
  const bool reused = a.nnz() >= 4 * k;
  if (b_cstride == 1 && (!reused || cache_line_aligned(b, b_rstride))) {
    panel_product(a, values, b, b_rstride, n, bias, c, ldc, num_threads);
    return;
  }
  const int64_t ldp = padded_stride<T>(n);
  ScratchBuffer<T> packed(static_cast<size_t>(k * ldp));
  // packed(k, j) = b(k, j): the transpose of the n x k matrix b^T.
  transpose(b, n, k, b_cstride, b_rstride, packed.data(), ldp, num_threads);
  panel_product(a, values, packed.data(), ldp, n, bias, c, ldc, num_threads);
}

template <typename T>
void csr_linear(const CsrMatrix<T>& w, const T* x, int64_t ldx, int64_t batch, const T* bias, T* y,
                int64_t ldy, int num_threads, const T* values) {
  const int64_t out = w.rows(), in = w.cols();
  if (batch == 0 || out == 0) return;
  if (batch <= kGatherMaxVectors) {
    // Rows of x are the vectors; y(v, r) = y[v, r].
    gather_product(w, values, x, ldx, 1, batch, bias, y, ldy, 1, num_threads);
    return;
  }
  // y^T = w @ x^T: the panel kernel wants the batch dimension contiguous.
  const int64_t ldp = padded_stride<T>(batch);
  ScratchBuffer<T> xt(static_cast<size_t>(in * ldp));
  ScratchBuffer<T> yt(static_cast<size_t>(out * ldp));
  transpose(x, batch, in, ldx, 1, xt.data(), ldp, num_threads);
  panel_product(w, values, xt.data(), ldp, batch, bias, yt.data(), ldp, num_threads);
  transpose(yt.data(), out, batch, ldp, 1, y, ldy, num_threads);
}

template <typename T>
void csr_sampled_dot(const CsrMatrix<T>& pattern, const T* a, int64_t lda, const T* b, int64_t ldb,
                     int64_t n, T* out, int num_threads) {
  const CsrView<T> view = pattern.view();
  const CsrKernels<T>& kernels = csr_kernels<T>(active_isa());
  const int threads = threads_for_work(num_threads, (pattern.nnz() + pattern.rows()) * n);
  for_row_ranges(pattern, threads, 1, [&](int64_t r0, int64_t r1) {
    kernels.sampled_dot_rows(view, r0, r1, a, lda, b, ldb, n, out);
  });
}

#define SPARSEGEMM_INSTANTIATE_CSR_OPS(T)                                                          \
  template void csr_matmul<T>(const CsrMatrix<T>&, const T*, int64_t, int64_t, int64_t, const T*, \
                              T*, int64_t, int, const T*);                                         \
  template void csr_linear<T>(const CsrMatrix<T>&, const T*, int64_t, int64_t, const T*, T*,      \
                              int64_t, int, const T*);                                                   \
  template void csr_sampled_dot<T>(const CsrMatrix<T>&, const T*, int64_t, const T*, int64_t,     \
                                   int64_t, T*, int);
SPARSEGEMM_INSTANTIATE_CSR_OPS(float)
SPARSEGEMM_INSTANTIATE_CSR_OPS(double)
#undef SPARSEGEMM_INSTANTIATE_CSR_OPS

}  // namespace sparsegemm
