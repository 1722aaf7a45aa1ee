// Compressed sparse row storage.
//
// CsrMatrix owns its arrays and is only constructed through validating
// factories, so a kernel never sees malformed indices. CsrView is the plain
// pointer bundle that kernels take.
//
// Every format (CSR, BSR, bitmap) may also be pattern-only: built from its
// structure alone, it stores no values, and every product must be given them
// (a caller such as the torch modules owns the live values and passes them on
// each call, so a stored copy would be dead memory). Whatever reads stored
// values throws std::invalid_argument on such a matrix (see values_or_stored).
#pragma once

#include <algorithm>
#include <array>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <vector>

#include "core/bfloat16.h"
#include "core/large_array.h"

namespace sparsegemm {

using index_t = int32_t;   // column indices: dimensions must be < 2^31
using offset_t = int64_t;  // row pointers: more than 2^31 nonzeros are allowed

// Matrices with at most this many columns store 16-bit column indices: at
// batch 1 the kernels stream the matrix from memory, and 6 bytes per float32
// entry instead of 8 is a third more entries per second.
constexpr int64_t kMaxCompactCols = 65536;
using compact_index_t = uint16_t;

// Chunk order by row quads (CsrMatrix::ChunkOrder) groups this many rows.
constexpr int kQuadRows = 4;
// Below this density four rows share few columns: at 85-90% sparsity quads
// ran 0.89-1.02x chunk order by rows (Zen 4, batch 64, in-process A/B).
constexpr double kQuadMinDensity = 0.2;
// Whether a rows x cols matrix with nnz stored entries is dense enough for
// chunk order by row quads.
inline bool quad_density(int64_t rows, int64_t cols, int64_t nnz) {
  return nnz > 0 && static_cast<double>(nnz) >=
                        kQuadMinDensity * static_cast<double>(rows) * static_cast<double>(cols);
}

// How the column-chunked panel kernel reads a matrix (CsrKernels::chunk_layout):
// in chunks of `columns` columns (0: unchunked), its entries in chunk order
// by rows or by row quads (CsrMatrix::ChunkOrder).
struct ChunkLayout {
  int64_t columns = 0;
  bool row_quads = false;
  // One integer naming the layout (0: unchunked), which a caller holding
  // values in chunk order passes back with them.
  int64_t key() const { return 2 * columns + (row_quads ? 1 : 0); }
};
// One quad's entries in one column chunk: where they start, and how many of
// its columns each subset of the quad's rows stores (columns[m] for the
// subset whose bit q is row 4 * quad + q; columns[0] is 0).
constexpr int kQuadSubsets = 1 << kQuadRows;
// Rows in a subset (its bits set).
constexpr int subset_rows(int subset) {
  return subset == 0 ? 0 : (subset & 1) + subset_rows(subset >> 1);
}
struct QuadRegion {
  offset_t index_start = 0;  // into the column indices (one per column)
  offset_t value_start = 0;  // into the values (one per stored entry)
  uint16_t columns[kQuadSubsets] = {};
};

template <typename T>
struct CsrView {
  int64_t rows = 0;
  int64_t cols = 0;
  // rows + 1 entries, non-decreasing; indptr[0] == 0 except in a slice of rows
  // (offsets into the entry arrays are absolute)
  const offset_t* indptr = nullptr;
  // Column indices, indptr[rows] entries, strictly increasing within a row:
  // exactly one of these is set (indices16 when cols <= kMaxCompactCols).
  const index_t* indices = nullptr;
  const compact_index_t* indices16 = nullptr;
  const T* values = nullptr;  // indptr[rows] entries; null for a pattern-only matrix
  // Optional: each row cut into segments by column chunks of chunk_cols
  // columns (see CsrMatrix::column_chunk_bounds). When set, the packed panel
  // kernel runs chunk by chunk so the slice of the dense operand it reads
  // stays in L1.
  int64_t chunk_cols = 0;
  const offset_t* chunk_bounds = nullptr;
  // Optional, with chunk_bounds: the entry arrays (indices, values) are in
  // chunk order (CsrMatrix::chunk_order), and row r's segment in chunk k
  // starts at segment_start[r * chunks() + k] (its length is still given by
  // chunk_bounds). Only the chunked panel kernel reads such a view.
  const offset_t* segment_start = nullptr;
  // Optional, with chunk_bounds and in place of segment_start: the entry
  // arrays are in chunk order by row quads (CsrMatrix::ChunkOrder), one
  // region per quad and chunk (quad * chunks() + chunk). Row r of this view is
  // row row_offset + r of the matrix, whose quads index the regions.
  int64_t row_offset = 0;
  const QuadRegion* quad_regions = nullptr;
  int64_t nnz() const { return indptr[rows] - indptr[0]; }
  int64_t chunks() const { return chunk_cols > 0 ? (cols + chunk_cols - 1) / chunk_cols : 1; }
};

// The column-chunked panel kernel takes rows in blocks of about this many
// stored entries (about 400 KB with 16-bit indices, so a block stays in L2
// while its chunks and panels go by); chunk order follows the same blocks.
constexpr int64_t kChunkRowBlockNnz = 1 << 16;

// Calls body(block_begin, block_end) for consecutive blocks of [row_begin,
// row_end) holding about block_nnz stored entries each (at least one row).
template <typename Body>
inline void for_row_blocks(const offset_t* indptr, int64_t row_begin, int64_t row_end,
                           int64_t block_nnz, const Body& body) {
  int64_t block_begin = row_begin;
  while (block_begin < row_end) {
    int64_t block_end = block_begin + 1;
    while (block_end < row_end && indptr[block_end + 1] - indptr[block_begin] <= block_nnz)
      ++block_end;
    body(block_begin, block_end);
    block_begin = block_end;
  }
}

// Chunk order by row quads goes in blocks of about this many stored entries.
// Each block reads every chunk's slice of x^T once, and the quads read the
// weight once whatever the block, so blocks only need their outputs to stay
// in cache. sparsify(model) on the 1024-4096-4096-4096-1024 MLP at batch 64,
// whose feed-forward pairs run 2048 rows per thread against a 1 MiB panel of
// x^T (Zen 4, 2 threads, in-process A/B against kChunkRowBlockNnz): 1.05x at
// 2^17, 1.08x at 2^18 and 2^20, at 50% and 70%; the HF-style BERT layer (128
// rows per tile) level.
constexpr int64_t kQuadBlockNnz = 1 << 18;

// for_row_blocks over blocks of whole row quads (rows 4q..4q+3, counted from
// row 0) that meet [row_begin, row_end), not clipped to it: each block holds
// about block_nnz stored entries (at least one quad).
template <typename Body>
inline void for_quad_blocks(const offset_t* indptr, int64_t row_begin, int64_t row_end,
                            int64_t block_nnz, const Body& body) {
  int64_t block_begin = row_begin / kQuadRows * kQuadRows;
  while (block_begin < row_end) {
    const auto quad_end = [&](int64_t r) { return std::min(r + kQuadRows, row_end); };
    int64_t block_end = quad_end(block_begin);
    while (block_end < row_end && indptr[quad_end(block_end)] - indptr[block_begin] <= block_nnz)
      block_end = quad_end(block_end);
    body(block_begin, block_end);
    block_begin = block_end;
  }
}

// Thrown by whatever reads the stored values of a pattern-only matrix.
[[noreturn]] void throw_pattern_only();

// The values a product of `a` multiplies by: `replacement` when not null, else
// a's stored values (throws std::invalid_argument if a holds only a pattern).
template <typename Matrix, typename V>
const V* values_or_stored(const Matrix& a, const V* replacement) {
  return replacement != nullptr ? replacement : a.values().data();
}

// Throws std::invalid_argument naming the first defect found. Checks lengths,
// indptr[0] == 0, monotone indptr, indptr[rows] == nnz, and that column indices
// are in [0, cols) and strictly increasing within each row.
void validate_csr_structure(int64_t rows, int64_t cols, const offset_t* indptr, int64_t indptr_len,
                            const index_t* indices, int64_t indices_len, int64_t values_len);

// Same checks for 32-bit row pointers (scipy's default), without a copy.
void validate_csr_structure(int64_t rows, int64_t cols, const int32_t* indptr, int64_t indptr_len,
                            const index_t* indices, int64_t indices_len, int64_t values_len);

// T is the stored value type: float, double or bfloat16_t (built from and
// densified to float, its compute type compute_t<T>).
template <typename T>
class CsrMatrix {
 public:
  // Copies and validates. IndptrT is int32_t or int64_t.
  template <typename IndptrT>
  static CsrMatrix from_arrays(int64_t rows, int64_t cols, const IndptrT* indptr,
                               int64_t indptr_len, const index_t* indices, int64_t indices_len,
                               const T* values, int64_t values_len);

