#include "core/int8_bitmap_matrix.h"

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <string>
#include <utility>

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
  const std::vector<int8_t>& values = weights_.values();
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
  const std::vector<float>& values = kept.values();
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

}  // namespace sparsegemm
