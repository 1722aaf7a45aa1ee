#include "core/csr_matrix.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <stdexcept>
#include <string>
#include <type_traits>

namespace sparsegemm {

void check_dimensions(int64_t rows, int64_t cols) {
  if (rows < 0 || cols < 0)
    throw std::invalid_argument("shape must be non-negative, got (" + std::to_string(rows) + ", " +
                                std::to_string(cols) + ")");
  if (rows > kMaxDimension || cols > kMaxDimension)
    throw std::invalid_argument(
        "each dimension must be below 2^31 (column indices are 32-bit), got (" +
        std::to_string(rows) + ", " + std::to_string(cols) + ")");
}

void throw_pattern_only() {
  throw std::invalid_argument(
      "this matrix holds only a sparsity pattern, no values; pass values= to the product");
}

namespace {

template <typename IndptrT>
void validate_impl(int64_t rows, int64_t cols, const IndptrT* indptr, int64_t indptr_len,
                   const index_t* indices, int64_t indices_len, int64_t values_len) {
  check_dimensions(rows, cols);
  if (indptr_len != rows + 1)
    throw std::invalid_argument("indptr must have rows + 1 = " + std::to_string(rows + 1) +
                                " entries, got " + std::to_string(indptr_len));
  if (indices_len != values_len)
    throw std::invalid_argument("indices and data must have the same length, got " +
                                std::to_string(indices_len) + " and " + std::to_string(values_len));
  if (indptr[0] != 0)
    throw std::invalid_argument("indptr[0] must be 0, got " + std::to_string(indptr[0]));
  if (static_cast<int64_t>(indptr[rows]) != indices_len)
    throw std::invalid_argument("indptr[-1] must equal the number of stored entries (" +
                                std::to_string(indices_len) + "), got " +
                                std::to_string(indptr[rows]));
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t begin = indptr[r], end = indptr[r + 1];
    if (end < begin)
      throw std::invalid_argument("indptr must be non-decreasing, but indptr[" +
                                  std::to_string(r + 1) + "] = " + std::to_string(end) +
                                  " < indptr[" + std::to_string(r) +
                                  "] = " + std::to_string(begin));
    if (end > indices_len)
      throw std::invalid_argument("indptr[" + std::to_string(r + 1) + "] = " + std::to_string(end) +
                                  " exceeds the number of stored entries " +
                                  std::to_string(indices_len));
    int64_t previous = -1;
    for (int64_t j = begin; j < end; ++j) {
      const int64_t c = indices[j];
      if (c < 0 || c >= cols)
        throw std::invalid_argument("column index " + std::to_string(c) + " at position " +
                                    std::to_string(j) + " (row " + std::to_string(r) +
                                    ") is out of range [0, " + std::to_string(cols) + ")");
      if (c <= previous)
        throw std::invalid_argument(
            "column indices must be sorted and unique within each row; row " + std::to_string(r) +
            " has " + std::to_string(previous) + " followed by " + std::to_string(c) +
            " (call sum_duplicates()/sort_indices() on scipy input)");
      previous = c;
    }
  }
}

}  // namespace

void validate_csr_structure(int64_t rows, int64_t cols, const offset_t* indptr, int64_t indptr_len,
                            const index_t* indices, int64_t indices_len, int64_t values_len) {
  validate_impl(rows, cols, indptr, indptr_len, indices, indices_len, values_len);
}

void validate_csr_structure(int64_t rows, int64_t cols, const int32_t* indptr, int64_t indptr_len,
                            const index_t* indices, int64_t indices_len, int64_t values_len) {
  validate_impl(rows, cols, indptr, indptr_len, indices, indices_len, values_len);
}

template <typename T>
template <typename IndptrT>
CsrMatrix<T> CsrMatrix<T>::copy_pattern(int64_t rows, int64_t cols, const IndptrT* indptr,
                                        int64_t indptr_len, const index_t* indices,
                                        int64_t indices_len) {
  CsrMatrix m;
  m.rows_ = rows;
  m.cols_ = cols;
  m.has_values_ = false;
  Pattern& pattern = m.reset_pattern();
  pattern.indptr.assign(indptr, indptr + indptr_len);
  if (m.compact_indices())
    pattern.indices16.assign(indices, indices + indices_len);  // validated: every index < cols
  else
    pattern.indices.assign(indices, indices + indices_len);
  return m;
}

