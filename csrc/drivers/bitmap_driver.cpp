#include "drivers/bitmap_driver.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>

#include "core/isa.h"
#include "core/parallel.h"
#include "kernels/bitmap/bitmap_kernels.h"
#include "drivers/transpose_driver.h"
#include "drivers/buffer.h"
#include "drivers/product_driver.h"

namespace sparsegemm {

namespace {

// Whether every x(v, k) = x[v * vstride + k], v < nvec, k < cols, is finite.
template <typename T>
bool all_finite(const T* x, int64_t vstride, int64_t nvec, int64_t cols) {
  for (int64_t v = 0; v < nvec; ++v) {
    const T* row = x + v * vstride;
    bool finite = true;
    for (int64_t k = 0; k < cols; ++k) finite &= std::isfinite(row[k]);
    if (!finite) return false;
  }
  return true;
}

// Whether every x(v, k) is finite and exactly a bfloat16 (its low 16 bits
// zero), as the inputs of a bfloat16 model are once widened to float.
bool all_finite_bfloat16(const float* x, int64_t vstride, int64_t nvec, int64_t cols) {
  for (int64_t v = 0; v < nvec; ++v) {
    const float* row = x + v * vstride;
    uint32_t low_bits = 0;
    bool finite = true;
    for (int64_t k = 0; k < cols; ++k) {
      uint32_t u;
      std::memcpy(&u, row + k, sizeof(u));
      low_bits |= u & 0xffffu;
      finite &= (u & 0x7f800000u) != 0x7f800000u;
    }
    if (low_bits != 0 || !finite) return false;
  }
  return true;
}

// x(v, k) as bfloat16 (exact: all_finite_bfloat16), padded with zeros to
// padded_cols entries per vector.
void narrow_to_bfloat16(const float* x, int64_t vstride, int64_t nvec, int64_t cols,
                        int64_t padded_cols, bfloat16_t* out) {
  for (int64_t v = 0; v < nvec; ++v) {
    const float* row = x + v * vstride;
    bfloat16_t* dst = out + v * padded_cols;
    for (int64_t k = 0; k < cols; ++k) {
      uint32_t u;
      std::memcpy(&u, row + k, sizeof(u));
      dst[k].bits = static_cast<uint16_t>(u >> 16);
    }
    for (int64_t k = cols; k < padded_cols; ++k) dst[k].bits = 0;
  }
}

// Up to this many vectors, the bfloat16-input kernel runs row by row over
// every vector; more go to the tile kernel. Measured cold on 4096 x 11008 and
// 11008 x 4096 at 50% and 90%: 1.4-1.8x faster than the tile kernel at 2
// vectors, 1.0-1.45x at 3, 0.8-1.15x at 4.
constexpr int64_t kBf16InputMaxBatch = 3;
// Up to this many vectors, and where at most kIndexedMaxDensity of the
// weights are stored, rows are walked by windows of their stored columns
// (gemv_rows_indexed) wherever the CPU has that kernel. Xeon (AMX class), 2
// threads, cold, batch 1, on 4096^2, 11008 x 4096 and 4096 x 11008
// (benchmarks/bitmap_floors.py and bf16_bitmap_floors.py), windows against
// the bit walk: float at 90% 0.35-0.36 against 0.54-0.55 ms on 4096^2
// (0.94-0.98 against 1.43-1.72 on the others), at 85% 10-25% faster, at 80%
// 0.94-1.06x, at 75% 10% slower; bfloat16 at 85% 1.11-1.31x, at 80% level
// but 4096 x 11008 18% slower.
constexpr int64_t kIndexedMaxBatch = 3;
constexpr double kIndexedMaxDensity = 0.17;

// The bitmap plugged into the shared drivers (drivers/product_driver.h). Every
// vector count runs few_vectors(), so the panel path is only a fallback.
template <typename V>
struct BitmapProduct {
  using T = compute_t<V>;
  const BitmapMatrix<V>& a;
  const V* values = nullptr;  // what the kernels read: the caller's or a's own (values_or_stored)

  BitmapView<V> view() const {
    BitmapView<V> v = a.view();
    v.values = values;
    return v;
  }

  int64_t rows() const { return a.rows(); }
  int64_t cols() const { return a.cols(); }
  int64_t stored_entries() const { return a.nnz(); }
  static constexpr bool kConflictFreeStride = false;
  static constexpr bool kTransposedPanel = false;
  static constexpr bool kPackedPanel = false;
  // The small-batch kernel reuses each expanded tile for 16 vectors at a
  // time, so it serves any batch (for large ones dense BLAS wins anyway).
  int64_t max_few_vectors() const { return INT64_MAX; }
  // The kernels read each vector's entries contiguously.
  bool few_vector_strides_ok(int64_t kstride) const { return kstride == 1 || a.cols() <= 1; }

