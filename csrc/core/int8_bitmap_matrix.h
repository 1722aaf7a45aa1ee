// Int8 bitmap storage: a pruned weight quantized to int8, for the nn.Linear
// product y = x @ W.T + b at batch 1-16, where the work is streaming W from
// memory: 1 bit per weight plus 1 byte per kept weight (0.625 bytes per
// weight at 50% sparsity, 0.225 at 90%, against 1 for dense int8).
//
// Semantics (the kernels compute exactly this):
// - Weights: symmetric per-output-channel (per row r of W) quantization.
//   scale[r] = max |W[r, k]| / 127 over the kept entries (the row maximum
//   whenever anything is kept; 0 for a row with nothing kept or all zeros),
//   q[r, k] = clamp(round_half_even(W[r, k] / scale[r]), -127, 127). A kept
//   weight may quantize to 0: it keeps its bit.
// - Activations: dynamic symmetric quantization per vector (row v of x), not
//   per tensor, because a batch mixes tokens with very different ranges:
//   sx[v] = max_k |x[v, k]| / 127, xq = clamp(round_half_even(x * (1 / sx)), -127, 127)
//   (x / sx where 1 / sx overflows float)
//   (an all-zero vector: sx = 0, xq = 0).
// - acc[v, r] = sum over stored k of q[r, k] * xq[v, k], exact in int32: every
//   product is at most 127 * 127, so cols <= kMaxInt8Cols (2^31 / 127^2)
//   cannot overflow.
// - y[v, r] = float(acc[v, r]) * (scale[r] * sx[v]) + bias[r], in float32.
// - A vector holding Inf or NaN gives a whole output row of NaN.
// -128 is never stored (nor accepted as an activation), so the range is symmetric.
#pragma once

#include <cstdint>
#include <memory>
#include <utility>
#include <vector>

#include "core/bitmap_matrix.h"

namespace sparsegemm {

// The most columns an int32 accumulator of int8 x int8 products can take:
// floor(2^31 / (127 * 127)) = 133,144.
constexpr int64_t kMaxInt8Cols = (int64_t(1) << 31) / (127 * 127);
constexpr int kInt8Max = 127;

// Throws std::invalid_argument if cols exceeds kMaxInt8Cols.
void check_int8_cols(int64_t cols);

// The stored column quads of a matrix (4 consecutive columns 4q..4q+3 with
// at least one stored weight), in the order the VNNI small-batch kernel reads
// them: rows in blocks of kRowBlock, each block's columns in panels of
// kPanelQuads quads (1024 columns, whose 16 interleaved vectors take 16 KB
// and stay in L1), and within a panel row by row. So the kernel reads this
// plan as one sequential stream, with no bitmap to decode per call. Built
// once per matrix (Int8BitmapMatrix::quad_plan), it takes 6 bytes per stored
// quad: 0.52 bytes per weight at 90% sparsity, 1.1 at 70%.
struct Int8QuadPlan {
  static constexpr int64_t kRowBlock = 32;
  static constexpr int64_t kPanelQuads = 256;

  int64_t rows = 0;
  int64_t words_per_row = 0;          // of the bitmap: quads per row = 16 * words_per_row
  int64_t panels = 0;                 // ceil(quads per row / kPanelQuads)
  std::vector<int64_t> block_starts;  // row blocks + 1: the block's first quad
  // counts[(block * panels + panel) * kRowBlock + i]: quads of row
  // block * kRowBlock + i in that panel (0 past the last row)
  std::vector<uint16_t> counts;
  LargeArray<uint16_t> quads;   // the quad q of each stored quad
  LargeArray<int32_t> weights;  // its 4 weights, column 4q + j in byte j (0 where not stored)

  // num_threads as in core/parallel.h.
  static Int8QuadPlan build(const BitmapView<int8_t>& a, int num_threads);
  int64_t bytes() const {
    return static_cast<int64_t>(block_starts.size() * sizeof(int64_t) +
                                counts.size() * sizeof(uint16_t) +
                                quads.size() * (sizeof(uint16_t) + sizeof(int32_t)));
  }
};

class Int8BitmapMatrix {
 public:
  // Keeps entries of a float32 matrix with |w| > threshold and quantizes
  // them per row (see above). dense(i, j) = dense[i * row_stride + j * col_stride].
  // Throws std::invalid_argument for a non-finite entry or too many columns.
  static Int8BitmapMatrix from_dense(int64_t rows, int64_t cols, const float* dense,
                                     int64_t row_stride, int64_t col_stride, double threshold);

  // Copies and validates a bitmap (as BitmapMatrix::from_arrays), its int8
  // values (one per set bit, each in [-127, 127]) and the per-row scales
  // (rows entries, finite and >= 0). Throws std::invalid_argument naming the
  // first defect.
  static Int8BitmapMatrix from_arrays(int64_t rows, int64_t cols, const uint64_t* bits,
                                      int64_t bits_len, const int8_t* values, int64_t values_len,
                                      const float* scales, int64_t scales_len);

  int64_t rows() const { return weights_.rows(); }
  int64_t cols() const { return weights_.cols(); }
  int64_t nnz() const { return weights_.nnz(); }
  const BitmapMatrix<int8_t>& weights() const { return weights_; }
  const std::vector<float>& scales() const { return scales_; }
  // row_sums()[r] = the sum of row r's stored q values, which the VNNI
  // kernels subtract (kernels/int8_bitmap/int8_bitmap_avx512vnni.cpp).
  const std::vector<int32_t>& row_sums() const { return row_sums_; }
  // Bytes of storage: the bitmap with its int8 values and offsets, the scales
  // and the row sums.
  int64_t storage_bytes() const {
    return weights_.storage_bytes() + static_cast<int64_t>(scales_.size() * sizeof(float) +
                                                           row_sums_.size() * sizeof(int32_t));
  }

  // The dequantized weight q[r, k] * scale[r]: out is rows x cols, C order,
  // fully overwritten.
  void to_dense(float* out) const;

  // The quad plan of the weights, built on the first call (thread-safe) and
  // kept for the matrix's lifetime: only small batches over sparse weights
  // ask for it (drivers/int8_bitmap_driver.cpp), so batch-1 use never pays
  // its memory. Copies of the matrix share it. The first caller's
  // num_threads (as in core/parallel.h) build it.
  const Int8QuadPlan& quad_plan(int num_threads) const;
  // Bytes the quad plan holds now: 0 until it is built.
  int64_t quad_plan_bytes() const;
  // The index plan, likewise built on the first call and shared by copies:
  // only batch-1 products over very sparse weights ask for it.
  const ColumnIndexPlan& index_plan(int num_threads) const;
  int64_t index_plan_bytes() const;

 private:
  Int8BitmapMatrix(BitmapMatrix<int8_t> weights, std::vector<float> scales);

  BitmapMatrix<int8_t> weights_;
  std::vector<float> scales_;
  std::vector<int32_t> row_sums_;
  std::shared_ptr<LazyPlan<Int8QuadPlan>> quad_plan_ = std::make_shared<LazyPlan<Int8QuadPlan>>();
};

}  // namespace sparsegemm