template <typename T>
template <typename IndptrT>
CsrMatrix<T> CsrMatrix<T>::from_arrays(int64_t rows, int64_t cols, const IndptrT* indptr,
                                       int64_t indptr_len, const index_t* indices,
                                       int64_t indices_len, const T* values, int64_t values_len) {
  validate_csr_structure(rows, cols, indptr, indptr_len, indices, indices_len, values_len);
  CsrMatrix m = copy_pattern(rows, cols, indptr, indptr_len, indices, indices_len);
  m.has_values_ = true;
  m.values_.assign(values, values + values_len);
  return m;
}

template <typename T>
template <typename IndptrT>
CsrMatrix<T> CsrMatrix<T>::pattern_from_arrays(int64_t rows, int64_t cols, const IndptrT* indptr,
                                               int64_t indptr_len, const index_t* indices,
                                               int64_t indices_len) {
  validate_csr_structure(rows, cols, indptr, indptr_len, indices, indices_len, indices_len);
  return copy_pattern(rows, cols, indptr, indptr_len, indices, indices_len);
}

template <typename T>
CsrMatrix<T> CsrMatrix<T>::from_dense(int64_t rows, int64_t cols, const compute_t<T>* dense,
                                      int64_t row_stride, int64_t col_stride, double threshold) {
  using C = compute_t<T>;
  check_dimensions(rows, cols);
  CsrMatrix m;
  m.rows_ = rows;
  m.cols_ = cols;
  Pattern& pattern = m.reset_pattern();
  const bool compact = m.compact_indices();
  std::vector<offset_t>& m_indptr = pattern.indptr;
  m_indptr.resize(rows + 1);
  m_indptr[0] = 0;
  // Count first so the arrays are allocated once.
  int64_t total = 0;
  for (int64_t r = 0; r < rows; ++r) {
    const C* row = dense + r * row_stride;
    for (int64_t c = 0; c < cols; ++c) {
      const C a = StoredValue<T>::rounded(row[c * col_stride]);  // what rounds to 0 is not kept
      total += !(std::fabs(static_cast<double>(a)) <= threshold);
    }
  }
  pattern.resize_indices(compact, total);
  m.values_.resize(total);
  int64_t k = 0;
  for (int64_t r = 0; r < rows; ++r) {
    const C* row = dense + r * row_stride;
    for (int64_t c = 0; c < cols; ++c) {
      const C a = StoredValue<T>::rounded(row[c * col_stride]);
      if (!(std::fabs(static_cast<double>(a)) <= threshold)) {
        pattern.set_index(compact, k, c);
        m.values_[k] = StoredValue<T>::narrow(a);
        ++k;
      }
    }
    m_indptr[r + 1] = k;
  }
  return m;
}

template <typename T>
void CsrMatrix<T>::to_dense(compute_t<T>* out) const {
  const LargeArray<T>& vals = values();
  std::memset(out, 0, sizeof(*out) * rows_ * cols_);
  const std::vector<offset_t>& ptr = indptr();
  for (int64_t r = 0; r < rows_; ++r)
    for (int64_t j = ptr[r]; j < ptr[r + 1]; ++j)
      out[r * cols_ + column(j)] = StoredValue<T>::widen(vals[j]);
}

template <typename T>
CsrMatrix<T> CsrMatrix<T>::transposed(int64_t* permutation) const {
  const std::vector<offset_t>& ptr = indptr();
  CsrMatrix t;
  t.rows_ = cols_;
  t.cols_ = rows_;
  t.has_values_ = has_values_;
  Pattern& pattern = t.reset_pattern();
  const bool compact = t.compact_indices();
  std::vector<offset_t>& t_indptr = pattern.indptr;
  t_indptr.assign(cols_ + 1, 0);
  for (int64_t j = 0; j < nnz(); ++j) ++t_indptr[column(j) + 1];
  for (int64_t c = 0; c < cols_; ++c) t_indptr[c + 1] += t_indptr[c];
  pattern.resize_indices(compact, nnz());
  t.values_.resize(values_.size());
  std::vector<offset_t> next(t_indptr.begin(), t_indptr.end() - 1);
  // Visiting rows in order keeps each column's entries sorted by row.
  for (int64_t r = 0; r < rows_; ++r)
    for (int64_t j = ptr[r]; j < ptr[r + 1]; ++j) {
      const int64_t dst = next[column(j)]++;
      pattern.set_index(compact, dst, r);
      if (has_values_) t.values_[dst] = values_[j];
      if (permutation != nullptr) permutation[dst] = j;
    }
  return t;
}