  // The same checks without values: a pattern-only matrix of indices_len entries.
  template <typename IndptrT>
  static CsrMatrix pattern_from_arrays(int64_t rows, int64_t cols, const IndptrT* indptr,
                                       int64_t indptr_len, const index_t* indices,
                                       int64_t indices_len);

  // Keeps entries with |a| > threshold (NaN is kept: it is not provably zero).
  // The threshold is a double and compared exactly: rounding it to float would
  // change which float entries pass (float(0.1) > 0.1, but not > float(0.1)).
  // `dense` is rows x cols with element (i, j) at dense[i * row_stride + j * col_stride].
  // bfloat16 values: entries are rounded to bfloat16 first; the test is on the rounded value.
  static CsrMatrix from_dense(int64_t rows, int64_t cols, const compute_t<T>* dense,
                              int64_t row_stride, int64_t col_stride, double threshold);

  int64_t rows() const { return rows_; }
  int64_t cols() const { return cols_; }
  int64_t nnz() const { return pattern_->indptr.back(); }
  // Values a product reads (the length of its `values` argument): nnz().
  int64_t values_size() const { return nnz(); }
  const std::vector<offset_t>& indptr() const { return pattern_->indptr; }
  bool has_values() const { return has_values_; }
  // Throws std::invalid_argument for a pattern-only matrix.
  const LargeArray<T>& values() const {
    if (!has_values_) throw_pattern_only();
    return values_;
  }
  // Whether column indices are stored in 16 bits (see kMaxCompactCols).
  bool compact_indices() const { return cols_ <= kMaxCompactCols; }
  // Column index of stored entry j.
  int64_t column(int64_t j) const {
    return compact_indices() ? pattern_->indices16[j] : pattern_->indices[j];
  }
  // All column indices, widened to 32 bits (a copy).
  std::vector<index_t> column_indices() const;
  CsrView<T> view() const {
    CsrView<T> v{rows_, cols_, pattern_->indptr.data(), nullptr, nullptr, stored_values()};
    if (compact_indices())
      v.indices16 = pattern_->indices16.data();
    else
      v.indices = pattern_->indices.data();
    return v;
  }
  // Where each row's stored entries cross the column chunks [k * chunk_cols,
  // (k + 1) * chunk_cols): entry r * (chunks + 1) + k is the position of row
  // r's first entry at or after column k * chunk_cols (so k = 0 gives
  // indptr[r], k = chunks gives indptr[r + 1]). Computed on first use for each
  // chunk width and kept with the pattern (thread-safe; valid while any
  // matrix sharing the pattern lives).
  const offset_t* column_chunk_bounds(int64_t chunk_cols) const;

