// Bitmap storage: one bit per matrix entry plus the kept values, packed.
//
// Row r owns words_per_row = ceil(cols / 64) 64-bit words; bit c % 64 of word
// c / 64 says whether column c is stored. The stored values follow each other
// row-major (row by row, columns increasing), and offsets[r] is the position
// in `values` of row r's first stored value, so a thread (or a kernel walking
// several rows at once) can start anywhere. Bits past `cols` in a row's last
// word are always zero. At (1 - s) * sizeof(T) + 1/8 bytes per weight this
// beats CSR (sizeof(T) + 2 bytes per stored entry) below ~85% sparsity and
// dense (sizeof(T)) above ~3%.
//
// T is float, double or bfloat16_t (core/bfloat16.h): bfloat16 values are
// stored in 2 bytes and computed in float32, so from_dense takes and to_dense
// gives compute_t<T> (float for bfloat16).
//
// BitmapMatrix owns validated arrays (or only bits and offsets: pattern-only,
// see core/csr_matrix.h); BitmapView is the pointer bundle the kernels take.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <vector>

#include "core/bfloat16.h"
#include "core/csr_matrix.h"  // index_t, offset_t, check_dimensions
#include "core/large_array.h"

namespace sparsegemm {

constexpr int64_t kBitmapWordBits = 64;

inline int64_t bitmap_words_per_row(int64_t cols) {
  return (cols + kBitmapWordBits - 1) / kBitmapWordBits;
}

template <typename T>
struct BitmapView {
  int64_t rows = 0;
  int64_t cols = 0;
  int64_t words_per_row = 0;          // ceil(cols / 64)
  const uint64_t* bits = nullptr;     // rows * words_per_row words, bits past cols zero
  const offset_t* offsets = nullptr;  // rows + 1 entries: offsets[r] = values before row r
  const T* values = nullptr;          // offsets[rows] entries, row-major; null: pattern-only
  int64_t nnz() const { return offsets[rows]; }
};

// A plan built once, on first use, by whichever thread gets there first, and
// shared by the copies of its matrix (a shared_ptr to it).
template <typename Plan>
struct LazyPlan {
  std::once_flag built;
  std::atomic<bool> ready{false};  // set once plan is complete
  Plan plan;

  template <typename Build>
  const Plan& get(const Build& build) {
    std::call_once(built, [&] {
      plan = build();
      ready.store(true, std::memory_order_release);
    });
    return plan;
  }
  int64_t bytes() const { return ready.load(std::memory_order_acquire) ? plan.bytes() : 0; }
};

// Each row's stored columns, for the int8 VNNI batch-1 kernel, which walks a
// very sparse row by its stored weights rather than by its bits: the row is
// cut into groups of kGroupCols columns, and each stored weight's column
// within its group is one byte, in the order of the row's values. Where the
// bitmap walk decodes every 16-64 columns whether they hold one weight or ten,
// the kernel fetches x for every stored weight of a group at once (by permutes
// of x's bytes). Built from the bits alone, once per matrix
// (BitmapMatrix::column_plan), it takes one byte per stored weight and two per
// group: 0.11 bytes per weight at 90% sparsity, where the kernel no longer
// reads the bitmap's 0.125.
struct ColumnIndexPlan {
  static constexpr int64_t kGroupCols = 256;

  int64_t groups_per_row = 0;
  std::vector<uint16_t> counts;  // counts[r * groups_per_row + g]: stored weights of the group
  LargeArray<uint8_t> columns;   // per stored weight (values order): its column mod kGroupCols

  // num_threads as in core/parallel.h.
  template <typename T>
  static ColumnIndexPlan build(const BitmapView<T>& a, int num_threads);
  int64_t bytes() const {
    return static_cast<int64_t>(counts.size() * sizeof(uint16_t) + columns.size());
  }
};

// Each row's stored weights cut into windows of at most kWindowWeights that
// span fewer than kWindowSpan columns, for the AVX-512 batch-1 walk of very
// sparse rows (float and bfloat16 values; bitmap_windows_avx512.h): a
// window's entries of x are one gather from its first column, each weight's
// column one offset byte from there. Groups of fixed
// columns (ColumnIndexPlan) end a gather at every group, so an 11008-column
// row at 90% sparsity took 88 gathers for its 1100 weights and a loop per
// group; windows take 70-72, in one loop per row. Built from the bits alone,
// once per matrix (BitmapMatrix::window_plan): one byte per stored weight and
// four per window, about 0.125 bytes per weight at 90% sparsity.
struct ColumnWindowPlan {
  static constexpr int kWindowWeights = 16;
  static constexpr int64_t kWindowSpan = 256;
  // A window is packed as first_column << kCountBits | its weights (1-16).
  static constexpr int kCountBits = 5;
  static constexpr uint32_t kCountMask = (1u << kCountBits) - 1;
  // Columns a window's first column can reach in the 32-bit packing.
  static constexpr int64_t kMaxColumns = int64_t(1) << (32 - kCountBits);

  std::vector<int64_t> row_windows;  // rows + 1: row r's windows are [row_windows[r], [r + 1])
  LargeArray<uint32_t> windows;      // packed as above, row by row
  LargeArray<uint8_t> offsets;       // per stored weight (values order): column - window's first