template <typename T>
std::vector<index_t> CsrMatrix<T>::column_indices() const {
  if (!compact_indices())
    return std::vector<index_t>(pattern_->indices.begin(), pattern_->indices.end());
  return std::vector<index_t>(pattern_->indices16.begin(), pattern_->indices16.end());
}

template <typename T>
const offset_t* CsrMatrix<T>::column_chunk_bounds(int64_t chunk_cols) const {
  if (chunk_cols <= 0) throw std::invalid_argument("column_chunk_bounds: chunk_cols must be > 0");
  const Pattern& pattern = *pattern_;
  std::lock_guard<std::mutex> lock(pattern.chunk_bounds_mutex);
  std::vector<offset_t>& bounds = pattern.chunk_bounds[chunk_cols];
  if (!bounds.empty()) return bounds.data();
  const int64_t chunks = (cols_ + chunk_cols - 1) / chunk_cols;
  bounds.resize(static_cast<size_t>(rows_ * (chunks + 1) + 1));  // + 1: never empty when rows_ == 0
  for (int64_t r = 0; r < rows_; ++r) {
    offset_t j = pattern.indptr[r];
    const offset_t end = pattern.indptr[r + 1];
    offset_t* row_bounds = bounds.data() + r * (chunks + 1);
    for (int64_t k = 0; k < chunks; ++k) {
      row_bounds[k] = j;
      const int64_t chunk_end = (k + 1) * chunk_cols;
      while (j < end && column(j) < chunk_end) ++j;
    }
    row_bounds[chunks] = end;
  }
  return bounds.data();
}

namespace {

// Calls copy(from, to, count) for each segment of a CSR matrix with these chunk
// bounds, moving it from CSR order to chunk order (CsrMatrix::chunk_order),
// and records where each segment starts in segment_start (rows * chunks + 1).
template <typename Copy>
void for_segments_in_chunk_order(const std::vector<offset_t>& indptr, int64_t rows, int64_t chunks,
                                 const offset_t* bounds, offset_t* segment_start,
                                 const Copy& copy) {
  offset_t next = 0;
  for_row_blocks(indptr.data(), 0, rows, kChunkRowBlockNnz, [&](int64_t r0, int64_t r1) {
    for (int64_t k = 0; k < chunks; ++k)
      for (int64_t r = r0; r < r1; ++r) {
        const offset_t* row_bounds = bounds + r * (chunks + 1);
        const offset_t count = row_bounds[k + 1] - row_bounds[k];
        if (segment_start != nullptr) segment_start[r * chunks + k] = next;
        copy(row_bounds[k], next, count);
        next += count;
      }
  });
  if (segment_start != nullptr) segment_start[rows * chunks] = next;
}

}  // namespace

template <typename T>
template <typename OnRegion, typename OnIndex, typename OnValue>
void CsrMatrix<T>::for_entries_by_quads(int64_t chunk_cols, const offset_t* bounds,
                                        const OnRegion& on_region, const OnIndex& on_index,
                                        const OnValue& on_value) const {
  const int64_t chunks = (cols_ + chunk_cols - 1) / chunk_cols;
  // Per column of the chunk: the subset of the quad's rows storing it, and where.
  std::vector<uint8_t> subset(static_cast<size_t>(chunk_cols));
  std::vector<std::array<offset_t, kQuadRows>> from(static_cast<size_t>(chunk_cols));
  offset_t next_index = 0, next_value = 0;
  const auto walk = [&](const auto* indices) {
    for_quad_blocks(pattern_->indptr.data(), 0, rows_, kQuadBlockNnz, [&](int64_t r0, int64_t r1) {
      for (int64_t k = 0; k < chunks; ++k) {
        const int64_t first_col = k * chunk_cols;
        const int64_t width = std::min(chunk_cols, cols_ - first_col);
        for (int64_t q0 = r0; q0 < r1; q0 += kQuadRows) {
          for (int64_t i = 0; i < kQuadRows && q0 + i < rows_; ++i) {
            const offset_t* row_bounds = bounds + (q0 + i) * (chunks + 1);
            for (offset_t j = row_bounds[k]; j < row_bounds[k + 1]; ++j) {
              const int64_t c = indices[j] - first_col;
              subset[c] |= static_cast<uint8_t>(1 << i);
              from[c][i] = j;
            }
          }
          QuadRegion region{next_index, next_value, {}};
          for (int64_t c = 0; c < width; ++c) ++region.columns[subset[c]];
          region.columns[0] = 0;
          // Where each subset's next column index and values go (subsets in order).
          offset_t index_at[kQuadSubsets], value_at[kQuadSubsets];
          index_at[0] = next_index;
          value_at[0] = next_value;
          for (int m = 1; m < kQuadSubsets; ++m) {
            index_at[m] = index_at[m - 1] + region.columns[m - 1];
            value_at[m] = value_at[m - 1] + region.columns[m - 1] * subset_rows(m - 1);
          }
          for (int64_t c = 0; c < width; ++c) {
            const int m = subset[c];
            if (m == 0) continue;
            on_index(first_col + c, index_at[m]++);
            for (int i = 0; i < kQuadRows; ++i)
              if (m & (1 << i)) on_value(from[c][i], value_at[m]++);
            subset[c] = 0;
          }
          next_index = index_at[kQuadSubsets - 1];
          next_value = value_at[kQuadSubsets - 1];
          on_region(q0 / kQuadRows * chunks + k, region);
        }
      }
    });
  };
  if (compact_indices())
    walk(pattern_->indices16.data());
  else
    walk(pattern_->indices.data());
  const int64_t quads = (rows_ + kQuadRows - 1) / kQuadRows;
  on_region(quads * chunks, QuadRegion{next_index, next_value, {}});
}

