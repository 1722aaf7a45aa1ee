// CSR kernels written once against Vec<T> (kernels/simd/). This file is
// included inside an ISA namespace by csr_<isa>.cpp after the matching
// simd_<isa>.h; it includes no headers but its sibling stored_values.inl.
//
// Panel kernel: vectorised along the dense operand's columns. For each stored
// a[r, k] it broadcasts the value and multiplies it into a register tile of NV
// vectors from row k of b; several accumulator sets (alternate nonzeros) keep
// enough FMAs in flight to hide their latency. Every nonzero costs NV loads of
// b at random rows, so the kernel is bound by cache bandwidth: NV is chosen so
// the panel of b (a.cols x NV vectors) stays in L2, or, for denser matrices that
// run in column chunks, so each chunk's slice of it stays in L1; packed panels
// are narrowed to the batch (packed_panel_columns).
// Gather kernel: for few dense vectors, vectorised along the stored entries of
// a row, gathering x at the column indices, then reduced horizontally.
// Stored values (float, double or bfloat16) are read through stored_values.inl.

#include "kernels/simd/stored_values.inl"

// Half of this core's L2, and at least kPanelCacheBytes: room for the panel
// of b, with the rest left to the stream of a's indices and values. On a Xeon
// with 2 MiB of L2 the 1 MiB budget (with the L1-sized chunks below) ran
// 4096x4096 at batch 64 and 90% sparsity 1.07-1.15x faster than 512 KiB
// (2 threads, alternating processes); Zen 4's 1 MiB L2 keeps 512 KiB.
constexpr int64_t kPanelCacheBytes = 512 * 1024;
inline int64_t panel_cache_bytes() {
  return std::max<int64_t>(kPanelCacheBytes, l2_cache_bytes() / 2);
}
// Packed panels of a matrix holding at least kWidePanelMinDensity of its
// entries may take up to kWidePanelCacheBytes: there the kernel runs in column
// chunks (each chunk's slice of the panel stays in L1), so the panel need not
// fit L2, and a wider register tile loads each stored entry's index and value
// for more columns. Zen 4, 2 threads, in-process A/B against 512 KiB at batch
// 64-128: 1.02-1.52x at 30-70% sparsity on 4096^2, 1024x4096, 768x3072,
// 11008x4096 and 4096x11008; at 90-99% 0.84-2.67x, noisy, so sparser matrices
// keep 512 KiB. Convolutions at 70% (batch 1): 3x3 512->512 at 7x7 1.22-1.26x,
// 3x3 256->256 at 14x14 0.91-0.92x (196 pixels fill four 64-column panels
// where they filled seven of 32 with less padding).
constexpr int64_t kWidePanelCacheBytes = 2 * 1024 * 1024;
constexpr double kWidePanelMinDensity = 0.2;
// Rows are processed in blocks of about this many stored entries (8-12 MiB with
// indices) so a block of a stays in the last-level cache across column panels.
constexpr int64_t kRowBlockNnz = 1 << 20;
// Column chunks: the slice of a panel of b that one chunk reads fits in the
// L1 data cache (32-48 KiB on current x86), taken as at least kChunkCacheBytes.
// Rows go in blocks of about kChunkRowBlockNnz stored entries
// (core/csr_matrix.h). 32 KiB chunks and 64K-entry blocks measured 1.05-1.15x
// faster than 24 KiB and 32K (Zen 3, one core, density 0.3, standalone
// harness). On a Xeon with 48 KiB of L1, 48 KiB chunks ran BERT-base and
// 4096-wide layers at 90% sparsity 1.05-1.15x faster than 32 KiB (batch 64-128,
// 2 threads, alternating processes), and level at 70%.
constexpr int64_t kChunkCacheBytes = 32 * 1024;
inline int64_t chunk_cache_bytes() {
  return std::max<int64_t>(kChunkCacheBytes, l1_data_cache_bytes());
}
// Over CSR order, a chunk pass reads each row's segment from a different place
// in a's arrays, so the hardware prefetchers never see a stream: each segment
// started with a cache miss on its indices and values, on the critical path to
// its loads of b. The pass prefetches the segment this many rows ahead
// instead. Measured on Zen 3 (one core, density 0.3, batch 64-128, standalone
// harness): 1.1-1.5x faster than without (4096x4096, 768x3072, 3072x768,
// 768x768). Over chunk order (CsrView::segment_start) the pass reads one
// stream and needs no prefetch.
constexpr int64_t kSegmentPrefetchRows = 2;
// Rows whose segments within a chunk average fewer entries than this run
// faster unchunked: each segment reloads and stores its accumulators. Measured
// on Zen 3 (AVX2, 2 threads, 512-1024 rows, 768-4096 columns): chunks of 192
// columns gain 1.24-2.7x at densities 0.3-0.5 (the slowest case unchunked was
// a 3072-column panel that no longer fit L2 beside a's stream), and nothing at
// 0.1-0.2 (19-38 entries per segment) over CSR order.
constexpr int64_t kMinChunkSegment = 48;
// Where the unchunked panel of b takes this much of L2 or more, chunks in
// chunk order pay from far shorter segments: at density 0.1 (about 25 entries
// per segment) 1.14-1.25x faster than unchunked with 1536-4096 columns, and
// 1.03-1.08x at 0.05; with 768 columns (a 96 KiB panel) no faster, and with
// 384 0.90x (Zen 3, AVX2, 2 threads, 64-1024 rows, in-process A/B).
constexpr int64_t kLargePanelBytes = 192 * 1024;
constexpr int64_t kMinChunkSegmentLargePanel = 4;
// With 64-byte vectors (AVX-512 floats) a 4-vector panel takes 256 bytes per
// column of a, so 384 columns (MiniLM) already need 96 KiB, three times L1,
// and chunks in chunk order pay from shorter segments. Zen 4, 2 threads,
// 1024-3136 rows, in-process A/B against 48 entries, chunks of 128 columns:
// 1152x384 at density 0.3 (38 entries per segment) 1.25x faster, 0.2 1.19x,
// 0.15 1.07x, 0.1 (13 entries) level (0.98-1.02x, also 64x256, 128x512 and
// 1536x384); 1536x384 at 0.2 1.11x, 128x512 at 0.15 1.10x.
constexpr int64_t kMinChunkSegmentWideVectors = 16;
// Sparse matrices whose packed panel was narrowed below 4 vectors to fit L2
// (panel_vectors) get chunks wider than L1, with 64-byte vectors: wide enough
// for about kSparseChunkSegment entries per row segment, up to a slice of
// kSparseChunkMaxBytes (L2-resident). There each stored entry loads two vectors
// of b, so the accumulators' loads and stores per segment weigh more than the
// slice's L2 latency. Zen 4, 2 threads, batch 64, warm, in-process A/B against
// L1-sized chunks, best slice per sparsity on 4096^2, 1024x4096 and 4096x1024:
// 48-64 KiB 1.01-1.04x at 85%, 64 KiB 1.05-1.08x at 90%, 128 KiB 1.14-1.28x at
// 95%; 256 KiB lost at 85-90% (0.79-0.97x). Four-vector panels at 70% lost with
// 64 KiB slices (0.93x), so they keep L1 chunks.
constexpr int64_t kSparseChunkSegment = 48;
// Row quads (quads_times_panel_chunked) load each row of b's slice once for
// up to four stored entries, so their chunks may reach past L1, and every
// region pays its 15 subset loops: Zen 4, 2 threads, in-process A/B of slices
// of 32-128 KiB against rows on 32 KiB, batch 64-128, 1024x4096, 4096x1024,
// 3072x768 and 4096^2: 48 KiB 1.14x at 70% (32 KiB 1.10-1.11x), 1.19-1.23x
// at 60%; 64 KiB level with 48 at 50% on 4096^2 and 768x3072.
constexpr double kQuadChunkCacheRatio = 1.5;
constexpr int64_t kSparseChunkMaxBytes = 128 * 1024;