  // The stored entries in the order the column-chunked kernel reads them:
  // rows in blocks of about kChunkRowBlockNnz entries (from row 0) and, within
  // a block, every row's segment in chunk 0, then every row's segment in chunk
  // 1, and so on. Read in CSR order, each segment starts far from the last, so
  // the hardware prefetchers never see a stream; in chunk order a chunk pass
  // reads one. segment_start[r * chunks + k] is where row r's segment in chunk
  // k starts. Computed on first use for each chunk width and kept with the
  // pattern, like column_chunk_bounds.
  //
  // A layout with row_quads (float and double values, chunks narrower than
  // 2^16 columns; the AVX-512 kernels ask for it) goes by row quads: rows 4q..4q+3
  // share one region per chunk, whose columns come grouped by the subset of
  // the four rows that stores them (subset 1 first, then 2, 3, ... 15; by
  // column within a subset), each column index once, followed in the values
  // by the stored entries of the rows in its subset, in row order. The kernel
  // then loads each row of the dense operand once for up to four rows. Blocks
  // are whole quads of about kQuadBlockNnz entries, and segment_start is empty.
  //
  // Column indices in their stored width, as a pattern and a chunk order keep them.
  struct ColumnIndices {
    LargeArray<index_t> indices;            // when cols > kMaxCompactCols
    LargeArray<compact_index_t> indices16;  // when cols <= kMaxCompactCols
    void resize_indices(bool compact, int64_t nnz) {
      if (compact)
        indices16.resize(nnz);
      else
        indices.resize(nnz);
    }
    void set_index(bool compact, int64_t j, int64_t col) {
      if (compact)
        indices16[j] = static_cast<compact_index_t>(col);
      else
        indices[j] = static_cast<index_t>(col);
    }
  };
  // The indices hold nnz entries; by row quads only the first
  // quad_regions.back().index_start are used.
  struct ChunkOrder : ColumnIndices {
    bool built = false;
    bool row_quads = false;
    std::vector<QuadRegion> quad_regions;  // quads * chunks + 1, with row_quads
    std::vector<offset_t> segment_start;
  };
  // Throws std::invalid_argument for row quads over bfloat16 values or chunks of 2^16 columns.
  const ChunkOrder& chunk_order(ChunkLayout layout) const;
  // values (nnz entries, CSR order) into `out` in chunk order.
  void to_chunk_order(ChunkLayout layout, const T* values, T* out) const;
  // This matrix's own values in chunk order, computed on first use (thread-safe).
  const T* own_values_in_chunk_order(ChunkLayout layout) const;
  // chunked view, with the entry arrays in chunk order when `values` is not
  // null (values: nnz entries, already in chunk order).
  CsrView<T> chunk_ordered_view(ChunkLayout layout, const T* values) const;

