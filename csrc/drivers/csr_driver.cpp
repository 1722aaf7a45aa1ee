#include "drivers/csr_driver.h"

#include <algorithm>
#include <climits>

#include "core/isa.h"
#include "core/parallel.h"
#include "kernels/csr/csr_kernels.h"
#include "drivers/product_driver.h"

namespace sparsegemm {

namespace {

// Rows [r0, r1) of v as a view of their own. Offsets into the entry arrays
// stay absolute, so the slice's indptr[0] is v.indptr[r0], not 0.
template <typename T>
CsrView<T> row_slice(CsrView<T> v, int64_t r0, int64_t r1) {
  if (v.chunk_bounds != nullptr) v.chunk_bounds += r0 * (v.chunks() + 1);
  if (v.segment_start != nullptr) v.segment_start += r0 * v.chunks();
  v.indptr += r0;
  v.row_offset += r0;
  v.rows = r1 - r0;
  return v;
}

// CSR plugged into the shared drivers (drivers/product_driver.h), optionally with
// caller-owned values in place of the matrix's own. V is the stored value
// type, T the dense operands' (compute_t<V>).
template <typename V>
struct CsrProduct {
  using T = compute_t<V>;
  const CsrMatrix<V>& a;
  const V* values = nullptr;  // what the kernels read: the caller's or a's own (values_or_stored)
  // The caller's values in chunk order for the layout whose key is
  // chunk_values_layout (ChunkLayout::key), or null.
  const V* chunk_values = nullptr;
  int64_t chunk_values_layout = 0;
  // Columns of b (rows of x) the packed panels hold at most; 0: as many as fit.
  int64_t batch = 0;

  int64_t rows() const { return a.rows(); }
  int64_t cols() const { return a.cols(); }
  int64_t stored_entries() const { return a.nnz(); }
  static constexpr bool kConflictFreeStride = true;
  static constexpr bool kTransposedPanel = false;
  static constexpr bool kPackedPanel = true;
  int64_t max_few_vectors() const { return kGatherMaxVectors; }
  // The gather kernel's offsets (k * kstride) are 32-bit.
  bool few_vector_strides_ok(int64_t kstride) const {
    return a.cols() <= 1 || (a.cols() - 1) <= INT32_MAX / std::max<int64_t>(kstride, 1);
  }

  CsrView<V> view() const {
    CsrView<V> v = a.view();
    v.values = values;
    return v;
  }

  // Column chunks of the packed panel kernel for this matrix (columns 0: none).
  ChunkLayout chunk_layout(const CsrKernels<V>& kernels) const {
    return kernels.chunk_layout(a.rows(), a.cols(), a.nnz());
  }

  // view() with the column chunks the packed panel kernel wants, if any.
  // Only the packed kernel runs chunked: over a strided b, chunks measured
  // 0.5-0.8x of the unchunked kernel (Zen 3, 128-256 rows at density 0.3).
  // Values in chunk order (CsrMatrix::chunk_order) where there are some: the
  // caller's, or the matrix's own (a copy made on first use). Over chunk order
  // the kernel ran 1.0-1.6x faster than over CSR order with prefetch (Zen 3,
  // 2 threads, densities 0.2-0.5, 768-4096 columns, 64-256 rows, in-process
  // A/B). Other values are read in CSR order.
  CsrView<V> chunked_view(const CsrKernels<V>& kernels) const {
    const ChunkLayout layout = chunk_layout(kernels);
    if (layout.columns <= 0) return view();
    if (chunk_values != nullptr && chunk_values_layout == layout.key())
      return a.chunk_ordered_view(layout, chunk_values);
    if (a.has_values() && values == a.values().data())
      return a.chunk_ordered_view(layout, a.own_values_in_chunk_order(layout));
    CsrView<V> v = view();  // CSR order, row by row
    v.chunk_cols = layout.columns;
    v.chunk_bounds = a.column_chunk_bounds(layout.columns);
    return v;
  }

