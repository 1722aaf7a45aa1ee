#include "core/bitmap_matrix.h"

#include <cmath>
#include <cstring>
#include <stdexcept>
#include <string>

#include "core/parallel.h"

namespace sparsegemm {

namespace {

// Bits of a row's last word that lie past the last column.
uint64_t tail_bits_mask(int64_t cols) {
  const int64_t used = cols % kBitmapWordBits;
  return used == 0 ? 0 : ~((uint64_t(1) << used) - 1);
}

}  // namespace

template <typename T>
int64_t BitmapMatrix<T>::count_offsets() {
  const int64_t wpr = words_per_row();
  offsets_.resize(rows_ + 1);
  offsets_[0] = 0;
  int64_t total = 0;
  for (int64_t r = 0; r < rows_; ++r) {
    for (int64_t w = 0; w < wpr; ++w) total += __builtin_popcountll(bits_[r * wpr + w]);
    offsets_[r + 1] = total;
  }
  return total;
}

template <typename T>
BitmapMatrix<T> BitmapMatrix<T>::pattern_from_arrays(int64_t rows, int64_t cols,
                                                     const uint64_t* bits, int64_t bits_len) {
  check_dimensions(rows, cols);
  const int64_t wpr = bitmap_words_per_row(cols);
  if (bits_len != rows * wpr)
    throw std::invalid_argument(
        "bits must have rows * ceil(cols / 64) = " + std::to_string(rows * wpr) + " words, got " +
        std::to_string(bits_len));
  const uint64_t tail = tail_bits_mask(cols);
  if (tail != 0)
    for (int64_t r = 0; r < rows; ++r)
      if ((bits[r * wpr + wpr - 1] & tail) != 0)
        throw std::invalid_argument("row " + std::to_string(r) +
                                    " has a bit set past the last column (" + std::to_string(cols) +
                                    " columns): bits past cols must be zero");
  BitmapMatrix m;
  m.rows_ = rows;
  m.cols_ = cols;
  m.has_values_ = false;
  m.bits_.assign(bits, bits + bits_len);
  m.count_offsets();
  return m;
}

template <typename T>
BitmapMatrix<T> BitmapMatrix<T>::from_arrays(int64_t rows, int64_t cols, const uint64_t* bits,
                                             int64_t bits_len, const T* values,
                                             int64_t values_len) {
  BitmapMatrix m = pattern_from_arrays(rows, cols, bits, bits_len);
  if (values_len != m.nnz())
    throw std::invalid_argument("data must have one value per set bit (" + std::to_string(m.nnz()) +
                                "), got " + std::to_string(values_len));
  m.has_values_ = true;
  m.values_.assign(values, values + values_len);
  return m;
}

template <typename T>
template <typename IndptrT>
BitmapMatrix<T> BitmapMatrix<T>::from_csr_arrays(int64_t rows, int64_t cols, const IndptrT* indptr,
                                                 int64_t indptr_len, const index_t* indices,
                                                 int64_t indices_len, const T* values,
                                                 int64_t values_len) {
  validate_csr_structure(rows, cols, indptr, indptr_len, indices, indices_len, values_len);
  const int64_t wpr = bitmap_words_per_row(cols);
  BitmapMatrix m;
  m.rows_ = rows;
  m.cols_ = cols;
  m.bits_.assign(rows * wpr, 0);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t j = indptr[r]; j < static_cast<int64_t>(indptr[r + 1]); ++j)
      m.bits_[r * wpr + indices[j] / kBitmapWordBits] |= uint64_t(1)
                                                         << (indices[j] % kBitmapWordBits);
  m.count_offsets();
  // Sorted, unique indices: the CSR order within a row is the bitmap order.
  m.values_.assign(values, values + values_len);
  return m;
}

