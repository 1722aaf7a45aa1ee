#include "drivers/int8_bitmap_driver.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <type_traits>

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

// An int8 value q as the kernels read it: X is int16_t (widened, for the
// scalar and AVX2 kernels) or uint8_t (q + 128, for the VNNI ones).
template <typename X>
X as_kernel_input(int q) {
  if constexpr (std::is_same_v<X, uint8_t>)
    return static_cast<uint8_t>(q + 128);
  else
    return static_cast<X>(q);
}

// The loops over a whole vector, compiled for AVX-512, AVX2 and the baseline
// and chosen at load time (GCC target clones): the driver is otherwise built
// for the baseline, where these loops took most of a batch-16 call.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define SPARSEGEMM_VECTOR_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define SPARSEGEMM_VECTOR_CLONES
#endif

// The largest |x[k]| as bits: for floats that are not NaN the order of the
// sign-cleared bits is the order of the magnitudes, and Inf and NaN lie at or
// above the bits of Inf. Integer code, so it vectorizes.
SPARSEGEMM_VECTOR_CLONES uint32_t max_abs_bits(const float* x, int64_t cols) {
  uint32_t max_bits = 0;
  for (int64_t k = 0; k < cols; ++k) {
    uint32_t bits;
    std::memcpy(&bits, x + k, sizeof bits);
    max_bits = std::max(max_bits, bits & 0x7fffffffu);
  }
  return max_bits;
}

// Adding and subtracting 1.5 * 2^23 rounds a float below 2^22 in magnitude
// to an integer, half to even (the default rounding mode), as lrint does,
// but vectorizes; x[k] * (1 / sx) lies in [-127, 127] up to rounding. A
// product by the reciprocal rather than a quotient: division took most of a
// batch-16 call's quantization (Zen 4: about 1 cycle per value).
constexpr float kRoundingShift = 12582912.0f;

inline int quantize_value(float x, float inverse_sx) {
  const float rounded = (x * inverse_sx + kRoundingShift) - kRoundingShift;
  return static_cast<int>(std::clamp(rounded, -float(kInt8Max), float(kInt8Max)));
}

SPARSEGEMM_VECTOR_CLONES void quantize_values(const float* x, int64_t cols, float inverse_sx,
                                              int16_t* xq) {
  for (int64_t k = 0; k < cols; ++k)
    xq[k] = as_kernel_input<int16_t>(quantize_value(x[k], inverse_sx));
}

SPARSEGEMM_VECTOR_CLONES void quantize_values(const float* x, int64_t cols, float inverse_sx,
                                              uint8_t* xq) {
  for (int64_t k = 0; k < cols; ++k)
    xq[k] = as_kernel_input<uint8_t>(quantize_value(x[k], inverse_sx));
}

// Quantizes one vector (core/int8_bitmap_matrix.h) into xq[0:cols], zeros up
// to stride, and returns its scale sx: NaN if it holds Inf or NaN (xq is
// then all zero and every output of the row is NaN).
// `quantize_biased` (the kernels' Int8QuantizeFn, or null: quantize_values)
// quantizes a vector of biased bytes.
template <typename X>
float quantize_vector(const float* x, int64_t cols, X* xq, int64_t stride,
                      Int8QuantizeFn quantize_biased) {
  std::fill(xq + cols, xq + stride, as_kernel_input<X>(0));
  const uint32_t max_bits = max_abs_bits(x, cols);
  float max_abs;
  std::memcpy(&max_abs, &max_bits, sizeof max_abs);
  const float sx = max_abs / static_cast<float>(kInt8Max);
  if (max_bits >= 0x7f800000u || sx == 0.0f) {
    std::fill(xq, xq + cols, as_kernel_input<X>(0));
    return max_bits >= 0x7f800000u ? std::numeric_limits<float>::quiet_NaN() : 0.0f;
  }
  const float inverse_sx = 1.0f / sx;
  if (!std::isfinite(inverse_sx)) {  // sx below about 2.9e-39: divide (rare; scalar)
    for (int64_t k = 0; k < cols; ++k) xq[k] = as_kernel_input<X>(quantize_value(x[k] / sx, 1.0f));
    return sx;
  }
  if constexpr (std::is_same_v<X, uint8_t>)
    if (quantize_biased != nullptr) {
      quantize_biased(x, cols, inverse_sx, xq);
      return sx;
    }
  quantize_values(x, cols, inverse_sx, xq);
  return sx;
}

// The biased vectors xs (batch x stride) as Int8QuadKernelFn reads them:
// interleaved by column quads, kQuadVectors at a time.
void interleave_quads(const uint8_t* xs, int64_t stride, int64_t batch, int64_t padded_cols,
                      uint8_t* x4) {
  const int64_t quads = padded_cols / 4;
  constexpr uint32_t kBiasedZeros = 0x80808080u;
  uint32_t* out = reinterpret_cast<uint32_t*>(x4);
  for (int64_t v0 = 0; v0 < batch; v0 += kQuadVectors)
    for (int64_t q = 0; q < quads; ++q)
      for (int64_t v = 0; v < kQuadVectors; ++v) {
        uint32_t four = kBiasedZeros;
        if (v0 + v < batch) std::memcpy(&four, xs + (v0 + v) * stride + 4 * q, sizeof four);
        *out++ = four;
      }
}