  // The gather kernel over all rows: y(v, r) = bias[r] + a[r, :] . x(v, :).
  void few_vectors(const T* x, int64_t x_vstride, int64_t x_kstride, int64_t nvec, const T* bias,
                   T* y, int64_t y_vstride, int64_t y_rstride, int num_threads) const {
    const CsrView<V> v = view();
    const CsrKernels<V>& kernels = csr_kernels<V>(active_isa());
    const int threads = threads_for_work(num_threads, (a.nnz() + a.rows()) * nvec);
    const auto dot_rows =
        prefer_hardware_gather() ? kernels.gather_rows : kernels.scalar_gather_rows;
    driver::for_row_ranges(a.indptr().data(), a.rows(), threads, 4, [&](int64_t r0, int64_t r1) {
      dot_rows(v, r0, r1, x, x_vstride, x_kstride, nvec, bias, y, y_vstride, y_rstride);
    });
  }

  // The panel kernel over all rows: c = a @ b (+ bias), b with contiguous columns.
  void panel(const T* b, int64_t ldb, int64_t n, const T* bias, T* c, int64_t ldc,
             int num_threads) const {
    const CsrView<V> v = view();
    const CsrKernels<V>& kernels = csr_kernels<V>(active_isa());
    const int threads = threads_for_work(num_threads, (a.nnz() + a.rows()) * n);
    driver::for_row_ranges(a.indptr().data(), a.rows(), threads, 2, [&](int64_t r0, int64_t r1) {
      kernels.spmm_rows(v, r0, r1, b, ldb, n, bias, c, ldc);
    });
  }

  int64_t packed_panel_columns() const {
    return csr_kernels<V>(active_isa()).packed_panel_columns(a.rows(), a.cols(), a.nnz(), batch);
  }

  // Rows of a packed panel are one cache line longer than the panel when the
  // panel (a.cols() rows) takes at least kPaddedPanelBytes and the kernel does
  // not run in column chunks. With rows exactly 128 bytes apart (AVX2 floats)
  // the unchunked kernel ran at 13-19 GF/s on one core against 30-37 with
  // 192-384 byte rows (4096x1024, batch 64, density 0.3, standalone harness),
  // and in the library a 4096x4096 layer at batch 64, density 0.1-0.2, ran
  // 1.2-2.2x faster padded (in-process A/B, 2 threads). Smaller panels lost
  // or broke even padded: 384x1536 at 1024 rows, density 0.1-0.2, ran 1.07-1.13x
  // faster unpadded; 384-3072 columns at 64-1024 rows were within 2%. The
  // chunked kernel measured slower padded (0.86-0.96x), so its rows stay packed.
  static constexpr int64_t kPaddedPanelBytes = 256 * 1024;
  int64_t packed_panel_stride() const {
    const CsrKernels<V>& kernels = csr_kernels<V>(active_isa());
    const int64_t columns = packed_panel_columns();
    const int64_t panel_bytes = a.cols() * columns * static_cast<int64_t>(sizeof(T));
    const bool padded = panel_bytes >= kPaddedPanelBytes && chunk_layout(kernels).columns == 0;
    return padded ? columns + 64 / static_cast<int64_t>(sizeof(T)) : columns;
  }

  // Packed panels (x^T in contiguous panels, csr_kernels.h) against the strided
  // panel kernel, nn.Linear shapes on Zen 3, AVX2, 2 threads, same process:
  // 1.06-1.32x faster at densities 0.05-0.2 (384-3072 columns, 128-1024 rows).
  // Denser matrices run packed where the kernel goes in column chunks: with
  // its prefetched segments that measured 1.10-1.34x faster than strided at
  // densities 0.3-0.5 (768-4096 columns, 32-256 rows); unchunked they measured
  // 0.86-0.94x of strided at 128-256 rows.
  bool prefer_packed_panels(int64_t panels) const {
    constexpr int64_t kManyPanels = 16;
    return a.nnz() * 4 <= a.rows() * a.cols() || panels >= kManyPanels ||
           chunk_layout(csr_kernels<V>(active_isa())).columns > 0;
  }

  const int64_t* row_offsets() const { return a.indptr().data(); }