// Calls body(indices) with the matrix's column indices in their stored width.
template <typename T, typename Body>
inline void with_indices(const CsrView<T>& a, const Body& body) {
  if (a.indices16 != nullptr)
    body(a.indices16);
  else
    body(a.indices);
}

// Independent accumulator sets for a tile of NV vectors: enough FMAs in flight
// to cover their latency (about 4 cycles, up to 2 issued per cycle).
template <int NV>
constexpr int accumulator_sets() {
  return NV >= 8 ? 1 : NV >= 2 ? 2 : 4;
}

// One row of a times a panel of NV vectors of b; with Masked, a single partial
// vector of `active` columns (NV must be 1). With Accumulate the row adds to c
// (a later column chunk); without, it writes bias + the product. A nonzero
// PackedLdb is b's row stride, known at compile time (packed panels): with a
// run-time stride the AVX2 loop ran out of registers and reloaded the stride
// and its bound from the stack on every pair of entries.
template <typename T, int NV, bool Masked, bool Accumulate = false, int64_t PackedLdb = 0,
          typename I, typename W>
inline void spmm_row_panel(const I* cols, const W* vals, int64_t nnz, const T* b, int64_t ldb,
                           T bias, T* c, int64_t active) {
  if constexpr (PackedLdb != 0) ldb = PackedLdb;
  using V = Vec<T>;
  constexpr int L = V::kLanes;
  constexpr int U = accumulator_sets<NV>();
  static_assert(!Masked || NV == 1, "a masked panel is one vector wide");
  const typename V::mask m = V::tail_mask(Masked ? active : L);
  typename V::reg acc[U * NV];
  for (int i = 0; i < U * NV; ++i) acc[i] = V::zero();
  for (int v = 0; v < NV; ++v) {
    if constexpr (!Accumulate)
      acc[v] = V::set1(bias);
    else if constexpr (Masked)
      acc[v] = V::maskz_load(m, c + v * L);
    else
      acc[v] = V::load(c + v * L);
  }
  int64_t j = 0;
  for (; j + U <= nnz; j += U)
    for (int u = 0; u < U; ++u) {
      const T* row = b + static_cast<int64_t>(cols[j + u]) * ldb;
      const typename V::reg w = V::set1(stored_value(vals, j + u));
      for (int v = 0; v < NV; ++v) {
        if constexpr (Masked)
          acc[u * NV + v] = V::fmadd(w, V::maskz_load(m, row + v * L), acc[u * NV + v]);
        else
          acc[u * NV + v] = V::fmadd(w, V::load(row + v * L), acc[u * NV + v]);
      }
    }
  for (; j < nnz; ++j) {
    const T* row = b + static_cast<int64_t>(cols[j]) * ldb;
    const typename V::reg w = V::set1(stored_value(vals, j));
    for (int v = 0; v < NV; ++v) {
      if constexpr (Masked)
        acc[v] = V::fmadd(w, V::maskz_load(m, row + v * L), acc[v]);
      else
        acc[v] = V::fmadd(w, V::load(row + v * L), acc[v]);
    }
  }
  for (int u = 1; u < U; ++u)
    for (int v = 0; v < NV; ++v) acc[v] = V::add(acc[v], acc[u * NV + v]);
  for (int v = 0; v < NV; ++v) {
    if constexpr (Masked)
      V::mask_store(c + v * L, m, acc[v]);
    else
      V::store(c + v * L, acc[v]);
  }
}

