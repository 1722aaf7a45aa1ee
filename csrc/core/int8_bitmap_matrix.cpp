#include "core/int8_bitmap_matrix.h"

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <string>
#include <utility>

#include "core/parallel.h"

namespace sparsegemm {

void check_int8_cols(int64_t cols) {
  if (cols > kMaxInt8Cols)
    throw std::invalid_argument("int8 weights allow at most " + std::to_string(kMaxInt8Cols) +
                                " columns (2^31 / 127^2, so the int32 accumulators cannot "
                                "overflow), got " +
                                std::to_string(cols));
}

Int8BitmapMatrix::Int8BitmapMatrix(BitmapMatrix<int8_t> weights, std::vector<float> scales)
    : weights_(std::move(weights)), scales_(std::move(scales)), row_sums_(weights_.rows(), 0) {
  const std::vector<offset_t>& offsets = weights_.offsets();
  const LargeArray<int8_t>& values = weights_.values();
  for (int64_t r = 0; r < weights_.rows(); ++r)
    for (int64_t k = offsets[r]; k < offsets[r + 1]; ++k) row_sums_[r] += values[k];
}

Int8BitmapMatrix Int8BitmapMatrix::from_dense(int64_t rows, int64_t cols, const float* dense,
                                              int64_t row_stride, int64_t col_stride,
                                              double threshold) {
  check_int8_cols(cols);
  // The float bitmap decides what is kept; quantizing never drops a bit.
  const BitmapMatrix<float> kept =
      BitmapMatrix<float>::from_dense(rows, cols, dense, row_stride, col_stride, threshold);
  const LargeArray<float>& values = kept.values();
  const std::vector<offset_t>& offsets = kept.offsets();
  std::vector<int8_t> quantized(values.size());
  std::vector<float> scales(rows, 0.0f);
  for (int64_t r = 0; r < rows; ++r) {
    float max_abs = 0.0f;
    for (int64_t k = offsets[r]; k < offsets[r + 1]; ++k) {
      if (!std::isfinite(values[k]))
        throw std::invalid_argument("dense must be finite to quantize: row " + std::to_string(r) +
                                    " holds " + std::to_string(values[k]));
      max_abs = std::max(max_abs, std::fabs(values[k]));
    }
    const float scale = max_abs / static_cast<float>(kInt8Max);
    scales[r] = scale;
    if (scale == 0.0f) continue;  // an all-zero row: every q is 0
    for (int64_t k = offsets[r]; k < offsets[r + 1]; ++k) {
      // lrint rounds half to even (the default rounding mode).
      const long q = std::lrint(values[k] / scale);
      quantized[k] = static_cast<int8_t>(std::clamp<long>(q, -kInt8Max, kInt8Max));
    }
  }
  return Int8BitmapMatrix(
      BitmapMatrix<int8_t>::from_arrays(rows, cols, kept.bits().data(),
                                        static_cast<int64_t>(kept.bits().size()), quantized.data(),
                                        static_cast<int64_t>(quantized.size())),
      std::move(scales));
}

Int8BitmapMatrix Int8BitmapMatrix::from_arrays(int64_t rows, int64_t cols, const uint64_t* bits,
                                               int64_t bits_len, const int8_t* values,
                                               int64_t values_len, const float* scales,
                                               int64_t scales_len) {
  check_int8_cols(cols);
  BitmapMatrix<int8_t> weights =
      BitmapMatrix<int8_t>::from_arrays(rows, cols, bits, bits_len, values, values_len);
  for (int64_t k = 0; k < values_len; ++k)
    if (values[k] < -kInt8Max)
      throw std::invalid_argument("data[" + std::to_string(k) +
                                  "] is -128: int8 values must be in [-127, 127]");
  if (scales_len != rows)
    throw std::invalid_argument("scales must have one entry per row (" + std::to_string(rows) +
                                "), got " + std::to_string(scales_len));
  for (int64_t r = 0; r < rows; ++r)
    if (!(std::isfinite(scales[r]) && scales[r] >= 0.0f))
      throw std::invalid_argument("scales must be finite and >= 0: scales[" + std::to_string(r) +
                                  "] is " + std::to_string(scales[r]));
  return Int8BitmapMatrix(std::move(weights), std::vector<float>(scales, scales + scales_len));
}

void Int8BitmapMatrix::to_dense(float* out) const {
  const int64_t n = rows() * cols();
  std::vector<int8_t> quantized(static_cast<size_t>(n));
  weights_.to_dense(quantized.data());
  for (int64_t r = 0; r < rows(); ++r)
    for (int64_t k = 0; k < cols(); ++k)
      out[r * cols() + k] = static_cast<float>(quantized[r * cols() + k]) * scales_[r];
}

namespace {

constexpr int64_t kQuadsPerWord = 16;
constexpr int64_t kWordsPerPanel = Int8QuadPlan::kPanelQuads / kQuadsPerWord;

// Bit 4q of the result is set where quad q of the word holds a stored weight.
inline uint64_t quad_leaders(uint64_t word) {
  return (word | word >> 1 | word >> 2 | word >> 3) & 0x1111111111111111ull;
}

}  // namespace

Int8QuadPlan Int8QuadPlan::build(const BitmapView<int8_t>& a, int num_threads) {
  Int8QuadPlan plan;
  plan.rows = a.rows;
  plan.words_per_row = a.words_per_row;
  plan.panels = (a.words_per_row + kWordsPerPanel - 1) / kWordsPerPanel;
  const int64_t blocks = (a.rows + kRowBlock - 1) / kRowBlock;
  plan.counts.assign(static_cast<size_t>(blocks * plan.panels * kRowBlock), 0);
  plan.block_starts.assign(static_cast<size_t>(blocks + 1), 0);
  const int threads = threads_for_pass(num_threads, a.rows * a.words_per_row);
  // Pass 1: the quads of every row in every panel, and each block's total.
  parallel_ranges(threads, blocks, [&](int64_t b0, int64_t b1) {
    for (int64_t block = b0; block < b1; ++block) {
      int64_t total = 0;
      for (int64_t panel = 0; panel < plan.panels; ++panel) {
        const int64_t w0 = panel * kWordsPerPanel;
        const int64_t w1 = std::min(a.words_per_row, w0 + kWordsPerPanel);
        for (int64_t i = 0; i < kRowBlock && block * kRowBlock + i < a.rows; ++i) {
          const uint64_t* words = a.bits + (block * kRowBlock + i) * a.words_per_row;
          int64_t count = 0;
          for (int64_t w = w0; w < w1; ++w) count += __builtin_popcountll(quad_leaders(words[w]));
          plan.counts[static_cast<size_t>((block * plan.panels + panel) * kRowBlock + i)] =
              static_cast<uint16_t>(count);
          total += count;
        }
      }
      plan.block_starts[static_cast<size_t>(block + 1)] = total;
    }
  });
  for (int64_t block = 0; block < blocks; ++block)
    plan.block_starts[static_cast<size_t>(block + 1)] +=
        plan.block_starts[static_cast<size_t>(block)];
  plan.quads.resize(static_cast<size_t>(plan.block_starts.back()));
  plan.weights.resize(static_cast<size_t>(plan.block_starts.back()));
  // Pass 2: each block writes its quads from its start, panel by panel, row by row.
  parallel_ranges(threads, blocks, [&](int64_t b0, int64_t b1) {
    const int8_t* next_value[kRowBlock];
    for (int64_t block = b0; block < b1; ++block) {
      const int64_t r0 = block * kRowBlock;
      const int64_t nrows = std::min(kRowBlock, a.rows - r0);
      for (int64_t i = 0; i < nrows; ++i) next_value[i] = a.values + a.offsets[r0 + i];
      int64_t n = plan.block_starts[static_cast<size_t>(block)];
      for (int64_t panel = 0; panel < plan.panels; ++panel) {
        const int64_t w0 = panel * kWordsPerPanel;
        const int64_t w1 = std::min(a.words_per_row, w0 + kWordsPerPanel);
        for (int64_t i = 0; i < nrows; ++i) {
          const uint64_t* words = a.bits + (r0 + i) * a.words_per_row;
          const int8_t*& vp = next_value[i];
          for (int64_t w = w0; w < w1; ++w) {
            for (uint64_t leaders = quad_leaders(words[w]); leaders != 0; leaders &= leaders - 1) {
              const int shift = __builtin_ctzll(leaders);  // 4q
              const unsigned nibble = static_cast<unsigned>(words[w] >> shift) & 15u;
              uint32_t four = 0;
              for (int j = 0; j < 4; ++j)
                if (nibble >> j & 1u) four |= uint32_t{static_cast<uint8_t>(*vp++)} << (8 * j);
              plan.quads[static_cast<size_t>(n)] =
                  static_cast<uint16_t>(w * kQuadsPerWord + shift / 4);
              plan.weights[static_cast<size_t>(n)] = static_cast<int32_t>(four);
              ++n;
            }
          }
        }
      }
    }
  });
  return plan;
}

const Int8QuadPlan& Int8BitmapMatrix::quad_plan(int num_threads) const {
  return quad_plan_->get([&] { return Int8QuadPlan::build(weights_.view(), num_threads); });
}

int64_t Int8BitmapMatrix::quad_plan_bytes() const { return quad_plan_->bytes(); }

const ColumnIndexPlan& Int8BitmapMatrix::index_plan(int num_threads) const {
  return weights_.column_plan(num_threads);
}

int64_t Int8BitmapMatrix::index_plan_bytes() const { return weights_.column_plan_bytes(); }

}  // namespace sparsegemm