namespace {

// Throws std::invalid_argument for a layout chunk order cannot take.
template <typename T>
void check_chunk_layout(ChunkLayout layout) {
  if (layout.columns <= 0) throw std::invalid_argument("chunk_order: chunk columns must be > 0");
  // bfloat16 values are widened per row segment (csr_kernels.inl), which quads would break up.
  if (layout.row_quads && (std::is_same_v<T, bfloat16_t> || layout.columns >= (1 << 16)))
    throw std::invalid_argument(
        "chunk_order: row quads need float or double values and chunks "
        "of fewer than 65536 columns");
}

}  // namespace

template <typename T>
const typename CsrMatrix<T>::ChunkOrder& CsrMatrix<T>::chunk_order(ChunkLayout layout) const {
  check_chunk_layout<T>(layout);
  const int64_t chunk_cols = layout.columns;
  const offset_t* bounds = column_chunk_bounds(chunk_cols);
  const Pattern& pattern = *pattern_;
  std::lock_guard<std::mutex> lock(pattern.chunk_bounds_mutex);
  ChunkOrder& order = pattern.chunk_orders[layout.key()];
  if (order.built) return order;
  const int64_t chunks = (cols_ + chunk_cols - 1) / chunk_cols;
  const bool compact = compact_indices();
  order.resize_indices(compact, nnz());
  order.row_quads = layout.row_quads;
  if (order.row_quads) {
    const int64_t quads = (rows_ + kQuadRows - 1) / kQuadRows;
    order.quad_regions.resize(static_cast<size_t>(quads * chunks + 1));
    for_entries_by_quads(
        chunk_cols, bounds,
        [&](int64_t number, const QuadRegion& region) { order.quad_regions[number] = region; },
        [&](int64_t col, offset_t to) { order.set_index(compact, to, col); },
        [](offset_t, offset_t) {});
  } else {
    order.segment_start.resize(static_cast<size_t>(rows_ * chunks + 1));
    for_segments_in_chunk_order(
        pattern.indptr, rows_, chunks, bounds, order.segment_start.data(),
        [&](offset_t from, offset_t to, offset_t count) {
          if (compact)
            std::copy_n(pattern.indices16.begin() + from, count, order.indices16.begin() + to);
          else
            std::copy_n(pattern.indices.begin() + from, count, order.indices.begin() + to);
        });
  }
  order.built = true;
  return order;
}

template <typename T>
void CsrMatrix<T>::to_chunk_order(ChunkLayout layout, const T* values, T* out) const {
  check_chunk_layout<T>(layout);
  const int64_t chunk_cols = layout.columns;
  if (layout.row_quads) {
    for_entries_by_quads(
        chunk_cols, column_chunk_bounds(chunk_cols), [](int64_t, const QuadRegion&) {},
        [](int64_t, offset_t) {}, [&](offset_t from, offset_t to) { out[to] = values[from]; });
    return;
  }
  const int64_t chunks = (cols_ + chunk_cols - 1) / chunk_cols;
  for_segments_in_chunk_order(pattern_->indptr, rows_, chunks, column_chunk_bounds(chunk_cols),
                              nullptr, [&](offset_t from, offset_t to, offset_t count) {
                                std::copy_n(values + from, count, out + to);
                              });
}