// Stored bfloat16 values widened per row segment into this many floats on the
// stack (1 KiB, in L1) before the panel loop, which then broadcasts each value
// with one load as for float values. Broadcast from a register, a bfloat16
// value costs a shift and two port-5 moves, taken from the FMAs' ports. 4096x11008
// at 70-90% sparsity, batch 16-64 (Xeon, 2 threads, cold, alternating builds):
// 1.00-1.12x faster than without, and 0.99-1.07x the same CSR with float values,
// where it ran 0.96-1.03x (docs/results/xeon-stop54/bf16-csr-widened-ab.txt).
constexpr int64_t kWidenedValues = 256;

// spmm_row_panel over bfloat16 values: the same loop over widened chunks of them.
template <typename T, int NV, bool Masked, bool Accumulate = false, int64_t PackedLdb = 0,
          typename I>
inline void spmm_row_panel(const I* cols, const bfloat16_t* vals, int64_t nnz, const T* b,
                           int64_t ldb, T bias, T* c, int64_t active) {
  alignas(64) T widened[kWidenedValues];
  int64_t first = 0;
  do {  // at least once: an empty segment still writes bias (or keeps c)
    const int64_t count = std::min(kWidenedValues, nnz - first);
    widen_stored(vals + first, count, widened);
    if (first == 0)
      spmm_row_panel<T, NV, Masked, Accumulate, PackedLdb>(cols, widened, count, b, ldb, bias, c,
                                                           active);
    else
      spmm_row_panel<T, NV, Masked, true, PackedLdb>(cols + first, widened, count, b, ldb, T(0), c,
                                                     active);
    first += count;
  } while (first < nnz);
}

// Calls body(block_begin, block_end) for consecutive blocks of [row_begin,
// row_end) holding about block_nnz stored entries each, so a block of a
// stays in the last-level cache across the column panels.
template <typename T, typename Body>
inline void for_row_blocks(const CsrView<T>& a, int64_t row_begin, int64_t row_end,
                           const Body& body, int64_t block_nnz = kRowBlockNnz) {
  sparsegemm::for_row_blocks(a.indptr, row_begin, row_end, block_nnz, body);
}

// The blocks of chunk order (CsrMatrix::chunk_order, counted from row 0) that
// meet [row_begin, row_end), clipped to it.
template <typename T, typename Body>
inline void for_chunk_order_blocks(const CsrView<T>& a, int64_t row_begin, int64_t row_end,
                                   const Body& body) {
  sparsegemm::for_row_blocks(a.indptr, 0, row_end, kChunkRowBlockNnz, [&](int64_t b0, int64_t b1) {
    if (b1 > row_begin) body(std::max(b0, row_begin), b1);
  });
}

// Rows [r0, r1) of a times one panel of b (row stride ldb) into c's columns
// [col, col + NV vectors), or `active` columns when Masked.
template <typename W, int NV, bool Masked, typename I, typename T = compute_t<W>>
inline void rows_times_panel(const CsrView<W>& a, const I* indices, int64_t r0, int64_t r1,
                             const T* b, int64_t ldb, const T* bias, T* c, int64_t ldc, int64_t col,
                             int64_t active) {
  for (int64_t r = r0; r < r1; ++r) {
    const int64_t s = a.indptr[r];
    spmm_row_panel<T, NV, Masked>(indices + s, a.values + s, a.indptr[r + 1] - s, b, ldb,
                                  bias ? bias[r] : T(0), c + r * ldc + col, active);
  }
}

// Prefetches the indices and values of entries [begin, end) into L1.
template <typename W, typename I>
inline void prefetch_entries(const I* indices, const W* values, int64_t begin, int64_t end) {
  const auto lines = [](const auto* first, const auto* last) {
    const char* p = reinterpret_cast<const char*>(first);
    const char* stop = reinterpret_cast<const char*>(last);
    for (; p < stop; p += 64) Vec<compute_t<W>>::prefetch(p);
  };
  lines(indices + begin, indices + end);
  lines(values + begin, values + end);
}

