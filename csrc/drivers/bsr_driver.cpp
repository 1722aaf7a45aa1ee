#include "drivers/bsr_driver.h"

#include "core/isa.h"
#include "kernels/bsr/bsr_kernels.h"
#include "drivers/product_driver.h"

namespace sparsegemm {

namespace {

// BSR plugged into the shared drivers (drivers/product_driver.h). Threads get
// ranges of block rows balanced by stored blocks. V is the stored value type,
// T the dense operands' (compute_t<V>).
template <typename V>
struct BsrProduct {
  using T = compute_t<V>;
  const BsrMatrix<V>& a;
  const V* values = nullptr;  // what the kernels read: the caller's or a's own (values_or_stored)

  BsrView<V> view() const {
    BsrView<V> v = a.view();
    v.values = values;
    return v;
  }

  int64_t rows() const { return a.rows(); }
  int64_t cols() const { return a.cols(); }
  static constexpr bool kConflictFreeStride = false;
  static constexpr bool kTransposedPanel = true;
  static constexpr bool kPackedPanel = false;
  int64_t max_few_vectors() const { return kBsrFewVectorsMax; }
  bool few_vector_strides_ok(int64_t) const { return true; }  // no gathers: 64-bit offsets
  int64_t stored_entries() const { return a.nblocks() * a.block_r() * a.block_c(); }

  void few_vectors(const T* x, int64_t x_vstride, int64_t x_kstride, int64_t nvec, const T* bias,
                   T* y, int64_t y_vstride, int64_t y_rstride, int num_threads) const {
    const BsrView<V> view = this->view();
    const BsrKernels<V>& kernels = bsr_kernels<V>(active_isa());
    const int threads = threads_for_work(num_threads, (stored_entries() + a.rows()) * nvec);
    driver::for_row_ranges(a.indptr().data(), a.block_rows(), threads, 1,
                           [&](int64_t br0, int64_t br1) {
                             kernels.gemv_block_rows(view, br0, br1, x, x_vstride, x_kstride, nvec,
                                                     bias, y, y_vstride, y_rstride);
                           });
  }

  void panel(const T* b, int64_t ldb, int64_t n, const T* bias, T* c, int64_t ldc,
             int num_threads) const {
    run_panel(&BsrKernels<V>::spmm_block_rows, b, ldb, n, bias, c, ldc, num_threads);
  }

  void panel_transposed(const T* b, int64_t ldb, int64_t n, const T* bias, T* ct, int64_t ldct,
                        int num_threads) const {
    run_panel(&BsrKernels<V>::spmm_block_rows_transposed, b, ldb, n, bias, ct, ldct, num_threads);
  }

  template <typename Kernel>
  void run_panel(Kernel BsrKernels<V>::* kernel, const T* b, int64_t ldb, int64_t n, const T* bias,
                 T* c, int64_t ldc, int num_threads) const {
    const BsrView<V> view = this->view();
    const BsrKernels<V>& kernels = bsr_kernels<V>(active_isa());
    const int threads = threads_for_work(num_threads, (stored_entries() + a.rows()) * n);
    driver::for_row_ranges(a.indptr().data(), a.block_rows(), threads, 1,
                           [&](int64_t br0, int64_t br1) {
                             (kernels.*kernel)(view, br0, br1, b, ldb, n, bias, c, ldc);
                           });
  }
};

}  // namespace

template <typename V, typename T>
void bsr_matmul(const BsrMatrix<V>& a, const T* b, int64_t b_rstride, int64_t b_cstride, int64_t n,
                const T* bias, T* c, int64_t ldc, int num_threads, const V* values) {
  driver::matmul(BsrProduct<V>{a, values_or_stored(a, values)}, b, b_rstride, b_cstride, n, bias, c,
                 ldc, num_threads);
}

template <typename V, typename T>
void bsr_linear(const BsrMatrix<V>& w, const T* x, int64_t ldx, int64_t batch, const T* bias, T* y,
                int64_t ldy, int num_threads, const V* values, Activation act) {
  driver::linear(BsrProduct<V>{w, values_or_stored(w, values)}, x, ldx, batch, bias, y, ldy,
                 num_threads, act);
}

// The products for stored values V and dense operands T = compute_t<V>.
#define SPARSEGEMM_INSTANTIATE_BSR_OPS(V, T)                                                    \
  template void bsr_matmul<V, T>(const BsrMatrix<V>&, const T*, int64_t, int64_t, int64_t,      \
                                 const T*, T*, int64_t, int, const V*);                         \
  template void bsr_linear<V, T>(const BsrMatrix<V>&, const T*, int64_t, int64_t, const T*, T*, \
                                 int64_t, int, const V*, Activation);
SPARSEGEMM_INSTANTIATE_BSR_OPS(float, float)
SPARSEGEMM_INSTANTIATE_BSR_OPS(double, double)
SPARSEGEMM_INSTANTIATE_BSR_OPS(bfloat16_t, float)
#undef SPARSEGEMM_INSTANTIATE_BSR_OPS

}  // namespace sparsegemm
