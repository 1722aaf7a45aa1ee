// Drivers for the CSR products: they choose a kernel for the operand shapes,
// split rows across threads by stored entries, and own the scratch buffers.
// Operands are assumed valid (shapes checked by the caller; the CsrMatrix was
// validated when built).
#pragma once

#include <cstdint>

#include "core/activation.h"
#include "core/csr_matrix.h"

namespace sparsegemm {

// Every product takes an optional `values` (a.nnz() entries): when not null it
// replaces the matrix's stored values, so a caller that owns changing values
// (a training framework) can reuse one validated structure without copies. A
// pattern-only matrix (core/csr_matrix.h) stores none, so there it is required
// (std::invalid_argument when null).

// c = a @ b (+ bias[:, None]).
// b is a.cols() x n with element (k, j) at b[k * b_rstride + j * b_cstride];
// c is a.rows() x n, C order with row stride ldc. bias has a.rows() entries or is null.
// num_threads <= 0 means default_num_threads().
// V is the stored value type; b, bias and c have its compute type (float for
// bfloat16 values). So for csr_linear; the other products take float and
// double matrices only.
template <typename V, typename T = compute_t<V>>
void csr_matmul(const CsrMatrix<V>& a, const T* b, int64_t b_rstride, int64_t b_cstride, int64_t n,
                const T* bias, T* c, int64_t ldc, int num_threads, const V* values = nullptr);

// The nn.Linear product: y = x @ w.T (+ bias).
// x is batch x w.cols() with row stride ldx (rows contiguous); y is batch x w.rows(),
// row stride ldy. bias has w.rows() entries or is null.
// chunk_values, when not null, are the same values in chunk order for the
// layout whose key is chunk_values_layout (CsrMatrix::to_chunk_order,
// ChunkLayout::key): the chunked kernel reads them where it runs in that
// layout, and `values` otherwise.
// A matrix's own values are read in chunk order anyway (a copy made on first
// use), so this serves a caller that owns its values.
template <typename V, typename T = compute_t<V>>
void csr_linear(const CsrMatrix<V>& w, const T* x, int64_t ldx, int64_t batch, const T* bias, T* y,
                int64_t ldy, int num_threads, const V* values = nullptr,
                Activation act = Activation::None, const V* chunk_values = nullptr,
                int64_t chunk_values_layout = 0);

// One weight of csr_linear_pair: the matrix, optionally the caller's values
// and the same values in chunk order (as csr_linear's values and
// chunk_values), and the bias (or null).
template <typename T>
struct CsrPairWeight {
  const CsrMatrix<T>& matrix;
  const T* values = nullptr;
  const T* chunk_values = nullptr;
  int64_t chunk_values_layout = 0;
  const T* bias = nullptr;
};

// y = act(x @ w1.T + b1) @ w2.T + b2 with w1.rows() == w2.cols(): a
// feed-forward block whose hidden activations stay in cache, panel by panel
// of x's rows (driver::linear_pair).
template <typename T>
void csr_linear_pair(const CsrPairWeight<T>& first, Activation act, const CsrPairWeight<T>& second,
                     const T* x, int64_t ldx, int64_t batch, T* y, int64_t ldy, int num_threads);

// The column chunks the packed panel kernel of csr_linear runs in for `a` on
// the active ISA (columns 0: unchunked). Chunks keep the slice of x^T a chunk
// reads in L1 (or L2); see kernels/csr/csr_kernels.inl.
template <typename T>
ChunkLayout csr_chunk_layout(const CsrMatrix<T>& a);

// A dense operand b that the caller packs, and a product c = w @ b it takes
// back, one panel of columns at a time (drivers/product_driver.h
// run_packed_panels): a convolution's im2col matrix, which then never exists
// whole. Its methods run on the driver's threads and must not throw.
template <typename T>
class PanelJob {
 public:
  virtual ~PanelJob() = default;
  // Fills `packed` with panel p of b: w.cols() rows, panel_ld apart, of
  // csr_packed_panel_columns(w) entries, those past the real ones zero.
  // Returns the real ones.
  virtual int64_t pack(int64_t p, T* packed, int64_t panel_ld) const = 0;
  // Takes rows [r0, r1) of panel p of c (bias included), `count` real columns
  // of a tile with row stride tile_ld whose row 0 is row r0.
  virtual void emit(int64_t p, int64_t count, int64_t r0, int64_t r1, const T* tile,
                    int64_t tile_ld) const = 0;
};

// Columns per panel of csr_packed_panels for `w` on the active ISA.
template <typename T>
int64_t csr_packed_panel_columns(const CsrMatrix<T>& w);

// c = w @ b (+ bias) over `panels` panels of b that `job` packs and takes back.
template <typename T>
void csr_packed_panels(const CsrMatrix<T>& w, int64_t panels, const PanelJob<T>& job, const T* bias,
                       int num_threads, const T* values = nullptr);

// csr_packed_panels over a panel in the job's own layout: stored entry j reads
// its vector of the panel from element offsets[j] on (nnz entries, each at
// most panel_elements - csr_packed_panel_columns(w)), not from row column(j).
// A panel holds panel_elements entries and job.pack gets panel_ld 1. A
// stride-1 convolution packs one input row per (channel, kernel row) this way,
// which every kernel column reads at its own shift (CsrMatrix::tap_offsets).
template <typename T>
void csr_offset_panels(const CsrMatrix<T>& w, const index_t* offsets, int64_t panel_elements,
                       int64_t panels, const PanelJob<T>& job, const T* bias, int num_threads,
                       const T* values = nullptr);

// Gradient of a sparse weight at its stored positions only:
//   out[j] = sum_t a[r, t] * b[k, t] for each stored (r, k) of `pattern` at position j.
// a is pattern.rows() x n, b is pattern.cols() x n, rows contiguous (strides lda, ldb).
template <typename T>
void csr_sampled_dot(const CsrMatrix<T>& pattern, const T* a, int64_t lda, const T* b, int64_t ldb,
                     int64_t n, T* out, int num_threads);

}  // namespace sparsegemm