// rows_times_panel for a full panel and a block of rows, chunk by chunk over
// a's column chunks (a.chunk_bounds set): every row's segment in chunk 0, then
// in chunk 1, and so on, so that chunk's rows of b stay in L1. A nonzero
// PackedLdb is b's row stride (see spmm_row_panel), else ldb is.
template <typename W, int NV, int64_t PackedLdb, typename I, typename T = compute_t<W>>
inline void rows_times_panel_chunked(const CsrView<W>& a, const I* indices, int64_t r0, int64_t r1,
                                     const T* b, int64_t ldb, const T* bias, T* c, int64_t ldc,
                                     int64_t col) {
  const int64_t chunks = a.chunks();
  for (int64_t k = 0; k < chunks; ++k)
    for (int64_t r = r0; r < r1; ++r) {
      const offset_t* bounds = a.chunk_bounds + r * (chunks + 1);
      const int64_t nnz = bounds[k + 1] - bounds[k];
      const int64_t s = a.segment_start ? a.segment_start[r * chunks + k] : bounds[k];
      if (!a.segment_start && r + kSegmentPrefetchRows < r1) {
        const offset_t* ahead = bounds + kSegmentPrefetchRows * (chunks + 1);
        prefetch_entries(indices, a.values, ahead[k], ahead[k + 1]);
      }
      T* out = c + r * ldc + col;
      if (k == 0)
        spmm_row_panel<T, NV, false, false, PackedLdb>(indices + s, a.values + s, nnz, b, ldb,
                                                       bias ? bias[r] : T(0), out, 0);
      else if (nnz > 0)
        spmm_row_panel<T, NV, false, true, PackedLdb>(indices + s, a.values + s, nnz, b, ldb, T(0),
                                                      out, 0);
    }
}

// Row quads (CsrView::quad_regions). Over one row at a time, each stored
// entry loads its NV vectors of b, a load per FMA, and on Zen 4 the loads (with
// the index and the broadcast) rather than the FMAs bound the kernel. A quad's
// region groups its columns by the subset of its rows storing them, so each
// column's vectors are loaded once and meet up to four broadcast values, the
// subset known at compile time. Standalone probe (Zen 4, one core, 4-vector
// panel in L1; docs/results/zen4-stop59/probes/quad_probe.cpp): 1.26-1.28x
// the row kernel at densities 0.3-0.5, 1.5-1.9x with the panel in L2, level at
// 0.1 (hence kQuadMinDensity).
//
// Vectors per pass over a region: a quad keeps kQuadRows * G accumulators,
// G vectors of b and a broadcast in registers, which 32 AVX-512 registers
// hold at G = 4; 16 take G = 2, and more passes reload the indices and values
// (so chunk_layout asks for row quads with 64-byte vectors only).
template <typename T, int NV>
constexpr int quad_pass_vectors() {
  return Vec<T>::kLanes * sizeof(T) >= 64 ? NV : std::min(NV, 2);
}

// f(std::integral_constant<int, i>{}) for i = 0 .. N-1, unrolled, so that
// arrays of registers indexed by i stay in registers. The quad kernel's
// helpers are always inlined for the same reason: passed by reference to a
// call, its accumulators went through the stack (2x slower).
template <typename F, int... Is>
__attribute__((always_inline)) inline void unrolled_for(const F& f,
                                                        std::integer_sequence<int, Is...>) {
  (f(std::integral_constant<int, Is>{}), ...);
}
template <int N, typename F>
__attribute__((always_inline)) inline void unrolled_for(const F& f) {
  unrolled_for(f, std::make_integer_sequence<int, N>{});
}

// One subset's columns of a quad region into acc: count columns at cols, and
// per column subset_rows(Subset) values at vals, in row order.
template <typename T, int G, int64_t PackedLdb, int Subset, typename I, typename W>
__attribute__((always_inline)) inline void quad_subset_times_panel(
    const I* cols, const W* vals, int64_t count, const T* b, int64_t ldb,
    typename Vec<T>::reg (&acc)[kQuadRows][G]) {
  if constexpr (PackedLdb != 0) ldb = PackedLdb;
  using V = Vec<T>;
  constexpr int L = V::kLanes;
  constexpr int K = subset_rows(Subset);
  for (int64_t i = 0; i < count; ++i) {
    const T* row = b + static_cast<int64_t>(cols[i]) * ldb;
    typename V::reg x[G];
    unrolled_for<G>([&](auto v) { x[v] = V::load(row + v * L); });
    unrolled_for<kQuadRows>([&](auto quad_row) {
      constexpr int Q = decltype(quad_row)::value;
      if constexpr ((Subset >> Q) & 1) {
        constexpr int kBefore = subset_rows(Subset & ((1 << Q) - 1));
        const typename V::reg w = V::set1(stored_value(vals, i * K + kBefore));
        unrolled_for<G>([&](auto v) { acc[Q][v] = V::fmadd(w, x[v], acc[Q][v]); });
      }
    });
  }
}

