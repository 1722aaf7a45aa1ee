#include "core/bsr_matrix.h"

#include <cmath>
#include <algorithm>
#include <cstring>
#include <stdexcept>
#include <string>

namespace sparsegemm {

namespace {

void check_block_shape(int block_r, int block_c) {
  if (block_r < 1 || block_c < 1 || block_r > kMaxBlockEdge || block_c > kMaxBlockEdge)
    throw std::invalid_argument("blocksize must be in [1, " + std::to_string(kMaxBlockEdge) +
                                "] along each edge, got (" + std::to_string(block_r) + ", " +
                                std::to_string(block_c) + ")");
}

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

}  // namespace

template <typename T>
template <typename IndptrT>
BsrMatrix<T> BsrMatrix<T>::pattern_from_arrays(int64_t rows, int64_t cols, int block_r, int block_c,
                                               const IndptrT* indptr, int64_t indptr_len,
                                               const index_t* indices, int64_t indices_len) {
  check_dimensions(rows, cols);
  check_block_shape(block_r, block_c);
  const int64_t block_rows = ceil_div(rows, block_r), block_cols = ceil_div(cols, block_c);
  // The block structure is a CSR pattern over (block_rows x block_cols).
  try {
    validate_csr_structure(block_rows, block_cols, indptr, indptr_len, indices, indices_len,
                           indices_len);
  } catch (const std::invalid_argument& e) {
    throw std::invalid_argument(
        std::string("invalid BSR block structure (indices are block columns, "
                    "rows are block rows): ") +
        e.what());
  }
  BsrMatrix m;
  m.rows_ = rows;
  m.cols_ = cols;
  m.block_r_ = block_r;
  m.block_c_ = block_c;
  m.has_values_ = false;
  m.indptr_.assign(indptr, indptr + indptr_len);
  m.indices_.assign(indices, indices + indices_len);
  return m;
}

template <typename T>
template <typename IndptrT>
BsrMatrix<T> BsrMatrix<T>::from_arrays(int64_t rows, int64_t cols, int block_r, int block_c,
                                       const IndptrT* indptr, int64_t indptr_len,
                                       const index_t* indices, int64_t indices_len, const T* values,
                                       int64_t values_len) {
  BsrMatrix m =
      pattern_from_arrays(rows, cols, block_r, block_c, indptr, indptr_len, indices, indices_len);
  const int64_t block_size = static_cast<int64_t>(block_r) * block_c;
  if (values_len != indices_len * block_size)
    throw std::invalid_argument("data must hold nblocks * R * C = " + std::to_string(indices_len) +
                                " * " + std::to_string(block_size) + " = " +
                                std::to_string(indices_len * block_size) + " values, got " +
                                std::to_string(values_len));
  // Padding outside the logical shape must be zero, so that a stored block
  // means the same whatever shape a reader pads it to.
  for (int64_t br = 0; br < m.block_rows(); ++br)
    for (int64_t j = indptr[br]; j < static_cast<int64_t>(indptr[br + 1]); ++j)
      for (int i = 0; i < block_r; ++i)
        for (int c = 0; c < block_c; ++c) {
          const int64_t row = br * block_r + i,
                        col = static_cast<int64_t>(indices[j]) * block_c + c;
          if ((row >= rows || col >= cols) &&
              StoredValue<T>::widen(values[j * block_size + i * block_c + c]) != 0)
            throw std::invalid_argument("block " + std::to_string(j) + " has a nonzero value at (" +
                                        std::to_string(row) + ", " + std::to_string(col) +
                                        "), outside the logical shape (" + std::to_string(rows) +
                                        ", " + std::to_string(cols) +
                                        "); padding entries must be zero");
        }
  m.has_values_ = true;
  m.values_.assign(values, values + values_len);
  return m;
}

template <typename T>
BsrMatrix<T> BsrMatrix<T>::from_dense(int64_t rows, int64_t cols, const compute_t<T>* dense,
                                      int64_t row_stride, int64_t col_stride, int block_r,
                                      int block_c, double threshold) {
  check_dimensions(rows, cols);
  check_block_shape(block_r, block_c);
  const int64_t block_rows = ceil_div(rows, block_r), block_cols = ceil_div(cols, block_c);
  const int64_t block_size = static_cast<int64_t>(block_r) * block_c;
  // Entries as stored (bfloat16: rounded), so a block of what rounds to zero is not kept.
  const auto element = [&](int64_t i, int64_t j) {
    return StoredValue<T>::rounded(dense[i * row_stride + j * col_stride]);
  };
  const auto kept = [&](int64_t br, int64_t bc) {
    for (int64_t i = br * block_r; i < std::min(rows, (br + 1) * block_r); ++i)
      for (int64_t j = bc * block_c; j < std::min(cols, (bc + 1) * block_c); ++j)
        if (!(std::fabs(static_cast<double>(element(i, j))) <= threshold)) return true;
    return false;
  };
  BsrMatrix m;
  m.rows_ = rows;
  m.cols_ = cols;
  m.block_r_ = block_r;
  m.block_c_ = block_c;
  m.indptr_.resize(block_rows + 1);
  m.indptr_[0] = 0;
  for (int64_t br = 0; br < block_rows; ++br) {
    for (int64_t bc = 0; bc < block_cols; ++bc)
      if (kept(br, bc)) m.indices_.push_back(static_cast<index_t>(bc));
    m.indptr_[br + 1] = static_cast<offset_t>(m.indices_.size());
  }
  m.values_.assign(m.indices_.size() * block_size, T{});
  for (int64_t br = 0; br < block_rows; ++br)
    for (int64_t j = m.indptr_[br]; j < m.indptr_[br + 1]; ++j) {
      const int64_t bc = m.indices_[j];
      T* block = m.values_.data() + j * block_size;
      for (int64_t i = br * block_r; i < std::min(rows, (br + 1) * block_r); ++i)
        for (int64_t c = bc * block_c; c < std::min(cols, (bc + 1) * block_c); ++c)
          block[(i - br * block_r) * block_c + (c - bc * block_c)] =
              StoredValue<T>::narrow(element(i, c));
    }
  return m;
}

template <typename T>
BsrMatrix<T> BsrMatrix<T>::transposed(int64_t* permutation) const {
  BsrMatrix t;
  t.rows_ = cols_;
  t.cols_ = rows_;
  t.block_r_ = block_c_;
  t.block_c_ = block_r_;
  t.has_values_ = has_values_;
  const int64_t t_block_rows = block_cols();
  t.indptr_.assign(t_block_rows + 1, 0);
  for (index_t bc : indices_) ++t.indptr_[bc + 1];
  for (int64_t b = 0; b < t_block_rows; ++b) t.indptr_[b + 1] += t.indptr_[b];
  t.indices_.resize(indices_.size());
  t.values_.resize(values_.size());
  const int64_t block_size = static_cast<int64_t>(block_r_) * block_c_;
  std::vector<offset_t> next(t.indptr_.begin(), t.indptr_.end() - 1);
  // Visiting block rows in order keeps each block column's blocks sorted by row.
  for (int64_t br = 0; br < block_rows(); ++br)
    for (int64_t j = indptr_[br]; j < indptr_[br + 1]; ++j) {
      const int64_t dst = next[indices_[j]]++;
      t.indices_[dst] = static_cast<index_t>(br);
      if (has_values_) {
        const T* block = values_.data() + j * block_size;
        T* t_block = t.values_.data() + dst * block_size;
        for (int i = 0; i < block_r_; ++i)
          for (int c = 0; c < block_c_; ++c) t_block[c * block_r_ + i] = block[i * block_c_ + c];
      }
      if (permutation != nullptr) permutation[dst] = j;
    }
  return t;
}

template <typename T>
void BsrMatrix<T>::to_dense(compute_t<T>* out) const {
  const LargeArray<T>& vals = values();
  std::memset(out, 0, sizeof(*out) * rows_ * cols_);
  const int64_t block_size = static_cast<int64_t>(block_r_) * block_c_;
  for (int64_t br = 0; br < block_rows(); ++br)
    for (int64_t j = indptr_[br]; j < indptr_[br + 1]; ++j) {
      const int64_t bc = indices_[j];
      const T* block = vals.data() + j * block_size;
      for (int64_t i = br * block_r_; i < std::min(rows_, (br + 1) * block_r_); ++i)
        for (int64_t c = bc * block_c_; c < std::min(cols_, (bc + 1) * block_c_); ++c)
          out[i * cols_ + c] =
              StoredValue<T>::widen(block[(i - br * block_r_) * block_c_ + (c - bc * block_c_)]);
    }
}

#define SPARSEGEMM_INSTANTIATE_BSR(T)                                                         \
  template class BsrMatrix<T>;                                                                \
  template BsrMatrix<T> BsrMatrix<T>::from_arrays<int32_t>(                                   \
      int64_t, int64_t, int, int, const int32_t*, int64_t, const index_t*, int64_t, const T*, \
      int64_t);                                                                               \
  template BsrMatrix<T> BsrMatrix<T>::from_arrays<int64_t>(                                   \
      int64_t, int64_t, int, int, const int64_t*, int64_t, const index_t*, int64_t, const T*, \
      int64_t);                                                                               \
  template BsrMatrix<T> BsrMatrix<T>::pattern_from_arrays<int32_t>(                           \
      int64_t, int64_t, int, int, const int32_t*, int64_t, const index_t*, int64_t);          \
  template BsrMatrix<T> BsrMatrix<T>::pattern_from_arrays<int64_t>(                           \
      int64_t, int64_t, int, int, const int64_t*, int64_t, const index_t*, int64_t);
SPARSEGEMM_INSTANTIATE_BSR(float)
SPARSEGEMM_INSTANTIATE_BSR(double)
SPARSEGEMM_INSTANTIATE_BSR(bfloat16_t)
#undef SPARSEGEMM_INSTANTIATE_BSR

}  // namespace sparsegemm
