#include "drivers/int8_bitmap_driver.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>

#include "core/isa.h"
#include "core/parallel.h"
#include "drivers/buffer.h"
#include "drivers/product_driver.h"
#include "kernels/int8_bitmap/int8_bitmap_kernels.h"

namespace sparsegemm {

namespace {

// Row stride of the widened vectors: the kernels read whole padding blocks.
int64_t widened_stride(int64_t cols) {
  return std::max<int64_t>(kInt8VectorPadding, (cols + kInt8VectorPadding - 1) /
                                                   kInt8VectorPadding * kInt8VectorPadding);
}

// Quantizes one vector (core/int8_bitmap_matrix.h) into x16[0:cols], zeros up
// to stride, and returns its scale sx: NaN if it holds Inf or NaN (x16 is
// then all zero and every output of the row is NaN).
float quantize_vector(const float* x, int64_t cols, int16_t* x16, int64_t stride) {
  std::fill(x16, x16 + stride, int16_t(0));
  float max_abs = 0.0f;
  bool finite = true;
  for (int64_t k = 0; k < cols; ++k) {
    finite &= std::isfinite(x[k]);
    max_abs = std::max(max_abs, std::fabs(x[k]));
  }
  if (!finite) return std::numeric_limits<float>::quiet_NaN();
  const float sx = max_abs / static_cast<float>(kInt8Max);
  if (sx == 0.0f) return 0.0f;
  for (int64_t k = 0; k < cols; ++k)  // lrint rounds half to even
    x16[k] = static_cast<int16_t>(std::clamp<long>(std::lrint(x[k] / sx), -kInt8Max, kInt8Max));
  return sx;
}

// Runs the integer kernel over every row, then after_rows(r0, r1) on the
// thread that computed rows [r0, r1) (while its sums are still in cache).
template <typename AfterRows>
void int_product_rows(const Int8BitmapMatrix& w, const int16_t* x16, int64_t x_stride,
                      int64_t batch, int32_t* acc, int64_t ldacc, int num_threads,
                      const AfterRows& after_rows) {
  const BitmapMatrix<int8_t>& weights = w.weights();
  const BitmapView<int8_t> view = weights.view();
  const Int8BitmapKernels& kernels = int8_bitmap_kernels(active_isa());
  const auto kernel = batch >= 2 ? kernels.small_batch_rows : kernels.gemv_rows;
  // Every byte of the bitmap costs work whether or not its bits are set.
  const int64_t per_row = std::max<int64_t>(1, w.cols() / 8);
  const int threads = threads_for_work(num_threads, (w.nnz() + w.rows() * per_row) * batch);
  driver::for_row_ranges(weights.offsets().data(), w.rows(), threads, per_row,
                         [&](int64_t r0, int64_t r1) {
                           kernel(view, r0, r1, x16, x_stride, batch, acc, ldacc);
                           after_rows(r0, r1);
                         });
}

}  // namespace

void int8_bitmap_int_product(const Int8BitmapMatrix& w, const int8_t* xq, int64_t ldx,
                             int64_t batch, int32_t* acc, int64_t ldacc, int num_threads) {
  if (batch == 0 || w.rows() == 0) return;
  const int64_t cols = w.cols();
  const int64_t stride = widened_stride(cols);
  ScratchBuffer<int16_t> x16(static_cast<size_t>(batch * stride));
  for (int64_t v = 0; v < batch; ++v) {
    int16_t* dst = x16.data() + v * stride;
    std::copy(xq + v * ldx, xq + v * ldx + cols, dst);
    std::fill(dst + cols, dst + stride, int16_t(0));
  }
  int_product_rows(w, x16.data(), stride, batch, acc, ldacc, num_threads, [](int64_t, int64_t) {});
}

void int8_bitmap_linear(const Int8BitmapMatrix& w, const float* x, int64_t ldx, int64_t batch,
                        const float* bias, float* y, int64_t ldy, int num_threads) {
  const int64_t rows = w.rows(), cols = w.cols();
  if (batch == 0 || rows == 0) return;
  const int64_t stride = widened_stride(cols);
  ScratchBuffer<int16_t> x16(static_cast<size_t>(batch * stride));
  ScratchBuffer<float> vector_scales(static_cast<size_t>(batch));
  ScratchBuffer<int32_t> acc(static_cast<size_t>(batch * rows));
  // O(batch * cols) against the product's O(batch * nnz): threads only for big batches.
  parallel_for(threads_for_work(num_threads, batch * cols), batch, [&](int64_t v) {
    vector_scales.data()[v] = quantize_vector(x + v * ldx, cols, x16.data() + v * stride, stride);
  });
  const float* scales = w.scales().data();
  const float* sx = vector_scales.data();
  const int32_t* sums = acc.data();
  int_product_rows(
      w, x16.data(), stride, batch, acc.data(), rows, num_threads, [&](int64_t r0, int64_t r1) {
        for (int64_t v = 0; v < batch; ++v)
          for (int64_t r = r0; r < r1; ++r)
            y[v * ldy + r] = static_cast<float>(sums[v * rows + r]) * (scales[r] * sx[v]) +
                             (bias != nullptr ? bias[r] : 0.0f);
      });
}

}  // namespace sparsegemm