// A quad region times G vectors of b: every subset in turn.
template <typename T, int G, int64_t PackedLdb, typename I, typename W, int... Subsets>
__attribute__((always_inline)) inline void quad_region_times_panel(
    const QuadRegion& region, const I* indices, const W* values, const T* b, int64_t ldb,
    typename Vec<T>::reg (&acc)[kQuadRows][G], std::integer_sequence<int, Subsets...>) {
  const I* cols = indices + region.index_start;
  const W* vals = values + region.value_start;
  // Subsets + 1: subset 0 (no row) holds no columns.
  ((quad_subset_times_panel<T, G, PackedLdb, Subsets + 1>(cols, vals, region.columns[Subsets + 1],
                                                          b, ldb, acc),
    cols += region.columns[Subsets + 1],
    vals += region.columns[Subsets + 1] * subset_rows(Subsets + 1)),
   ...);
}

// rows_times_panel_chunked over chunk order by row quads: rows [r0, r1) of the
// view (rows row_offset + r0 ... of the matrix), chunk by chunk within blocks of
// whole quads. A quad only partly in [r0, r1) is computed whole and stores
// only its rows in range, so every row's sum is the same whatever the split.
template <typename W, int NV, int64_t PackedLdb, typename I, typename T = compute_t<W>>
inline void quads_times_panel_chunked(const CsrView<W>& a, const I* indices, int64_t r0, int64_t r1,
                                      const T* b, int64_t ldb, const T* bias, T* c, int64_t ldc) {
  using V = Vec<T>;
  constexpr int L = V::kLanes;
  constexpr int G = quad_pass_vectors<T, NV>();
  const int64_t chunks = a.chunks();
  const int64_t first = a.row_offset + r0, last = a.row_offset + r1;
  const offset_t* matrix_indptr = a.indptr - a.row_offset;
  const auto in_range = [&](int64_t row) { return row >= first && row < last; };
  for_quad_blocks(matrix_indptr, first, last, kQuadBlockNnz, [&](int64_t b0, int64_t b1) {
    for (int64_t k = 0; k < chunks; ++k)
      for (int64_t q0 = b0; q0 < b1; q0 += kQuadRows) {
        const QuadRegion& region = a.quad_regions[q0 / kQuadRows * chunks + k];
        for (int g = 0; g < NV; g += G) {
          typename V::reg acc[kQuadRows][G];
          unrolled_for<kQuadRows>([&](auto q) {
            const int64_t r = q0 + q - a.row_offset;  // row of the view
            unrolled_for<G>([&](auto v) {
              acc[q][v] = !in_range(q0 + q) ? V::zero()
                          : k == 0          ? V::set1(bias ? bias[r] : T(0))
                                            : V::load(c + r * ldc + (g + v) * L);
            });
          });
          quad_region_times_panel<T, G, PackedLdb>(
              region, indices, a.values, b + g * L, ldb, acc,
              std::make_integer_sequence<int, kQuadSubsets - 1>{});
          unrolled_for<kQuadRows>([&](auto q) {
            if (in_range(q0 + q))
              unrolled_for<G>([&](auto v) {
                V::store(c + (q0 + q - a.row_offset) * ldc + (g + v) * L, acc[q][v]);
              });
          });
        }
      }
  });
}

// A full panel of NV vectors, chunked when a has chunk bounds (always then: a
// view in chunk order cannot be read row by row). The drivers pack panels
// unpadded when chunked, so the stride is the panel's, a compile-time constant.
template <typename W, int NV, typename I, typename T = compute_t<W>>
inline void rows_times_full_panel(const CsrView<W>& a, const I* indices, int64_t r0, int64_t r1,
                                  const T* b, int64_t ldb, const T* bias, T* c, int64_t ldc,
                                  int64_t col) {
  constexpr int64_t kPanel = static_cast<int64_t>(NV) * Vec<T>::kLanes;
  if (a.quad_regions != nullptr && ldb == kPanel)
    quads_times_panel_chunked<W, NV, kPanel>(a, indices, r0, r1, b, ldb, bias, c, ldc);
  else if (a.quad_regions != nullptr)
    quads_times_panel_chunked<W, NV, 0>(a, indices, r0, r1, b, ldb, bias, c, ldc);
  else if (a.chunk_bounds != nullptr && ldb == kPanel)
    rows_times_panel_chunked<W, NV, kPanel>(a, indices, r0, r1, b, ldb, bias, c, ldc, col);
  else if (a.chunk_bounds != nullptr)
    rows_times_panel_chunked<W, NV, 0>(a, indices, r0, r1, b, ldb, bias, c, ldc, col);
  else
    rows_times_panel<W, NV, false>(a, indices, r0, r1, b, ldb, bias, c, ldc, col, 0);
}

// Rows in blocks, then column panels of NV vectors, then the rows of the block.
template <typename W, int NV, typename I, typename T = compute_t<W>>
void spmm_rows_nv(const CsrView<W>& a, const I* indices, int64_t row_begin, int64_t row_end,
                  const T* b, int64_t ldb, int64_t n, const T* bias, T* c, int64_t ldc) {
  constexpr int L = Vec<T>::kLanes;
  constexpr int64_t kPanel = static_cast<int64_t>(NV) * L;
  for_row_blocks(a, row_begin, row_end, [&](int64_t r0, int64_t r1) {
    int64_t col = 0;
    for (; col + kPanel <= n; col += kPanel)
      rows_times_panel<W, NV, false>(a, indices, r0, r1, b + col, ldb, bias, c, ldc, col, 0);
    for (; col + L <= n; col += L)
      rows_times_panel<W, 1, false>(a, indices, r0, r1, b + col, ldb, bias, c, ldc, col, 0);
    if (col < n)
      rows_times_panel<W, 1, true>(a, indices, r0, r1, b + col, ldb, bias, c, ldc, col, n - col);
  });
}