  void few_vectors(const T* x, int64_t x_vstride, int64_t /*x_kstride*/, int64_t nvec,
                   const T* bias, T* y, int64_t y_vstride, int64_t y_rstride,
                   int num_threads) const {
    const BitmapView<V> v = view();
    const BitmapKernels<V>& kernels = bitmap_kernels<V>(active_isa());
    // Every bitmap chunk costs work whether or not its bits are set.
    const int64_t per_row = std::max<int64_t>(1, a.cols() / 4);
    const int threads = threads_for_work(num_threads, (a.nnz() + a.rows() * per_row) * nvec);
    if (kernels.gemv_rows_indexed != nullptr && nvec <= kIndexedMaxBatch &&
        a.cols() <= ColumnWindowPlan::kMaxColumns &&
        static_cast<double>(a.nnz()) <=
            kIndexedMaxDensity * static_cast<double>(a.rows()) * static_cast<double>(a.cols())) {
      const ColumnWindowPlan& plan = a.window_plan(num_threads);
      driver::for_row_ranges(a.offsets().data(), a.rows(), threads, per_row,
                             [&](int64_t r0, int64_t r1) {
                               kernels.gemv_rows_indexed(plan, v, r0, r1, x, x_vstride, nvec, bias,
                                                         y, y_vstride, y_rstride);
                             });
      return;
    }
    if constexpr (std::is_same_v<V, bfloat16_t>) {
      if (kernels.gemv_rows_bf16_input != nullptr && nvec <= kBf16InputMaxBatch &&
          all_finite_bfloat16(x, x_vstride, nvec, a.cols())) {
        const int64_t padded = v.words_per_row * 64;
        ScratchBuffer<bfloat16_t> narrow(static_cast<size_t>(std::max<int64_t>(1, padded * nvec)));
        narrow_to_bfloat16(x, x_vstride, nvec, a.cols(), padded, narrow.data());
        driver::for_row_ranges(a.offsets().data(), a.rows(), threads, per_row,
                               [&](int64_t r0, int64_t r1) {
                                 kernels.gemv_rows_bf16_input(v, r0, r1, narrow.data(), padded,
                                                              nvec, bias, y, y_vstride, y_rstride);
                               });
        return;
      }
    }
    const bool tiles = nvec >= 2 && all_finite(x, x_vstride, nvec, a.cols());
    const auto kernel = tiles ? kernels.small_batch_rows : kernels.gemv_rows;
    driver::for_row_ranges(a.offsets().data(), a.rows(), threads, per_row,
                           [&](int64_t r0, int64_t r1) {
                             kernel(v, r0, r1, x, x_vstride, nvec, bias, y, y_vstride, y_rstride);
                           });
  }

  // c = a @ b (+ bias) for b with contiguous columns: through b transposed.
  void panel(const T* b, int64_t ldb, int64_t n, const T* bias, T* c, int64_t ldc,
             int num_threads) const {
    const int64_t k = a.cols();
    ScratchBuffer<T> bt(static_cast<size_t>(std::max<int64_t>(1, k * n)));
    transpose(b, k, n, ldb, 1, bt.data(), k, num_threads);
    few_vectors(bt.data(), k, 1, n, bias, c, 1, ldc, num_threads);
  }
};

}  // namespace

template <typename V, typename T>
void bitmap_matmul(const BitmapMatrix<V>& a, const T* b, int64_t b_rstride, int64_t b_cstride,
                   int64_t n, const T* bias, T* c, int64_t ldc, int num_threads, const V* values) {
  driver::matmul(BitmapProduct<V>{a, values_or_stored(a, values)}, b, b_rstride, b_cstride, n, bias,
                 c, ldc, num_threads);
}

template <typename V, typename T>
void bitmap_linear(const BitmapMatrix<V>& w, const T* x, int64_t ldx, int64_t batch, const T* bias,
                   T* y, int64_t ldy, int num_threads, const V* values, Activation act) {
  driver::linear(BitmapProduct<V>{w, values_or_stored(w, values)}, x, ldx, batch, bias, y, ldy,
                 num_threads, act);
}

#define SPARSEGEMM_INSTANTIATE_BITMAP_OPS(V, T)                                                   \
  template void bitmap_matmul<V, T>(const BitmapMatrix<V>&, const T*, int64_t, int64_t, int64_t,  \
                                    const T*, T*, int64_t, int, const V*);                        \
  template void bitmap_linear<V, T>(const BitmapMatrix<V>&, const T*, int64_t, int64_t, const T*, \
                                    T*, int64_t, int, const V*, Activation);
SPARSEGEMM_INSTANTIATE_BITMAP_OPS(float, float)
SPARSEGEMM_INSTANTIATE_BITMAP_OPS(double, double)
SPARSEGEMM_INSTANTIATE_BITMAP_OPS(bfloat16_t, float)
#undef SPARSEGEMM_INSTANTIATE_BITMAP_OPS

}  // namespace sparsegemm