// Which VNNI kernel runs above 4 vectors, measured cold on AMD Zen 4 (2
// threads, 4096 x 11008 and 11008 x 4096): the quad kernel always reads 16
// vectors' worth of x4 per quad, so it costs about the same from 5 to 16
// vectors (1.6-3.0 ms at 90% sparsity over runs), while the tile kernel's
// cost grows with the batch (1.6 ms at 5 vectors, 2.4 at 8, 3.2 at 16, 13 at
// 64). The quad kernel won from 16 vectors at 90% (1.8-2x) and at 64 (1.9x),
// tied at 70% from 16 vectors, and lost or tied below that. Up to 4 vectors
// the batch-1 kernel (row by row, each row reused from L1 by every vector)
// is fastest. Where the CPU has AMX, its kernel takes every batch above 4
// (1.4-2.2x the quad and tile kernels at batch 16, 50-90%, on an Intel Xeon).
// Since the quad kernel prefetches its plan it also wins from 5
// vectors where at most about a tenth of the weights is stored: at 90%
// sparsity 1.05-1.17x the tile kernel at 5 vectors, 1.30-1.60x at 8 and
// 1.38-1.55x at 10; at 85% 0.80-0.89x at 5 and level at 8; at 80% 0.70-1.42x.
constexpr int64_t kVnniGemvMaxBatch = 4;
constexpr int64_t kQuadKernelMinBatch = 12;
constexpr double kQuadKernelMaxDensity = 0.2;
constexpr double kQuadKernelSmallBatchMaxDensity = 0.12;

// The batch-1 kernels (up to kVnniGemvMaxBatch vectors) walk rows by their
// stored columns (ColumnIndexPlan) where at most this fraction of the weights is
// stored: there a group of 256 columns holds at most about 38 weights, fewer
// than a vector's 64 lanes. Zen 4, 2 threads, cold, standalone loop over
// 4096 x 11008: 1.3x the bitmap walk at 90% and 95% sparsity, level at 80%,
// 0.83x at 70%.
constexpr double kIndexedMaxDensity = 0.15;

// Whether the quad kernel takes `batch` vectors over weights of this density.
// Called above kVnniGemvMaxBatch vectors.
bool quad_kernel_pays(int64_t batch, double density) {
  return density <=
         (batch >= kQuadKernelMinBatch ? kQuadKernelMaxDensity : kQuadKernelSmallBatchMaxDensity);
}

// Runs the integer kernel over every row, then after_rows(r0, r1) on the
// thread that computed rows [r0, r1) (while its sums are still in cache).
template <typename X, typename AfterRows>
void int_product_rows(const Int8BitmapKernels& kernels, const Int8BitmapMatrix& w, const X* xq,
                      int64_t x_stride, int64_t batch, int32_t* acc, int64_t ldacc, int num_threads,
                      const AfterRows& after_rows) {
  const BitmapMatrix<int8_t>& weights = w.weights();
  const BitmapView<int8_t> view = weights.view();
  const int32_t* row_sums = w.row_sums().data();
  const int64_t padded_cols = view.words_per_row * 64;
  const double density =
      w.rows() * w.cols() > 0 ? static_cast<double>(w.nnz()) / (w.rows() * w.cols()) : 0.0;
  const bool gemv = batch == 1 || (kernels.reads_biased_bytes() && batch <= kVnniGemvMaxBatch);
  const bool tiles = std::is_same_v<X, uint8_t> && !gemv && kernels.small_batch_rows_amx != nullptr;
  const bool quads = std::is_same_v<X, uint8_t> && !gemv && !tiles &&
                     kernels.small_batch_rows_quads != nullptr && quad_kernel_pays(batch, density);
  const bool indexed = std::is_same_v<X, uint8_t> && gemv && kernels.gemv_rows_indexed != nullptr &&
                       use_int8_indexed_walk() && density <= kIndexedMaxDensity;
  // Built on the first call that needs them, before the threads start.
  const Int8QuadPlan* plan = quads ? &w.quad_plan(num_threads) : nullptr;
  const ColumnIndexPlan* index_plan = indexed ? &w.index_plan(num_threads) : nullptr;
  ScratchBuffer<uint8_t> x4(quads || tiles
                                ? static_cast<size_t>((batch + kQuadVectors - 1) / kQuadVectors *
                                                      kQuadVectors * padded_cols)
                                : 0);
  if constexpr (std::is_same_v<X, uint8_t>)
    if (quads || tiles)
      (kernels.interleave_quads != nullptr ? kernels.interleave_quads : interleave_quads)(
          xq, x_stride, batch, padded_cols, x4.data());
  const auto kernel = [&](int64_t r0, int64_t r1) {
    if constexpr (std::is_same_v<X, uint8_t>) {
      if (tiles)
        kernels.small_batch_rows_amx(view, row_sums, r0, r1, x4.data(), batch, acc, ldacc);
      else if (quads)
        kernels.small_batch_rows_quads(*plan, row_sums, r0, r1, x4.data(), batch, acc, ldacc);
      else if (indexed)
        kernels.gemv_rows_indexed(*index_plan, view, row_sums, r0, r1, xq, x_stride, batch, acc,
                                  ldacc);
      else
        (!gemv ? kernels.small_batch_rows_bytes : kernels.gemv_rows_bytes)(
            view, row_sums, r0, r1, xq, x_stride, batch, acc, ldacc);
    } else
      (!gemv ? kernels.small_batch_rows : kernels.gemv_rows)(view, r0, r1, xq, x_stride, batch, acc,
                                                             ldacc);
  };
  // Every byte of the bitmap costs work whether or not its bits are set.
  const int64_t per_row = std::max<int64_t>(1, w.cols() / 8);
  const int threads = threads_for_work(num_threads, (w.nnz() + w.rows() * per_row) * batch);
  driver::for_row_ranges(weights.offsets().data(), w.rows(), threads, per_row,
                         [&](int64_t r0, int64_t r1) {
                           kernel(r0, r1);
                           after_rows(r0, r1);
                         });
}