template <typename T>
const T* CsrMatrix<T>::own_values_in_chunk_order(ChunkLayout layout) const {
  const T* own = values().data();  // throws for a pattern-only matrix
  std::lock_guard<std::mutex> lock(chunk_ordered_values_->mutex);
  LargeArray<T>& ordered = chunk_ordered_values_->by_layout[layout.key()];
  if (ordered.size() != static_cast<size_t>(nnz())) {
    ordered.resize(static_cast<size_t>(nnz()));
    to_chunk_order(layout, own, ordered.data());
  }
  return ordered.data();
}

template <typename T>
const index_t* CsrMatrix<T>::tap_offsets(int64_t kernel_h, int64_t kernel_w, int64_t col_step,
                                         int64_t row_stride) const {
  if (kernel_h <= 0 || kernel_w <= 0 || col_step < 0 || row_stride < 0 ||
      cols_ % (kernel_h * kernel_w) != 0)
    throw std::invalid_argument("tap_offsets: the columns are not channels x kernel_h x kernel_w");
  const int64_t channel_rows = cols_ / kernel_w;  // one panel row per (ci, kh)
  if (channel_rows > 0 &&
      (channel_rows - 1) * row_stride + (kernel_w - 1) * col_step > INT32_MAX - row_stride)
    throw std::overflow_error("tap_offsets: offsets past 32 bits");
  const Pattern& pattern = *pattern_;
  std::lock_guard<std::mutex> lock(pattern.chunk_bounds_mutex);
  std::vector<index_t>& offsets = pattern.tap_offsets[{kernel_h, kernel_w, col_step, row_stride}];
  if (!offsets.empty() || nnz() == 0) return offsets.data();
  offsets.resize(static_cast<size_t>(nnz()));
  for (int64_t j = 0; j < nnz(); ++j) {
    const int64_t col = column(j);  // (ci * kernel_h + kh) * kernel_w + kw
    offsets[j] = static_cast<index_t>(col / kernel_w * row_stride + col % kernel_w * col_step);
  }
  return offsets.data();
}

template <typename T>
CsrView<T> CsrMatrix<T>::chunk_ordered_view(ChunkLayout layout, const T* values) const {
  CsrView<T> v = view();
  v.chunk_cols = layout.columns;
  v.chunk_bounds = column_chunk_bounds(layout.columns);
  if (values != nullptr) {
    const ChunkOrder& order = chunk_order(layout);
    if (order.row_quads)
      v.quad_regions = order.quad_regions.data();
    else
      v.segment_start = order.segment_start.data();
    v.indices = compact_indices() ? nullptr : order.indices.data();
    v.indices16 = compact_indices() ? order.indices16.data() : nullptr;
    v.values = values;
  }
  return v;
}

template <typename T>
CsrMatrix<T> CsrMatrix<T>::with_values(const T* values, int64_t values_len) const {
  if (values_len != nnz())
    throw std::invalid_argument("values must have nnz = " + std::to_string(nnz()) +
                                " entries, got " + std::to_string(values_len));
  CsrMatrix m;
  m.rows_ = rows_;
  m.cols_ = cols_;
  m.pattern_ = pattern_;  // shared, not copied
  m.has_values_ = true;
  m.values_.assign(values, values + values_len);
  return m;
}

#define SPARSEGEMM_INSTANTIATE_CSR(T)                                                         \
  template class CsrMatrix<T>;                                                                \
  template CsrMatrix<T> CsrMatrix<T>::from_arrays<int32_t>(                                   \
      int64_t, int64_t, const int32_t*, int64_t, const index_t*, int64_t, const T*, int64_t); \
  template CsrMatrix<T> CsrMatrix<T>::from_arrays<int64_t>(                                   \
      int64_t, int64_t, const int64_t*, int64_t, const index_t*, int64_t, const T*, int64_t); \
  template CsrMatrix<T> CsrMatrix<T>::pattern_from_arrays<int32_t>(                           \
      int64_t, int64_t, const int32_t*, int64_t, const index_t*, int64_t);                    \
  template CsrMatrix<T> CsrMatrix<T>::pattern_from_arrays<int64_t>(                           \
      int64_t, int64_t, const int64_t*, int64_t, const index_t*, int64_t);
SPARSEGEMM_INSTANTIATE_CSR(float)
SPARSEGEMM_INSTANTIATE_CSR(double)
SPARSEGEMM_INSTANTIATE_CSR(bfloat16_t)
#undef SPARSEGEMM_INSTANTIATE_CSR

}  // namespace sparsegemm
