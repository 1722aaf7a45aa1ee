#include "ops/csr_ops.h"

#include <algorithm>
#include <climits>

#include "core/isa.h"
#include "kernels/csr/csr_kernels.h"
#include "ops/product_driver.h"

namespace sparsegemm {

namespace {

// CSR plugged into the shared drivers (ops/product_driver.h).
template <typename T>
struct CsrProduct {
  const CsrMatrix<T>& a;

  int64_t rows() const { return a.rows(); }
  int64_t cols() const { return a.cols(); }
  static constexpr bool kTransposedPanel = false;
  int64_t max_few_vectors() const { return kGatherMaxVectors; }
  // The gather kernel's offsets (k * kstride) are 32-bit.
  bool few_vector_strides_ok(int64_t kstride) const {
    return a.cols() <= 1 || (a.cols() - 1) <= INT32_MAX / std::max<int64_t>(kstride, 1);
  }

  // The gather kernel over all rows: y(v, r) = bias[r] + a[r, :] . x(v, :).
  void few_vectors(const T* x, int64_t x_vstride, int64_t x_kstride, int64_t nvec, const T* bias,
                   T* y, int64_t y_vstride, int64_t y_rstride, int num_threads) const {
    const CsrView<T> view = a.view();
    const CsrKernels<T>& kernels = csr_kernels<T>(active_isa());
    const int threads = driver::threads_for(num_threads, (a.nnz() + a.rows()) * nvec);
    driver::for_row_ranges(a.indptr().data(), a.rows(), threads, 4, [&](int64_t r0, int64_t r1) {
      kernels.gather_rows(view, r0, r1, x, x_vstride, x_kstride, nvec, bias, y, y_vstride, y_rstride);
    });
  }

  // The panel kernel over all rows: c = a @ b (+ bias), b with contiguous columns.
  void panel(const T* b, int64_t ldb, int64_t n, const T* bias, T* c, int64_t ldc,
             int num_threads) const {
    const CsrView<T> view = a.view();
    const CsrKernels<T>& kernels = csr_kernels<T>(active_isa());
    const int threads = driver::threads_for(num_threads, (a.nnz() + a.rows()) * n);
    driver::for_row_ranges(a.indptr().data(), a.rows(), threads, 2, [&](int64_t r0, int64_t r1) {
      kernels.spmm_rows(view, r0, r1, b, ldb, n, bias, c, ldc);
    });
  }
};

}  // namespace

template <typename T>
void csr_matmul(const CsrMatrix<T>& a, const T* b, int64_t b_rstride, int64_t b_cstride, int64_t n,
                const T* bias, T* c, int64_t ldc, int num_threads) {
  driver::matmul(CsrProduct<T>{a}, b, b_rstride, b_cstride, n, bias, c, ldc, num_threads);
}

template <typename T>
void csr_linear(const CsrMatrix<T>& w, const T* x, int64_t ldx, int64_t batch, const T* bias, T* y,
                int64_t ldy, int num_threads) {
  driver::linear(CsrProduct<T>{w}, x, ldx, batch, bias, y, ldy, num_threads);
}

#define SPARSEGEMM_INSTANTIATE_CSR_OPS(T)                                                          \
  template void csr_matmul<T>(const CsrMatrix<T>&, const T*, int64_t, int64_t, int64_t, const T*, \
                              T*, int64_t, int);                                                   \
  template void csr_linear<T>(const CsrMatrix<T>&, const T*, int64_t, int64_t, const T*, T*,      \
                              int64_t, int);
SPARSEGEMM_INSTANTIATE_CSR_OPS(float)
SPARSEGEMM_INSTANTIATE_CSR_OPS(double)
#undef SPARSEGEMM_INSTANTIATE_CSR_OPS

}  // namespace sparsegemm
