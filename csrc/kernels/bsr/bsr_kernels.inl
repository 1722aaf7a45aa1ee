// BSR kernels written once against Vec<T> (kernels/simd/). This file is
// included inside an ISA namespace by bsr_<isa>.cpp after the matching
// simd_<isa>.h; it includes no headers but its sibling stored_values.inl.
//
// Panel kernel (many dense columns): vectorised along the columns of b with a
// register tile of RT block rows x NV vectors. For each stored block it loads
// the NV vectors of each of its C rows of b once and multiplies each into RT
// accumulators (one broadcast block value per row), so a load feeds RT FMAs
// instead of one as in CSR: the kernel is bound by FMAs, not by loads.
// Blocks taller than the tile (16x1) are processed in R / RT passes.
//
// Few-vector kernel (batch 1 to 4): streams each block once. For r x 1 blocks
// whose height is a multiple of the vector width it loads a block's R values
// contiguously and multiplies them by a broadcast x(v, k), accumulating the
// block row's outputs in vectors (no gathers, no horizontal sums). Other
// shapes accumulate in a small fixed-size array the compiler vectorises.
//
// Template block shapes R, C > 0 are compile-time; 0 means "read it from the
// view at run time" (the generic kernel for block shapes without a
// specialisation).
//
// W is the stored value type (float, double or bfloat16, widened as loaded);
// the dense operands, bias and results have its compute type T = compute_t<W>.

#include "kernels/simd/stored_values.inl"