template <typename T>
BitmapMatrix<T> BitmapMatrix<T>::from_dense(int64_t rows, int64_t cols, const compute_t<T>* dense,
                                            int64_t row_stride, int64_t col_stride,
                                            double threshold) {
  using Stored = StoredValue<T>;
  check_dimensions(rows, cols);
  const int64_t wpr = bitmap_words_per_row(cols);
  BitmapMatrix m;
  m.rows_ = rows;
  m.cols_ = cols;
  m.bits_.assign(rows * wpr, 0);
  const auto kept = [threshold](T a) {
    return !(std::fabs(static_cast<double>(Stored::widen(a))) <= threshold);
  };
  const auto entry = [&](int64_t r, int64_t c) {
    return Stored::narrow(dense[r * row_stride + c * col_stride]);
  };
  for (int64_t r = 0; r < rows; ++r) {
    uint64_t* words = m.bits_.data() + r * wpr;
    for (int64_t c = 0; c < cols; ++c)
      if (kept(entry(r, c))) words[c / kBitmapWordBits] |= uint64_t(1) << (c % kBitmapWordBits);
  }
  m.values_.resize(m.count_offsets());
  int64_t k = 0;
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c) {
      const T a = entry(r, c);
      if (kept(a)) m.values_[k++] = a;
    }
  return m;
}

template <typename T>
void BitmapMatrix<T>::to_dense(compute_t<T>* out) const {
  const LargeArray<T>& vals = values();
  std::memset(out, 0, sizeof(compute_t<T>) * rows_ * cols_);
  const int64_t wpr = words_per_row();
  int64_t k = 0;
  for (int64_t r = 0; r < rows_; ++r)
    for (int64_t w = 0; w < wpr; ++w)
      for (uint64_t word = bits_[r * wpr + w]; word != 0; word &= word - 1)
        out[r * cols_ + w * kBitmapWordBits + __builtin_ctzll(word)] =
            StoredValue<T>::widen(vals[k++]);
}

template <typename T>
BitmapMatrix<T> BitmapMatrix<T>::with_values(const T* values, int64_t values_len) const {
  if (values_len != nnz())
    throw std::invalid_argument("values must have nnz = " + std::to_string(nnz()) +
                                " entries, got " + std::to_string(values_len));
  BitmapMatrix m;
  m.rows_ = rows_;
  m.cols_ = cols_;
  m.bits_ = bits_;
  m.offsets_ = offsets_;
  m.has_values_ = true;
  m.values_.assign(values, values + values_len);
  m.column_plan_ = column_plan_;  // the same bits, so the same plans
  m.window_plan_ = window_plan_;
  return m;
}

template <typename T>
ColumnIndexPlan ColumnIndexPlan::build(const BitmapView<T>& a, int num_threads) {
  constexpr int64_t kWordsPerGroup = kGroupCols / 64;
  ColumnIndexPlan plan;
  plan.groups_per_row = (a.words_per_row + kWordsPerGroup - 1) / kWordsPerGroup;
  plan.counts.assign(static_cast<size_t>(a.rows * plan.groups_per_row), 0);
  plan.columns.resize(static_cast<size_t>(a.nnz()));
  parallel_ranges(threads_for_pass(num_threads, a.rows * a.words_per_row), a.rows,
                  [&](int64_t r0, int64_t r1) {
                    for (int64_t r = r0; r < r1; ++r) {
                      const uint64_t* words = a.bits + r * a.words_per_row;
                      uint8_t* column = plan.columns.data() + a.offsets[r];
                      for (int64_t w = 0; w < a.words_per_row; ++w) {
                        const int64_t group = w / kWordsPerGroup;
                        const int base = static_cast<int>(w % kWordsPerGroup) * 64;
                        for (uint64_t bits = words[w]; bits != 0; bits &= bits - 1)
                          *column++ = static_cast<uint8_t>(base + __builtin_ctzll(bits));
                        plan.counts[static_cast<size_t>(r * plan.groups_per_row + group)] +=
                            static_cast<uint16_t>(__builtin_popcountll(words[w]));
                      }
                    }
                  });
  return plan;
}