  // The packed panel kernel over rows [r0, r1) and one panel, single-threaded,
  // with c's row 0 holding row r0: kernel(packed, panel_ld, r0, r1, bias, c, ldc).
  // Made once per call, before the threads start (chunked_view may build
  // the values in chunk order on first use).
  auto packed_rows_kernel() const {
    const CsrKernels<V>& kernels = csr_kernels<V>(active_isa());
    return [&kernels, view = chunked_view(kernels), columns = packed_panel_columns()](
               const T* packed, int64_t panel_ld, int64_t r0, int64_t r1, const T* bias, T* c,
               int64_t ldc) {
      kernels.spmm_rows_packed(row_slice(view, r0, r1), 0, r1 - r0, packed, panel_ld, columns,
                               bias ? bias + r0 : nullptr, c, ldc);
    };
  }
};

// The packed panel product of CsrProduct over a panel in the caller's layout
// (csr_offset_panels): entry j reads from element offsets[j] of the panel.
template <typename T>
struct OffsetPanelProduct {
  const CsrMatrix<T>& a;
  const T* values = nullptr;
  const index_t* offsets = nullptr;
  int64_t panel_elements = 0;  // a whole number of cache lines

  int64_t rows() const { return a.rows(); }
  // run_packed_panels sizes a packed panel as cols() rows, packed_panel_stride() apart.
  int64_t cols() const { return panel_elements; }
  int64_t packed_panel_stride() const { return 1; }
  int64_t stored_entries() const { return a.nnz(); }
  int64_t packed_panel_columns() const {
    return csr_kernels<T>(active_isa()).packed_panel_columns(a.rows(), a.cols(), a.nnz(), 0);
  }
  const int64_t* row_offsets() const { return a.indptr().data(); }
  auto packed_rows_kernel() const {
    CsrView<T> view = a.view();
    view.values = values;
    view.indices = offsets;
    view.indices16 = nullptr;
    const CsrKernels<T>& kernels = csr_kernels<T>(active_isa());
    return [&kernels, view, columns = packed_panel_columns()](
               const T* packed, int64_t, int64_t r0, int64_t r1, const T* bias, T* c, int64_t ldc) {
      // A row stride of 1: each offset is where its entry's vector starts.
      kernels.spmm_rows_packed(row_slice(view, r0, r1), 0, r1 - r0, packed, 1, columns,
                               bias ? bias + r0 : nullptr, c, ldc);
    };
  }
};

}  // namespace

template <typename V, typename T>
void csr_matmul(const CsrMatrix<V>& a, const T* b, int64_t b_rstride, int64_t b_cstride, int64_t n,
                const T* bias, T* c, int64_t ldc, int num_threads, const V* values) {
  driver::matmul(CsrProduct<V>{a, values_or_stored(a, values)}, b, b_rstride, b_cstride, n, bias, c,
                 ldc, num_threads);
}

template <typename V, typename T>
void csr_linear(const CsrMatrix<V>& w, const T* x, int64_t ldx, int64_t batch, const T* bias, T* y,
                int64_t ldy, int num_threads, const V* values, Activation act,
                const V* chunk_values, int64_t chunk_values_layout) {
  driver::linear(
      CsrProduct<V>{w, values_or_stored(w, values), chunk_values, chunk_values_layout, batch}, x,
      ldx, batch, bias, y, ldy, num_threads, act);
}

template <typename T>
void csr_linear_pair(const CsrPairWeight<T>& first, Activation act, const CsrPairWeight<T>& second,
                     const T* x, int64_t ldx, int64_t batch, T* y, int64_t ldy, int num_threads) {
  const auto product = [batch](const CsrPairWeight<T>& w) {
    return CsrProduct<T>{w.matrix, values_or_stored(w.matrix, w.values), w.chunk_values,
                         w.chunk_values_layout, batch};
  };
  driver::linear_pair(product(first), product(second), x, ldx, batch, first.bias, act, second.bias,
                      y, ldy, num_threads);
}

template <typename T>
int64_t csr_packed_panel_columns(const CsrMatrix<T>& w) {
  return CsrProduct<T>{w}.packed_panel_columns();
}

namespace {

// run_packed_panels with a PanelJob's pack and emit.
template <typename T, typename Product>
void run_panel_job(const Product& product, int64_t panels, const PanelJob<T>& job, const T* bias,
                   int num_threads) {
  driver::run_packed_panels<T>(
      product, panels, bias, num_threads,
      [&](int64_t p, T* packed, int64_t panel_ld) { return job.pack(p, packed, panel_ld); },
      [&](int64_t p, int64_t count, int64_t r0, int64_t r1, const T* tile, int64_t tile_ld) {
        job.emit(p, count, r0, r1, tile, tile_ld);
      });
}

}  // namespace

template <typename T>
void csr_packed_panels(const CsrMatrix<T>& w, int64_t panels, const PanelJob<T>& job, const T* bias,
                       int num_threads, const T* values) {
  if (panels <= 0 || w.rows() == 0) return;
  run_panel_job(CsrProduct<T>{w, values_or_stored(w, values)}, panels, job, bias, num_threads);
}

template <typename T>
void csr_offset_panels(const CsrMatrix<T>& w, const index_t* offsets, int64_t panel_elements,
                       int64_t panels, const PanelJob<T>& job, const T* bias, int num_threads,
                       const T* values) {
  if (panels <= 0 || w.rows() == 0) return;
  constexpr int64_t kLine = 64 / static_cast<int64_t>(sizeof(T));
  const int64_t elements = (panel_elements + kLine - 1) / kLine * kLine;
  run_panel_job(OffsetPanelProduct<T>{w, values_or_stored(w, values), offsets, elements}, panels,
                job, bias, num_threads);
}

template <typename V>
ChunkLayout csr_chunk_layout(const CsrMatrix<V>& a) {
  return CsrProduct<V>{a}.chunk_layout(csr_kernels<V>(active_isa()));
}

template <typename T>
void csr_sampled_dot(const CsrMatrix<T>& pattern, const T* a, int64_t lda, const T* b, int64_t ldb,
                     int64_t n, T* out, int num_threads) {
  const CsrView<T> view = pattern.view();
  const CsrKernels<T>& kernels = csr_kernels<T>(active_isa());
  const int threads = threads_for_work(num_threads, (pattern.nnz() + pattern.rows()) * n);
  driver::for_row_ranges(pattern.indptr().data(), pattern.rows(), threads, 1,
                         [&](int64_t r0, int64_t r1) {
                           kernels.sampled_dot_rows(view, r0, r1, a, lda, b, ldb, n, out);
                         });
}

// The products for stored values V and dense operands T = compute_t<V>.
#define SPARSEGEMM_INSTANTIATE_CSR_PRODUCTS(V, T)                                               \
  template void csr_matmul<V, T>(const CsrMatrix<V>&, const T*, int64_t, int64_t, int64_t,      \
                                 const T*, T*, int64_t, int, const V*);                         \
  template void csr_linear<V, T>(const CsrMatrix<V>&, const T*, int64_t, int64_t, const T*, T*, \
                                 int64_t, int, const V*, Activation, const V*, int64_t);        \
  template ChunkLayout csr_chunk_layout<V>(const CsrMatrix<V>&);
SPARSEGEMM_INSTANTIATE_CSR_PRODUCTS(float, float)
SPARSEGEMM_INSTANTIATE_CSR_PRODUCTS(double, double)
SPARSEGEMM_INSTANTIATE_CSR_PRODUCTS(bfloat16_t, float)
#undef SPARSEGEMM_INSTANTIATE_CSR_PRODUCTS

#define SPARSEGEMM_INSTANTIATE_CSR_OPS(T)                                                        \
  template void csr_sampled_dot<T>(const CsrMatrix<T>&, const T*, int64_t, const T*, int64_t,    \
                                   int64_t, T*, int);                                            \
  template void csr_linear_pair<T>(const CsrPairWeight<T>&, Activation, const CsrPairWeight<T>&, \
                                   const T*, int64_t, int64_t, T*, int64_t, int);                \
  template int64_t csr_packed_panel_columns<T>(const CsrMatrix<T>&);                             \
  template void csr_packed_panels<T>(const CsrMatrix<T>&, int64_t, const PanelJob<T>&, const T*, \
                                     int, const T*);                                             \
  template void csr_offset_panels<T>(const CsrMatrix<T>&, const index_t*, int64_t, int64_t,      \
                                     const PanelJob<T>&, const T*, int, const T*);
SPARSEGEMM_INSTANTIATE_CSR_OPS(float)
SPARSEGEMM_INSTANTIATE_CSR_OPS(double)
#undef SPARSEGEMM_INSTANTIATE_CSR_OPS

}  // namespace sparsegemm