namespace bsr_detail {

// Accumulators get about three quarters of the registers; the rest hold the
// loaded vectors of b and the broadcast block value.
template <typename T>
constexpr int accumulator_registers() {
  return Vec<T>::kRegisters * 3 / 4;
}

template <typename T>
constexpr int max_tile_rows() {
  return Vec<T>::kRegisters >= 32 ? 8 : 4;
}

// Rows of the register tile for blocks of height R (R == 0: generic, one row).
template <typename T, int R>
constexpr int tile_rows() {
  return R == 0 ? 1 : (R < max_tile_rows<T>() ? R : max_tile_rows<T>());
}

// Vectors of columns in the register tile for RT rows.
template <typename T, int RT>
constexpr int tile_vectors() {
  constexpr int nv = accumulator_registers<T>() / RT;
  return nv < 1 ? 1 : (nv > 4 ? 4 : nv);
}

// Blocks ahead whose rows of b are prefetched.
constexpr int64_t kPrefetchBlocks = 8;

// c[0:rows_valid, tile] = bias + (RT rows of a block row) @ b[:, tile].
// vals points at the first block's value for tile row 0, column 0; row i,
// column c of block j is vals[j * block_size + i * C + c]. Columns of a block
// at or beyond `cols` (padding) are skipped, so b is never read past its end.
// kMasked: the last of the NV vectors has only the lanes in `last` active.
// kTransposedOut: c is stored transposed, c(r, j) at c[j * ldc + r], for the
// first tile_cols columns (the nn.Linear output y = (w @ x^T)^T, written in
// place instead of through a transposed copy).
template <typename T, int RT, int kC, int NV, bool kMasked, bool kTransposedOut, typename W>
inline void panel_tile(const index_t* block_cols, const W* vals, int64_t nblocks,
                       int64_t block_size, int runtime_c, int64_t cols, const T* b, int64_t ldb,
                       const T* bias, int rows_valid, T* c, int64_t ldc, typename Vec<T>::mask last,
                       int64_t tile_cols) {
  using V = Vec<T>;
  using reg = typename V::reg;
  constexpr int L = V::kLanes;
  const int C = kC > 0 ? kC : runtime_c;
  reg acc[RT][NV];
  for (int i = 0; i < RT; ++i) {
    const reg init = (bias != nullptr && i < rows_valid) ? V::set1(bias[i]) : V::zero();
    for (int v = 0; v < NV; ++v) acc[i][v] = init;
  }
  const auto multiply_row_of_b = [&](const T* brow, const W* w) {
    reg bv[NV];
    for (int v = 0; v < NV; ++v)
      bv[v] = (kMasked && v == NV - 1) ? V::maskz_load(last, brow + v * L) : V::load(brow + v * L);
    for (int i = 0; i < RT; ++i) {
      const reg wi = V::set1(stored_value(w, i * C));
      for (int v = 0; v < NV; ++v) acc[i][v] = V::fmadd(wi, bv[v], acc[i][v]);
    }
  };
  for (int64_t j = 0; j < nblocks; ++j) {
    if (j + kPrefetchBlocks < nblocks) {
      const T* ahead = b + static_cast<int64_t>(block_cols[j + kPrefetchBlocks]) * C * ldb;
      for (int v = 0; v < NV; ++v) V::prefetch(ahead + v * L);
    }
    const int64_t k0 = static_cast<int64_t>(block_cols[j]) * C;
    const T* bj = b + k0 * ldb;
    const W* wj = vals + j * block_size;
    if (kC == 1) {
      multiply_row_of_b(bj, wj);
    } else if (kC > 1 && k0 + kC <= cols) {
      for (int col = 0; col < kC; ++col) multiply_row_of_b(bj + col * ldb, wj + col);  // unrolled
    } else {
      const int64_t width = k0 + C <= cols ? C : cols - k0;  // the last block column may be padded
      for (int64_t col = 0; col < width; ++col) multiply_row_of_b(bj + col * ldb, wj + col);
    }
  }
  if constexpr (kTransposedOut) {
    // Spill the tile, then write each output column's rows contiguously.
    T spilled[RT][NV * L];
    for (int i = 0; i < RT; ++i)
      for (int v = 0; v < NV; ++v) V::store(&spilled[i][v * L], acc[i][v]);
    for (int64_t j = 0; j < tile_cols; ++j)
      for (int i = 0; i < rows_valid; ++i) c[j * ldc + i] = spilled[i][j];
    return;
  }
  for (int i = 0; i < RT && i < rows_valid; ++i)
    for (int v = 0; v < NV; ++v) {
      if (kMasked && v == NV - 1)
        V::mask_store(c + i * ldc + v * L, last, acc[i][v]);
      else
        V::store(c + i * ldc + v * L, acc[i][v]);
    }
}

// Calls fn(TileWidth<nv, masked>) for a run-time nv in [1, NV].
template <int NV, bool kMaskedLast>
struct TileWidth {
  static constexpr int kNV = NV;
  static constexpr bool kMasked = kMaskedLast;
};

template <int NV, typename Fn>
inline void with_tile_width(int nv, bool masked, const Fn& fn) {
  if constexpr (NV > 1) {
    if (nv < NV) {
      with_tile_width<NV - 1>(nv, masked, fn);
      return;
    }
  }
  if (masked)
    fn(TileWidth<NV, true>{});
  else
    fn(TileWidth<NV, false>{});
}

// Column tiles are the outer loop: one tile of b (a.cols x NV vectors) stays
// in L2 while every block row of the range passes over it, and the blocks
// (read sequentially) stream through once per tile. The n / L vectors are
// spread evenly over the fewest tiles of at most NV vectors (64 columns with
// at most 3 vectors per tile: 2 + 2, not 3 + 1), so no tile is left with too
// few accumulators.
template <typename W, int kR, int kC, bool kTransposedOut, typename T = compute_t<W>>
void spmm_block_rows_impl(const BsrView<W>& a, int64_t br_begin, int64_t br_end, const T* b,
                          int64_t ldb, int64_t n, const T* bias, T* c, int64_t ldc) {
  using V = Vec<T>;
  constexpr int L = V::kLanes;
  constexpr int RT = tile_rows<T, kR>();
  constexpr int NV = tile_vectors<T, RT>();
  const int R = kR > 0 ? kR : a.block_rows_r;
  const int64_t block_size = static_cast<int64_t>(R) * a.block_cols_c;
  const int64_t total_vectors = (n + L - 1) / L;
  const typename V::mask tail_mask =
      V::tail_mask(n - (total_vectors - 1) * static_cast<int64_t>(L));

  int64_t col = 0;
  for (int64_t vectors_left = total_vectors; vectors_left > 0;) {
    const int64_t tiles_left = (vectors_left + NV - 1) / NV;
    const int nv = static_cast<int>((vectors_left + tiles_left - 1) / tiles_left);
    const bool masked = nv == vectors_left && n % L != 0;
    const int64_t tile_cols = n - col < nv * L ? n - col : static_cast<int64_t>(nv) * L;
    with_tile_width<NV>(nv, masked, [&](auto width) {
      using Width = decltype(width);
      for (int64_t br = br_begin; br < br_end; ++br) {
        const int64_t first = a.indptr[br];
        for (int pass_row = 0; pass_row < R; pass_row += RT) {
          const int64_t row0 = br * R + pass_row;
          if (row0 >= a.rows) break;  // the rest of this block row is padding
          const int valid = static_cast<int>(a.rows - row0 < RT ? a.rows - row0 : RT);
          T* out = kTransposedOut ? c + col * ldc + row0 : c + row0 * ldc + col;
          panel_tile<T, RT, kC, Width::kNV, Width::kMasked, kTransposedOut>(
              a.indices + first, a.values + first * block_size + pass_row * a.block_cols_c,
              a.indptr[br + 1] - first, block_size, a.block_cols_c, a.cols, b + col, ldb,
              bias ? bias + row0 : nullptr, valid, out, ldc, tail_mask, tile_cols);
        }
      }
    });
    col += static_cast<int64_t>(nv) * L;
    vectors_left -= nv;
  }
}

// One block row against NVEC vectors, r x 1 blocks with R a multiple of the
// vector width: out(v, i) for the R rows, vectorised along the rows.
template <typename T, int R, int NVEC, typename W>
inline void gemv_block_row_vectors(const index_t* block_cols, const W* vals, int64_t nblocks,
                                   const T* x, int64_t x_vstride, int64_t x_kstride, T* out) {
  using V = Vec<T>;
  using reg = typename V::reg;
  constexpr int L = V::kLanes;
  constexpr int RV = R / L;
  // Two accumulator sets (even and odd blocks) keep FMAs in flight when the
  // tile is small, as long as they fit in half the registers.
  constexpr int kSets = 2 * NVEC * RV <= V::kRegisters / 2 ? 2 : 1;
  reg acc[kSets][NVEC][RV];
  for (int s = 0; s < kSets; ++s)
    for (int v = 0; v < NVEC; ++v)
      for (int u = 0; u < RV; ++u) acc[s][v][u] = V::zero();
  const auto multiply_block = [&](int s, int64_t j) {
    const T* xk = x + static_cast<int64_t>(block_cols[j]) * x_kstride;
    reg w[RV];
    for (int u = 0; u < RV; ++u) w[u] = load_stored(vals + j * R + u * L);
    for (int v = 0; v < NVEC; ++v) {
      const reg xv = V::set1(xk[v * x_vstride]);
      for (int u = 0; u < RV; ++u) acc[s][v][u] = V::fmadd(w[u], xv, acc[s][v][u]);
    }
  };
  int64_t j = 0;
  for (; j + kSets <= nblocks; j += kSets)
    for (int s = 0; s < kSets; ++s) multiply_block(s, j + s);
  for (; j < nblocks; ++j) multiply_block(0, j);
  for (int v = 0; v < NVEC; ++v)
    for (int u = 0; u < RV; ++u) {
      reg sum = acc[0][v][u];
      for (int s = 1; s < kSets; ++s) sum = V::add(sum, acc[s][v][u]);
      V::store(out + v * R + u * L, sum);
    }
}

// One block row against NVEC vectors, any block shape: out(v, i) for the R
// rows, accumulated in a fixed-size array (vectorised by the compiler when R
// and C are compile-time). Padding columns of the last block column are skipped.
template <typename T, int kR, int kC, int NVEC, typename W>
inline void gemv_block_row_any(const index_t* block_cols, const W* vals, int64_t nblocks,
                               int runtime_r, int runtime_c, int64_t cols, const T* x,
                               int64_t x_vstride, int64_t x_kstride, T* out) {
  const int R = kR > 0 ? kR : runtime_r;
  const int C = kC > 0 ? kC : runtime_c;
  const int64_t block_size = static_cast<int64_t>(R) * C;
  constexpr int kMaxR = kR > 0 ? kR : kMaxBlockEdge;
  // Independent accumulator sets for consecutive blocks, so that small blocks
  // (4 x 1: one short vector of sums) are not bound by the FMA latency.
  constexpr int kSets = kR == 0 ? 1 : (kR * NVEC <= 8 ? 4 : (kR * NVEC <= 32 ? 2 : 1));
  T acc[kSets][NVEC][kMaxR];
  for (int s = 0; s < kSets; ++s)
    for (int v = 0; v < NVEC; ++v)
      for (int i = 0; i < R; ++i) acc[s][v][i] = T(0);
  const auto multiply_block = [&](int s, int64_t j) {
    const int64_t k0 = static_cast<int64_t>(block_cols[j]) * C;
    const W* w = vals + j * block_size;
    const auto multiply_column = [&](int64_t col) {
      const T* xk = x + (k0 + col) * x_kstride;
      for (int v = 0; v < NVEC; ++v) {
        const T xv = xk[v * x_vstride];
        for (int i = 0; i < R; ++i) acc[s][v][i] += stored_value(w, i * C + col) * xv;
      }
    };
    if (kC > 0 && k0 + kC <= cols) {
      for (int col = 0; col < kC; ++col) multiply_column(col);  // unrolled
    } else {
      const int64_t width = k0 + C <= cols ? C : cols - k0;  // the last block column may be padded
      for (int64_t col = 0; col < width; ++col) multiply_column(col);
    }
  };
  int64_t j = 0;
  for (; j + kSets <= nblocks; j += kSets)
    for (int s = 0; s < kSets; ++s) multiply_block(s, j + s);
  for (; j < nblocks; ++j) multiply_block(0, j);
  for (int s = 1; s < kSets; ++s)
    for (int v = 0; v < NVEC; ++v)
      for (int i = 0; i < R; ++i) acc[0][v][i] += acc[s][v][i];
  for (int v = 0; v < NVEC; ++v)
    for (int i = 0; i < R; ++i) out[v * R + i] = acc[0][v][i];
}

template <typename W, int kR, int kC, int NVEC, typename T = compute_t<W>>
void gemv_group(const BsrView<W>& a, int64_t br_begin, int64_t br_end, const T* x,
                int64_t x_vstride, int64_t x_kstride, const T* bias, T* y, int64_t y_vstride,
                int64_t y_rstride) {
  constexpr int L = Vec<T>::kLanes;
  constexpr bool kRowVectors = kC == 1 && kR > 0 && kR % L == 0;
  constexpr int kMaxR = kR > 0 ? kR : kMaxBlockEdge;
  const int R = kR > 0 ? kR : a.block_rows_r;
  const int64_t block_size = static_cast<int64_t>(R) * a.block_cols_c;
  T out[NVEC * kMaxR];
  for (int64_t br = br_begin; br < br_end; ++br) {
    const int64_t first = a.indptr[br], nblocks = a.indptr[br + 1] - first;
    const index_t* block_cols = a.indices + first;
    const W* vals = a.values + first * block_size;
    if constexpr (kRowVectors)
      gemv_block_row_vectors<T, kR, NVEC>(block_cols, vals, nblocks, x, x_vstride, x_kstride, out);
    else
      gemv_block_row_any<T, kR, kC, NVEC>(block_cols, vals, nblocks, a.block_rows_r, a.block_cols_c,
                                          a.cols, x, x_vstride, x_kstride, out);
    const int64_t row0 = br * R;
    const int64_t valid = a.rows - row0 < R ? a.rows - row0 : R;
    for (int64_t i = 0; i < valid; ++i) {
      const T b = bias ? bias[row0 + i] : T(0);
      for (int v = 0; v < NVEC; ++v) y[v * y_vstride + (row0 + i) * y_rstride] = out[v * R + i] + b;
    }
  }
}

template <typename W, int kR, int kC, typename T = compute_t<W>>
void gemv_block_rows_impl(const BsrView<W>& a, int64_t br_begin, int64_t br_end, const T* x,
                          int64_t x_vstride, int64_t x_kstride, int64_t nvec, const T* bias, T* y,
                          int64_t y_vstride, int64_t y_rstride) {
  constexpr int kMaxGroup = 4;
  for (int64_t v0 = 0; v0 < nvec; v0 += kMaxGroup) {
    const int64_t group = nvec - v0 < kMaxGroup ? nvec - v0 : kMaxGroup;
    const T* xg = x + v0 * x_vstride;
    T* yg = y + v0 * y_vstride;
    switch (group) {
      case 1:
        gemv_group<W, kR, kC, 1>(a, br_begin, br_end, xg, x_vstride, x_kstride, bias, yg, y_vstride,
                                 y_rstride);
        break;
      case 2:
        gemv_group<W, kR, kC, 2>(a, br_begin, br_end, xg, x_vstride, x_kstride, bias, yg, y_vstride,
                                 y_rstride);
        break;
      case 3:
        gemv_group<W, kR, kC, 3>(a, br_begin, br_end, xg, x_vstride, x_kstride, bias, yg, y_vstride,
                                 y_rstride);
        break;
      default:
        gemv_group<W, kR, kC, 4>(a, br_begin, br_end, xg, x_vstride, x_kstride, bias, yg, y_vstride,
                                 y_rstride);
        break;
    }
  }
}

// Calls body(ShapeTag<R, C>) for the block shapes listed in
// bsr_block_shapes.inc, or body(ShapeTag<0, 0>) (the generic kernel) for any
// other shape.
template <int R, int C>
struct ShapeTag {
  static constexpr int kR = R;
  static constexpr int kC = C;
};

template <typename Body>
void dispatch_block_shape(int r, int c, const Body& body) {
#define SPARSEGEMM_BSR_BLOCK_SHAPE(R, C) \
  if (r == (R) && c == (C)) return body(ShapeTag<R, C>{});
#include "kernels/bsr/bsr_block_shapes.inc"
#undef SPARSEGEMM_BSR_BLOCK_SHAPE
  body(ShapeTag<0, 0>{});
}

}  // namespace bsr_detail