  // num_threads as in core/parallel.h. Requires a.cols <= kMaxColumns.
  template <typename T>
  static ColumnWindowPlan build(const BitmapView<T>& a, int num_threads);
  int64_t bytes() const {
    return static_cast<int64_t>(row_windows.size() * sizeof(int64_t) +
                                windows.size() * sizeof(uint32_t) + offsets.size());
  }
};

template <typename T>
class BitmapMatrix {
 public:
  // Copies and validates bits (rows * ceil(cols / 64) words, row-major) and
  // values (one per set bit). Throws std::invalid_argument naming the first
  // defect: a wrong length, or a bit set past the last column of a row.
  static BitmapMatrix from_arrays(int64_t rows, int64_t cols, const uint64_t* bits,
                                  int64_t bits_len, const T* values, int64_t values_len);

  // The same checks of the bits without values: a pattern-only matrix.
  static BitmapMatrix pattern_from_arrays(int64_t rows, int64_t cols, const uint64_t* bits,
                                          int64_t bits_len);

  // From validated-on-the-way CSR arrays (see validate_csr_structure): every
  // stored entry, explicit zeros included, gets its bit. IndptrT is int32_t or int64_t.
  template <typename IndptrT>
  static BitmapMatrix from_csr_arrays(int64_t rows, int64_t cols, const IndptrT* indptr,
                                      int64_t indptr_len, const index_t* indices,
                                      int64_t indices_len, const T* values, int64_t values_len);

  // Keeps entries with |a| > threshold (NaN is kept), as CsrMatrix::from_dense.
  // `dense` is rows x cols with element (i, j) at dense[i * row_stride + j * col_stride].
  // For bfloat16 each entry is rounded first (to nearest even) and the
  // threshold applies to the rounded value, so nothing that rounds to zero is stored.
  static BitmapMatrix from_dense(int64_t rows, int64_t cols, const compute_t<T>* dense,
                                 int64_t row_stride, int64_t col_stride, double threshold);

  int64_t rows() const { return rows_; }
  int64_t cols() const { return cols_; }
  int64_t words_per_row() const { return bitmap_words_per_row(cols_); }
  int64_t nnz() const { return offsets_.back(); }
  // Values a product reads (the length of its `values` argument): nnz().
  int64_t values_size() const { return nnz(); }
  const LargeArray<uint64_t>& bits() const { return bits_; }
  const std::vector<offset_t>& offsets() const { return offsets_; }
  bool has_values() const { return has_values_; }
  // Throws std::invalid_argument for a pattern-only matrix.
  const LargeArray<T>& values() const {
    if (!has_values_) throw_pattern_only();
    return values_;
  }
  BitmapView<T> view() const {
    return BitmapView<T>{rows_,        cols_,           words_per_row(),
                         bits_.data(), offsets_.data(), stored_values()};
  }
  // Bytes of storage: values (if stored), bits and row offsets.
  int64_t storage_bytes() const {
    return static_cast<int64_t>(values_.size() * sizeof(T) + bits_.size() * sizeof(uint64_t) +
                                offsets_.size() * sizeof(offset_t));
  }

  // out is rows x cols, C order, and is fully overwritten.
  void to_dense(compute_t<T>* out) const;

  // The same pattern with other values (values_len must equal nnz()), also
  // from a pattern-only matrix.
  BitmapMatrix with_values(const T* values, int64_t values_len) const;
  // The column plan of the bits, built on the first call (num_threads as in
  // core/parallel.h) and shared by copies and by with_values: only batch-1
  // products over very sparse weights ask for it.
  const ColumnIndexPlan& column_plan(int num_threads) const {
    return column_plan_->get([&] { return ColumnIndexPlan::build(view(), num_threads); });
  }
  // The window plan of the bits, built and shared the same way.
  const ColumnWindowPlan& window_plan(int num_threads) const {
    return window_plan_->get([&] { return ColumnWindowPlan::build(view(), num_threads); });
  }
  // Bytes of both plans, 0 until one is built.
  int64_t column_plan_bytes() const { return column_plan_->bytes() + window_plan_->bytes(); }

 private:
  BitmapMatrix() = default;
  // Sets offsets_ from bits_ (rows_, cols_ set) and returns the total.
  int64_t count_offsets();

  int64_t rows_ = 0;
  int64_t cols_ = 0;
  LargeArray<uint64_t> bits_;
  std::vector<offset_t> offsets_;
  bool has_values_ = true;
  LargeArray<T> values_;  // empty when !has_values_
  std::shared_ptr<LazyPlan<ColumnIndexPlan>> column_plan_ =
      std::make_shared<LazyPlan<ColumnIndexPlan>>();
  std::shared_ptr<LazyPlan<ColumnWindowPlan>> window_plan_ =
      std::make_shared<LazyPlan<ColumnWindowPlan>>();
  // What a view points its kernels at: null for a pattern-only matrix.
  const T* stored_values() const { return has_values_ ? values_.data() : nullptr; }
};

}  // namespace sparsegemm