  // Each stored entry's column (ci, kh, kw) of a convolution's weight
  // (ci * kernel_h * kernel_w + kh * kernel_w + kw) as the element offset
  // (ci * kernel_h + kh) * row_stride + kw * col_step: where the panel kernel
  // finds that tap's input in a panel holding one input row per (ci, kh),
  // row_stride apart (drivers/conv_driver.cpp). Computed on first use for
  // each geometry and kept with the pattern, like column_chunk_bounds. Throws
  // std::overflow_error where an offset would not fit 32 bits.
  const index_t* tap_offsets(int64_t kernel_h, int64_t kernel_w, int64_t col_step,
                             int64_t row_stride) const;

  // Bytes of storage per stored entry (value, if stored, + column index), for reports.
  int64_t bytes_per_entry() const {
    return (has_values_ ? static_cast<int64_t>(sizeof(T)) : 0) + (compact_indices() ? 2 : 4);
  }
  // Bytes of storage: values (if stored), column indices and row pointers.
  int64_t storage_bytes() const {
    return nnz() * bytes_per_entry() +
           static_cast<int64_t>(pattern_->indptr.size() * sizeof(offset_t));
  }

  // out is rows x cols, C order, and is fully overwritten.
  void to_dense(compute_t<T>* out) const;

  // The transpose (cols x rows), and in `permutation` (nnz entries, may be null)
  // the position in this matrix of each stored entry of the transpose, so new
  // values can be transposed later as values[permutation]. The transpose of a
  // pattern-only matrix is pattern-only.
  CsrMatrix transposed(int64_t* permutation) const;

  // The same sparsity pattern with other values (values_len must equal nnz()),
  // also from a pattern-only matrix.
  CsrMatrix with_values(const T* values, int64_t values_len) const;

 private:
  // The validated structure, shared by matrices that differ only in values.
  struct Pattern : ColumnIndices {
    std::vector<offset_t> indptr;
    // column_chunk_bounds by chunk width; derived from the fields above, so
    // filled in lazily even though the pattern is otherwise immutable.
    mutable std::mutex chunk_bounds_mutex;
    mutable std::map<int64_t, std::vector<offset_t>> chunk_bounds;
    mutable std::map<int64_t, ChunkOrder> chunk_orders;  // by layout key, under chunk_bounds_mutex
    // tap_offsets by (kernel_h, kernel_w, col_step, row_stride), under chunk_bounds_mutex.
    mutable std::map<std::array<int64_t, 4>, std::vector<index_t>> tap_offsets;
  };
  CsrMatrix() = default;
  // Walks the stored entries in chunk order by row quads (bounds: its
  // column_chunk_bounds): on_region(region number, region) once per region,
  // on_index(column, position) for each index and on_value(CSR position,
  // position) for each value.
  template <typename OnRegion, typename OnIndex, typename OnValue>
  void for_entries_by_quads(int64_t chunk_cols, const offset_t* bounds, const OnRegion& on_region,
                            const OnIndex& on_index, const OnValue& on_value) const;
  // A pattern-only matrix holding copies of validated arrays.
  template <typename IndptrT>
  static CsrMatrix copy_pattern(int64_t rows, int64_t cols, const IndptrT* indptr,
                                int64_t indptr_len, const index_t* indices, int64_t indices_len);
  // Gives this matrix a new, empty pattern and returns it for filling in.
  Pattern& reset_pattern() {
    auto fresh = std::make_shared<Pattern>();
    Pattern& ref = *fresh;
    pattern_ = std::move(fresh);
    return ref;
  }

  int64_t rows_ = 0;
  int64_t cols_ = 0;
  std::shared_ptr<const Pattern> pattern_;
  bool has_values_ = true;
  LargeArray<T> values_;  // empty when !has_values_
  // own_values_in_chunk_order by layout key. Shared by copies, which hold the same values.
  struct ChunkOrderedValues {
    std::mutex mutex;
    std::map<int64_t, LargeArray<T>> by_layout;
  };
  std::shared_ptr<ChunkOrderedValues> chunk_ordered_values_ =
      std::make_shared<ChunkOrderedValues>();
  // What a view points its kernels at: null for a pattern-only matrix.
  const T* stored_values() const { return has_values_ ? values_.data() : nullptr; }
};

// Largest dimension a CSR matrix may have: column indices are 32-bit.
constexpr int64_t kMaxDimension = INT32_MAX;

void check_dimensions(int64_t rows, int64_t cols);

}  // namespace sparsegemm
