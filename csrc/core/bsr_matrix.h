// Block compressed sparse row (BSR) storage.
//
// The matrix is cut into R x C blocks; a block row holds the sorted, unique
// block-column indices of its stored blocks, and each stored block keeps all
// R * C values (row-major inside the block), zeros included. The logical shape
// need not divide by the block: the last block row / column is zero-padded in
// storage, and kernels never read or write the dense operands outside the
// logical shape. BsrMatrix owns validated arrays (or only the block structure:
// pattern-only, see core/csr_matrix.h); BsrView is the pointer bundle the
// kernels take.
#pragma once

#include <cstdint>
#include <vector>

#include "core/csr_matrix.h"  // index_t, offset_t, check_dimensions

namespace sparsegemm {

template <typename T>
struct BsrView {
  int64_t rows = 0;  // logical shape
  int64_t cols = 0;
  int block_rows_r = 1;              // R: rows per block
  int block_cols_c = 1;              // C: columns per block
  int64_t block_rows = 0;            // ceil(rows / R)
  int64_t block_cols = 0;            // ceil(cols / C)
  const offset_t* indptr = nullptr;  // block_rows + 1 entries
  const index_t* indices = nullptr;  // block-column indices, strictly increasing per block row
  const T* values = nullptr;  // nblocks * R * C, block-major, row-major in a block; null: pattern
  int64_t nblocks() const { return indptr[block_rows]; }
};

// Largest block edge accepted; blocks are small dense tiles, not panels.
constexpr int kMaxBlockEdge = 64;

template <typename T>
class BsrMatrix {
 public:
  // Copies and validates (throws std::invalid_argument naming the first
  // defect): block shape in [1, kMaxBlockEdge], indptr length and monotonicity,
  // block-column indices in range and strictly increasing per block row,
  // values length == nblocks * R * C, and padding entries (outside the logical
  // shape) exactly zero. IndptrT is int32_t or int64_t.
  template <typename IndptrT>
  static BsrMatrix from_arrays(int64_t rows, int64_t cols, int block_r, int block_c,
                               const IndptrT* indptr, int64_t indptr_len, const index_t* indices,
                               int64_t indices_len, const T* values, int64_t values_len);

  // The same checks of the block structure without values: a pattern-only matrix.
  template <typename IndptrT>
  static BsrMatrix pattern_from_arrays(int64_t rows, int64_t cols, int block_r, int block_c,
                                       const IndptrT* indptr, int64_t indptr_len,
                                       const index_t* indices, int64_t indices_len);

  // Keeps every block holding an entry with |a| > threshold (NaN counts as
  // nonzero). `dense` is rows x cols with element (i, j) at
  // dense[i * row_stride + j * col_stride]. bfloat16: rounded first, tested as rounded.
  static BsrMatrix from_dense(int64_t rows, int64_t cols, const compute_t<T>* dense,
                              int64_t row_stride, int64_t col_stride, int block_r, int block_c,
                              double threshold);

  int64_t rows() const { return rows_; }
  int64_t cols() const { return cols_; }
  int block_r() const { return block_r_; }
  int block_c() const { return block_c_; }
  int64_t block_rows() const { return static_cast<int64_t>(indptr_.size()) - 1; }
  int64_t block_cols() const { return (cols_ + block_c_ - 1) / block_c_; }
  int64_t nblocks() const { return static_cast<int64_t>(indices_.size()); }
  const std::vector<offset_t>& indptr() const { return indptr_; }
  const LargeArray<index_t>& indices() const { return indices_; }
  // Values a product reads (the length of its `values` argument): nblocks * R * C.
  int64_t values_size() const { return nblocks() * block_r_ * block_c_; }
  bool has_values() const { return has_values_; }
  // Throws std::invalid_argument for a pattern-only matrix.
  const LargeArray<T>& values() const {
    if (!has_values_) throw_pattern_only();
    return values_;
  }
  // Bytes of storage: values (if stored), block-column indices and block-row pointers.
  int64_t storage_bytes() const {
    return static_cast<int64_t>(values_.size() * sizeof(T) + indices_.size() * sizeof(index_t) +
                                indptr_.size() * sizeof(offset_t));
  }
  BsrView<T> view() const {
    return {rows_,        cols_,          block_r_,        block_c_,       block_rows(),
            block_cols(), indptr_.data(), indices_.data(), stored_values()};
  }

  // out is rows x cols, C order, and is fully overwritten.
  void to_dense(compute_t<T>* out) const;

  // The (cols x rows) transpose, with C x R blocks. If permutation is not null
  // (nblocks() entries), block k of the transpose is block permutation[k] of
  // this matrix, transposed, so values that change while the pattern stays
  // fixed can be transposed later without rebuilding. The transpose of a
  // pattern-only matrix is pattern-only.
  BsrMatrix transposed(int64_t* permutation) const;

 private:
  BsrMatrix() = default;
  int64_t rows_ = 0;
  int64_t cols_ = 0;
  int block_r_ = 1;
  int block_c_ = 1;
  std::vector<offset_t> indptr_;
  LargeArray<index_t> indices_;
  bool has_values_ = true;
  LargeArray<T> values_;  // empty when !has_values_
  // What a view points its kernels at: null for a pattern-only matrix.
  const T* stored_values() const { return has_values_ ? values_.data() : nullptr; }
};

}  // namespace sparsegemm