namespace {

// Cuts the stored columns of one row (nwords bitmap words) into windows:
// window(first_column, weights) for each, weight(column - first_column) for
// each stored weight, in order.
template <typename Window, typename Weight>
void cut_windows(const uint64_t* words, int64_t nwords, const Window& window,
                 const Weight& weight) {
  int64_t first = 0;
  int weights = 0;
  for (int64_t w = 0; w < nwords; ++w)
    for (uint64_t bits = words[w]; bits != 0; bits &= bits - 1) {
      const int64_t column = w * kBitmapWordBits + __builtin_ctzll(bits);
      if (weights == ColumnWindowPlan::kWindowWeights ||
          (weights > 0 && column - first >= ColumnWindowPlan::kWindowSpan)) {
        window(first, weights);
        weights = 0;
      }
      if (weights == 0) first = column;
      weight(static_cast<uint8_t>(column - first));
      ++weights;
    }
  if (weights > 0) window(first, weights);
}

}  // namespace

template <typename T>
ColumnWindowPlan ColumnWindowPlan::build(const BitmapView<T>& a, int num_threads) {
  ColumnWindowPlan plan;
  plan.row_windows.assign(static_cast<size_t>(a.rows + 1), 0);
  plan.offsets.resize(static_cast<size_t>(a.nnz()));
  const int threads = threads_for_pass(num_threads, a.rows * a.words_per_row);
  const auto words_of = [&](int64_t r) { return a.bits + r * a.words_per_row; };
  parallel_ranges(threads, a.rows, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      int64_t count = 0;
      cut_windows(words_of(r), a.words_per_row, [&](int64_t, int) { ++count; }, [](uint8_t) {});
      plan.row_windows[static_cast<size_t>(r + 1)] = count;
    }
  });
  for (int64_t r = 0; r < a.rows; ++r)
    plan.row_windows[static_cast<size_t>(r + 1)] += plan.row_windows[static_cast<size_t>(r)];
  plan.windows.resize(static_cast<size_t>(plan.row_windows.back()));
  parallel_ranges(threads, a.rows, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      uint32_t* window = plan.windows.data() + plan.row_windows[static_cast<size_t>(r)];
      uint8_t* offset = plan.offsets.data() + a.offsets[r];
      cut_windows(
          words_of(r), a.words_per_row,
          [&](int64_t first, int weights) {
            *window++ = static_cast<uint32_t>(first) << kCountBits | static_cast<uint32_t>(weights);
          },
          [&](uint8_t column_offset) { *offset++ = column_offset; });
    }
  });
  return plan;
}

#define SPARSEGEMM_INSTANTIATE_BITMAP(T)                                                      \
  template class BitmapMatrix<T>;                                                             \
  template BitmapMatrix<T> BitmapMatrix<T>::from_csr_arrays<int32_t>(                         \
      int64_t, int64_t, const int32_t*, int64_t, const index_t*, int64_t, const T*, int64_t); \
  template BitmapMatrix<T> BitmapMatrix<T>::from_csr_arrays<int64_t>(                         \
      int64_t, int64_t, const int64_t*, int64_t, const index_t*, int64_t, const T*, int64_t); \
  template ColumnIndexPlan ColumnIndexPlan::build<T>(const BitmapView<T>&, int);              \
  template ColumnWindowPlan ColumnWindowPlan::build<T>(const BitmapView<T>&, int);
SPARSEGEMM_INSTANTIATE_BITMAP(float)
SPARSEGEMM_INSTANTIATE_BITMAP(double)
SPARSEGEMM_INSTANTIATE_BITMAP(bfloat16_t)
SPARSEGEMM_INSTANTIATE_BITMAP(int8_t)  // the int8 family's storage (core/int8_bitmap_matrix.h)
#undef SPARSEGEMM_INSTANTIATE_BITMAP

}  // namespace sparsegemm
