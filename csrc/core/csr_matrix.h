// Compressed sparse row storage.
//
// CsrMatrix owns its arrays and is only constructed through validating
// factories, so a kernel never sees malformed indices. CsrView is the plain
// pointer bundle that kernels take.
#pragma once

#include <cstdint>
#include <vector>

namespace sparsegemm {

using index_t = int32_t;   // column indices: dimensions must be < 2^31
using offset_t = int64_t;  // row pointers: more than 2^31 nonzeros are allowed

template <typename T>
struct CsrView {
  int64_t rows = 0;
  int64_t cols = 0;
  const offset_t* indptr = nullptr;  // rows + 1 entries, indptr[0] == 0, non-decreasing
  const index_t* indices = nullptr;  // indptr[rows] entries, strictly increasing within a row
  const T* values = nullptr;         // indptr[rows] entries
  int64_t nnz() const { return indptr[rows]; }
};

// Throws std::invalid_argument naming the first defect found. Checks lengths,
// indptr[0] == 0, monotone indptr, indptr[rows] == nnz, and that column indices
// are in [0, cols) and strictly increasing within each row.
void validate_csr_structure(int64_t rows, int64_t cols, const offset_t* indptr, int64_t indptr_len,
                            const index_t* indices, int64_t indices_len, int64_t values_len);

// Same checks for 32-bit row pointers (scipy's default), without a copy.
void validate_csr_structure(int64_t rows, int64_t cols, const int32_t* indptr, int64_t indptr_len,
                            const index_t* indices, int64_t indices_len, int64_t values_len);

template <typename T>
class CsrMatrix {
 public:
  // Copies and validates. IndptrT is int32_t or int64_t.
  template <typename IndptrT>
  static CsrMatrix from_arrays(int64_t rows, int64_t cols, const IndptrT* indptr, int64_t indptr_len,
                               const index_t* indices, int64_t indices_len, const T* values,
                               int64_t values_len);

  // Keeps entries with |a| > threshold (NaN is kept: it is not provably zero).
  // The threshold is a double and compared exactly: rounding it to float would
  // change which float entries pass (float(0.1) > 0.1, but not > float(0.1)).
  // `dense` is rows x cols with element (i, j) at dense[i * row_stride + j * col_stride].
  static CsrMatrix from_dense(int64_t rows, int64_t cols, const T* dense, int64_t row_stride,
                              int64_t col_stride, double threshold);

  int64_t rows() const { return rows_; }
  int64_t cols() const { return cols_; }
  int64_t nnz() const { return static_cast<int64_t>(indices_.size()); }
  const std::vector<offset_t>& indptr() const { return indptr_; }
  const std::vector<index_t>& indices() const { return indices_; }
  const std::vector<T>& values() const { return values_; }
  CsrView<T> view() const { return {rows_, cols_, indptr_.data(), indices_.data(), values_.data()}; }

  // out is rows x cols, C order, and is fully overwritten.
  void to_dense(T* out) const;

 private:
  CsrMatrix() = default;
  int64_t rows_ = 0;
  int64_t cols_ = 0;
  std::vector<offset_t> indptr_;
  std::vector<index_t> indices_;
  std::vector<T> values_;
};

// Largest dimension a CSR matrix may have: column indices are 32-bit.
constexpr int64_t kMaxDimension = INT32_MAX;

void check_dimensions(int64_t rows, int64_t cols);

}  // namespace sparsegemm