template <typename T>
int64_t panel_bytes(int vectors, int64_t cols) {
  return static_cast<int64_t>(vectors) * Vec<T>::kLanes * static_cast<int64_t>(sizeof(T)) * cols;
}

// Vectors per column panel: the widest panel whose slice of b (a.cols rows)
// takes at most budget bytes (by default: stays in the L2 cache).
template <typename T>
int panel_vectors(int64_t cols, int64_t budget = panel_cache_bytes()) {
  return panel_bytes<T>(4, cols) <= budget ? 4 : panel_bytes<T>(2, cols) <= budget ? 2 : 1;
}

// Vectors per packed panel of a rows x cols matrix with nnz stored entries,
// before narrowing to the batch (packed_panel_columns).
template <typename T>
int packed_panel_vectors(int64_t rows, int64_t cols, int64_t nnz) {
  const bool wide = static_cast<double>(nnz) >=
                    kWidePanelMinDensity * static_cast<double>(rows) * static_cast<double>(cols);
  return panel_vectors<T>(cols, wide && nnz > 0 ? kWidePanelCacheBytes : panel_cache_bytes());
}

// Over an unpacked b (spmm_rows), panels of 8 vectors where that panel still
// fits L1: each row then loads and stores its accumulators half as often,
// which counts where rows are short. Measured on Zen 3 (AVX2, 2 threads, 1x1
// convolutions at batch 1, in-process A/B): 1.18-1.20x faster with 64 input
// channels (16 KiB panels) at densities 0.1-0.3, 1.03-1.07x with 128; with
// 256-1024 channels, panels past L1, 0.86-1.12x, so those stay at 4 vectors.
constexpr int64_t kWidePanelBytes = 32 * 1024;

template <typename T>
int unpacked_panel_vectors(int64_t cols) {
  return panel_bytes<T>(8, cols) <= kWidePanelBytes ? 8 : panel_vectors<T>(cols);
}

template <int NV>
struct PanelVectors {
  static constexpr int value = NV;
};

// Calls body(PanelVectors<NV>{}, indices) with NV = vectors (1, 2, 4, or 8
// where MaxVectors allows it) and a's column indices in their stored width.
template <int MaxVectors, typename T, typename Body>
inline void with_panel_kernel(const CsrView<T>& a, int vectors, const Body& body) {
  with_indices(a, [&](const auto* indices) {
    if constexpr (MaxVectors >= 8) {
      if (vectors == 8) return body(PanelVectors<8>{}, indices);
    }
    if (vectors == 4)
      body(PanelVectors<4>{}, indices);
    else if (vectors == 2)
      body(PanelVectors<2>{}, indices);
    else
      body(PanelVectors<1>{}, indices);
  });
}

template <typename W, typename T = compute_t<W>>
void spmm_rows(const CsrView<W>& a, int64_t row_begin, int64_t row_end, const T* b, int64_t ldb,
               int64_t n, const T* bias, T* c, int64_t ldc) {
  const int vectors = unpacked_panel_vectors<T>(a.cols);
  with_panel_kernel<8>(a, vectors, [&](auto panel, const auto* indices) {
    spmm_rows_nv<W, decltype(panel)::value>(a, indices, row_begin, row_end, b, ldb, n, bias, c,
                                            ldc);
  });
}

// Columns per chunk for the packed panel kernel (CsrView::chunk_cols), or 0
// where chunking does not pay, and whether chunk order goes by row quads
// (with 64-byte vectors, float or double values, at least kQuadMinDensity): b's panel already fits
// the L1 budget, or a row's segments would be short (density * chunk width < kMinChunkSegment;
// kMinChunkSegmentWideVectors with 64-byte vectors, kMinChunkSegmentLargePanel
// for a panel of kLargePanelBytes or more).
// Chunks are even in width, so none is a sliver.
template <typename W, typename T = compute_t<W>>
ChunkLayout chunk_layout(int64_t rows, int64_t cols, int64_t nnz) {
  const int vectors = packed_panel_vectors<T>(rows, cols, nnz);
  const int64_t row_bytes =
      static_cast<int64_t>(vectors) * Vec<T>::kLanes * static_cast<int64_t>(sizeof(T));
  const bool wide_vectors = Vec<T>::kLanes * sizeof(T) >= 64;
  // With AVX2's 16 registers a region takes two passes (quad_pass_vectors):
  // 0.73x chunk order by rows at 70% (Zen 4 forced to AVX2, batch 128).
  const bool quads =
      wide_vectors && !std::is_same_v<W, bfloat16_t> && quad_density(rows, cols, nnz);
  int64_t slice_bytes = chunk_cache_bytes();
  if (quads) slice_bytes = slice_bytes * kQuadChunkCacheRatio;
  if (wide_vectors && vectors < 4 && nnz > 0 && rows > 0) {
    // Columns holding about kSparseChunkSegment entries of a row.
    const double columns = static_cast<double>(kSparseChunkSegment) * static_cast<double>(rows) *
                           static_cast<double>(cols) / static_cast<double>(nnz);
    const double wanted = std::min(columns * static_cast<double>(row_bytes),
                                   static_cast<double>(kSparseChunkMaxBytes));
    slice_bytes = std::max(slice_bytes, static_cast<int64_t>(wanted));
  }
  const int64_t widest = slice_bytes / row_bytes;
  if (cols <= widest || rows <= 0) return {};
  const int64_t chunks = (cols + widest - 1) / widest;
  const int64_t width = (cols + chunks - 1) / chunks;
  // Mean entries per segment: nnz / (rows * chunks).
  const int64_t min_segment = cols * row_bytes >= kLargePanelBytes ? kMinChunkSegmentLargePanel
                              : wide_vectors                       ? kMinChunkSegmentWideVectors
                                                                   : kMinChunkSegment;
  if (nnz < min_segment * rows * chunks) return {};
  return {width, quads && width < (1 << 16)};
}