template <typename W, typename T = compute_t<W>>
void spmm_block_rows(const BsrView<W>& a, int64_t br_begin, int64_t br_end, const T* b, int64_t ldb,
                     int64_t n, const T* bias, T* c, int64_t ldc) {
  bsr_detail::dispatch_block_shape(a.block_rows_r, a.block_cols_c, [&](auto shape) {
    using S = decltype(shape);
    bsr_detail::spmm_block_rows_impl<W, S::kR, S::kC, false>(a, br_begin, br_end, b, ldb, n, bias,
                                                             c, ldc);
  });
}

template <typename W, typename T = compute_t<W>>
void spmm_block_rows_transposed(const BsrView<W>& a, int64_t br_begin, int64_t br_end, const T* b,
                                int64_t ldb, int64_t n, const T* bias, T* ct, int64_t ldct) {
  bsr_detail::dispatch_block_shape(a.block_rows_r, a.block_cols_c, [&](auto shape) {
    using S = decltype(shape);
    bsr_detail::spmm_block_rows_impl<W, S::kR, S::kC, true>(a, br_begin, br_end, b, ldb, n, bias,
                                                            ct, ldct);
  });
}

template <typename W, typename T = compute_t<W>>
void gemv_block_rows(const BsrView<W>& a, int64_t br_begin, int64_t br_end, const T* x,
                     int64_t x_vstride, int64_t x_kstride, int64_t nvec, const T* bias, T* y,
                     int64_t y_vstride, int64_t y_rstride) {
  bsr_detail::dispatch_block_shape(a.block_rows_r, a.block_cols_c, [&](auto shape) {
    using S = decltype(shape);
    bsr_detail::gemv_block_rows_impl<W, S::kR, S::kC>(a, br_begin, br_end, x, x_vstride, x_kstride,
                                                      nvec, bias, y, y_vstride, y_rstride);
  });
}

template <typename W>
const BsrKernels<W>& bsr_kernel_table() {
  static const BsrKernels<W> table{&spmm_block_rows<W>, &spmm_block_rows_transposed<W>,
                                   &gemv_block_rows<W>};
  return table;
}

template const BsrKernels<float>& bsr_kernel_table<float>();
template const BsrKernels<double>& bsr_kernel_table<double>();
template const BsrKernels<bfloat16_t>& bsr_kernel_table<bfloat16_t>();