template <typename X>
void int_product_over(const Int8BitmapKernels& kernels, const Int8BitmapMatrix& w, const int8_t* xq,
                      int64_t ldx, int64_t batch, int32_t* acc, int64_t ldacc, int num_threads) {
  const int64_t cols = w.cols();
  const int64_t stride = widened_stride(cols);
  ScratchBuffer<X> xs(static_cast<size_t>(batch * stride));
  for (int64_t v = 0; v < batch; ++v) {
    X* dst = xs.data() + v * stride;
    for (int64_t k = 0; k < cols; ++k) dst[k] = as_kernel_input<X>(xq[v * ldx + k]);
    std::fill(dst + cols, dst + stride, as_kernel_input<X>(0));
  }
  int_product_rows(kernels, w, xs.data(), stride, batch, acc, ldacc, num_threads,
                   [](int64_t, int64_t) {});
}

template <typename X>
void linear_over(const Int8BitmapKernels& kernels, const Int8BitmapMatrix& w, const float* x,
                 int64_t ldx, int64_t batch, const float* bias, float* y, int64_t ldy,
                 int num_threads) {
  const int64_t rows = w.rows(), cols = w.cols();
  const int64_t stride = widened_stride(cols);
  ScratchBuffer<X> xs(static_cast<size_t>(batch * stride));
  ScratchBuffer<float> vector_scales(static_cast<size_t>(batch));
  ScratchBuffer<int32_t> acc(static_cast<size_t>(batch * rows));
  // O(batch * cols) against the product's O(batch * nnz): threads only for big batches.
  parallel_for(threads_for_work(num_threads, batch * cols), batch, [&](int64_t v) {
    vector_scales.data()[v] =
        quantize_vector(x + v * ldx, cols, xs.data() + v * stride, stride, kernels.quantize_biased);
  });
  const float* scales = w.scales().data();
  const float* sx = vector_scales.data();
  const int32_t* sums = acc.data();
  int_product_rows(kernels, w, xs.data(), stride, batch, acc.data(), rows, num_threads,
                   [&](int64_t r0, int64_t r1) {
                     for (int64_t v = 0; v < batch; ++v)
                       for (int64_t r = r0; r < r1; ++r)
                         y[v * ldy + r] =
                             static_cast<float>(sums[v * rows + r]) * (scales[r] * sx[v]) +
                             (bias != nullptr ? bias[r] : 0.0f);
                   });
}

}  // namespace

void int8_bitmap_int_product(const Int8BitmapMatrix& w, const int8_t* xq, int64_t ldx,
                             int64_t batch, int32_t* acc, int64_t ldacc, int num_threads) {
  if (batch == 0 || w.rows() == 0) return;
  const Int8BitmapKernels& kernels = int8_bitmap_kernels(active_isa());
  if (kernels.reads_biased_bytes())
    int_product_over<uint8_t>(kernels, w, xq, ldx, batch, acc, ldacc, num_threads);
  else
    int_product_over<int16_t>(kernels, w, xq, ldx, batch, acc, ldacc, num_threads);
}

void int8_bitmap_linear(const Int8BitmapMatrix& w, const float* x, int64_t ldx, int64_t batch,
                        const float* bias, float* y, int64_t ldy, int num_threads) {
  if (batch == 0 || w.rows() == 0) return;
  const Int8BitmapKernels& kernels = int8_bitmap_kernels(active_isa());
  if (kernels.reads_biased_bytes())
    linear_over<uint8_t>(kernels, w, x, ldx, batch, bias, y, ldy, num_threads);
  else
    linear_over<int16_t>(kernels, w, x, ldx, batch, bias, y, ldy, num_threads);
}

}  // namespace sparsegemm