// The packed panel's columns (see CsrKernels::packed_panel_columns). Narrowed
// to the batch: 4096 x 4096 at 70% sparsity ran in about the same time at
// every batch from 2 to 32 with 32-column panels.
template <typename T>
int64_t packed_panel_columns(int64_t rows, int64_t cols, int64_t nnz, int64_t n) {
  constexpr int L = Vec<T>::kLanes;
  int vectors = packed_panel_vectors<T>(rows, cols, nnz);
  while (n > 0 && vectors > 1 && static_cast<int64_t>(vectors / 2) * L >= n) vectors /= 2;
  return static_cast<int64_t>(vectors) * L;
}

// The panel product over one packed panel of b (see CsrKernels::spmm_rows_packed),
// in row blocks as spmm_rows_nv.
template <typename W, typename T = compute_t<W>>
void spmm_rows_packed(const CsrView<W>& a, int64_t row_begin, int64_t row_end, const T* packed,
                      int64_t panel_ld, int64_t panel_columns, const T* bias, T* c, int64_t ldc) {
  const int vectors = static_cast<int>(panel_columns / Vec<T>::kLanes);
  with_panel_kernel<4>(a, vectors, [&](auto vectors, const auto* indices) {
    constexpr int NV = decltype(vectors)::value;
    const auto block = [&](int64_t r0, int64_t r1) {
      rows_times_full_panel<W, NV>(a, indices, r0, r1, packed, panel_ld, bias, c, ldc, 0);
    };
    // Chunked, the blocks are those of chunk order (small enough for L2).
    if (a.quad_regions != nullptr)
      block(row_begin, row_end);  // blocks of whole quads (quads_times_panel_chunked)
    else if (a.chunk_bounds != nullptr)
      for_chunk_order_blocks(a, row_begin, row_end, block);
    else
      for_row_blocks(a, row_begin, row_end, block);
  });
}

// Dot product of one sparse row with a dense vector, gathering x at the
// column indices (x(k) = x[k * kstride]).
template <typename T, typename I, typename W>
inline T gather_row(const I* cols, const W* vals, int64_t nnz, const T* x, int32_t kstride) {
  using V = Vec<T>;
  constexpr int L = V::kLanes;
  typename V::reg even = V::zero(), odd = V::zero();
  int64_t j = 0;
  for (; j + 2 * L <= nnz; j += 2 * L) {
    typename V::ireg idx = V::load_indices(cols + j);
    typename V::ireg idx2 = V::load_indices(cols + j + L);
    if (kstride != 1) {
      idx = V::scale_indices(idx, kstride);
      idx2 = V::scale_indices(idx2, kstride);
    }
    even = V::fmadd(load_stored(vals + j), V::gather(idx, x), even);
    odd = V::fmadd(load_stored(vals + j + L), V::gather(idx2, x), odd);
  }
  for (; j + L <= nnz; j += L) {
    typename V::ireg idx = V::load_indices(cols + j);
    if (kstride != 1) idx = V::scale_indices(idx, kstride);
    even = V::fmadd(load_stored(vals + j), V::gather(idx, x), even);
  }
  if (j < nnz) {
    // Indices of the partial vector go through a zero-padded copy; the gather
    // itself is masked, so the padding is never dereferenced.
    I tail[L] = {};
    for (int64_t t = 0; t < nnz - j; ++t) tail[t] = cols[j + t];
    const typename V::mask m = V::tail_mask(nnz - j);
    typename V::ireg idx = V::load_indices(tail);
    if (kstride != 1) idx = V::scale_indices(idx, kstride);
    odd = V::fmadd(load_stored_tail(vals + j, nnz - j), V::maskz_gather(m, idx, x), odd);
  }
  return V::reduce_add(V::add(even, odd));
}

// The same dot product with scalar loads: eight independent partial sums keep
// the loads (index, value, x) rather than FMA latency the limit. Where gathers
// are microcoded (AMD Zen 4) this is about 1.3x faster than the vector gather.
template <typename T, typename I, bool UnitStride, typename W>
inline T scalar_gather_row_impl(const I* cols, const W* vals, int64_t nnz, const T* x,
                                int32_t kstride) {
  constexpr int kSums = 8;
  const auto at = [&](int64_t j) {
    return UnitStride ? x[cols[j]] : x[static_cast<int64_t>(cols[j]) * kstride];
  };
  T sums[kSums] = {};
  int64_t j = 0;
  for (; j + kSums <= nnz; j += kSums)
    for (int u = 0; u < kSums; ++u) sums[u] += stored_value(vals, j + u) * at(j + u);
  for (; j < nnz; ++j) sums[0] += stored_value(vals, j) * at(j);
  T total = T(0);
  for (int u = 0; u < kSums; ++u) total += sums[u];
  return total;
}

template <typename T, typename I, typename W>
inline T scalar_gather_row(const I* cols, const W* vals, int64_t nnz, const T* x, int32_t kstride) {
  return kstride == 1 ? scalar_gather_row_impl<T, I, true>(cols, vals, nnz, x, 1)
                      : scalar_gather_row_impl<T, I, false>(cols, vals, nnz, x, kstride);
}

// y(v, r) = bias[r] + row r of a . x(v, :), with RowDot computing each dot product.
template <typename W, typename RowDot, typename T = compute_t<W>>
void dot_rows(const RowDot& row_dot, const CsrView<W>& a, int64_t row_begin, int64_t row_end,
              const T* x, int64_t x_vstride, int64_t x_kstride, int64_t nvec, const T* bias, T* y,
              int64_t y_vstride, int64_t y_rstride) {
  const int32_t kstride = static_cast<int32_t>(x_kstride);
  with_indices(a, [&](const auto* indices) {
    for (int64_t v = 0; v < nvec; ++v)
      for (int64_t r = row_begin; r < row_end; ++r) {
        const int64_t s = a.indptr[r];
        const T sum =
            row_dot(indices + s, a.values + s, a.indptr[r + 1] - s, x + v * x_vstride, kstride);
        y[v * y_vstride + r * y_rstride] = sum + (bias ? bias[r] : T(0));
      }
  });
}

template <typename W, typename T = compute_t<W>>
void gather_rows(const CsrView<W>& a, int64_t row_begin, int64_t row_end, const T* x,
                 int64_t x_vstride, int64_t x_kstride, int64_t nvec, const T* bias, T* y,
                 int64_t y_vstride, int64_t y_rstride) {
  dot_rows([](const auto* cols, const W* vals, int64_t nnz, const T* xv,
              int32_t kstride) { return gather_row(cols, vals, nnz, xv, kstride); },
           a, row_begin, row_end, x, x_vstride, x_kstride, nvec, bias, y, y_vstride, y_rstride);
}

template <typename W, typename T = compute_t<W>>
void scalar_gather_rows(const CsrView<W>& a, int64_t row_begin, int64_t row_end, const T* x,
                        int64_t x_vstride, int64_t x_kstride, int64_t nvec, const T* bias, T* y,
                        int64_t y_vstride, int64_t y_rstride) {
  dot_rows([](const auto* cols, const W* vals, int64_t nnz, const T* xv,
              int32_t kstride) { return scalar_gather_row(cols, vals, nnz, xv, kstride); },
           a, row_begin, row_end, x, x_vstride, x_kstride, nvec, bias, y, y_vstride, y_rstride);
}

template <typename T>
inline T dot(const T* x, const T* y, int64_t n) {
  using V = Vec<T>;
  constexpr int L = V::kLanes;
  typename V::reg even = V::zero(), odd = V::zero();
  int64_t t = 0;
  for (; t + 2 * L <= n; t += 2 * L) {
    even = V::fmadd(V::load(x + t), V::load(y + t), even);
    odd = V::fmadd(V::load(x + t + L), V::load(y + t + L), odd);
  }
  for (; t + L <= n; t += L) even = V::fmadd(V::load(x + t), V::load(y + t), even);
  if (t < n) {
    const typename V::mask m = V::tail_mask(n - t);
    odd = V::fmadd(V::maskz_load(m, x + t), V::maskz_load(m, y + t), odd);
  }
  return V::reduce_add(V::add(even, odd));
}

template <typename W, typename T = compute_t<W>>
void sampled_dot_rows(const CsrView<W>& pattern, int64_t row_begin, int64_t row_end, const T* a,
                      int64_t lda, const T* b, int64_t ldb, int64_t n, T* out) {
  with_indices(pattern, [&](const auto* indices) {
    for (int64_t r = row_begin; r < row_end; ++r)
      for (int64_t j = pattern.indptr[r]; j < pattern.indptr[r + 1]; ++j)
        out[j] = dot(a + r * lda, b + static_cast<int64_t>(indices[j]) * ldb, n);
  });
}

template <typename W>
const CsrKernels<W>& csr_kernel_table() {
  using T = compute_t<W>;
  static const CsrKernels<W> table{&chunk_layout<W>,     &spmm_rows<W>,   &packed_panel_columns<T>,
                                   &spmm_rows_packed<W>, &gather_rows<W>, &scalar_gather_rows<W>,
                                   &sampled_dot_rows<W>};
  return table;
}

template const CsrKernels<float>& csr_kernel_table<float>();
template const CsrKernels<double>& csr_kernel_table<double>();
template const CsrKernels<bfloat16_t>& csr_kernel_table<bfloat16_t>();
