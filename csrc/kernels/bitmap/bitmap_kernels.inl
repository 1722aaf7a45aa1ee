// Bitmap kernels written once against Vec<T> (kernels/simd/) and BitExpand<V>
// (bitmap_expand_<isa>.h). This file is included inside an ISA namespace by
// bitmap_<isa>.cpp after those headers; it must not include headers itself.
//
// Batch-1 kernel (gemv_rows): each 64-bit word of a row is cut into 64 / L
// chunks of L bits; a chunk's bits expand the next packed values into a
// vector, which is multiplied with the matching L entries of x. The packed
// position of the next chunk depends on the popcount of this one, so each
// row's loads form a chain: kGemvRows rows are walked together, sharing the
// loads of x, so the chains of different rows overlap.
//
// Small-batch kernel (small_batch_rows): a tile of rows x kTileCols columns
// is expanded into a dense buffer on the stack once, then multiplied with up
// to kVectorChunk vectors, 4 at a time from registers: the expansion is paid
// once per tile while the FMAs run at dense speed.
//
// The AVX-512 float and double batch-1 walks can also pair values with x the
// other way round (the compress walk, core/isa.h): x's lanes whose bit is set
// move to the front and meet the next packed values, read by a plain load.
//
// The scalar level (kLanes == 1) walks the set bits instead.
//
// V is the stored value type, T = compute_t<V> the compute type (see
// bitmap_kernels.h): Vec<T> does the arithmetic, BitExpand<V> reads values.

constexpr int64_t kWordBits = 64;
// Rows the batch-1 kernel walks together where x is long; the loads of x
// are shared by the rows.
constexpr int kGemvRows = 4;
// Values prefetched ahead of each row's read position (in elements).
constexpr int64_t kPrefetchAhead = 256;
// Where x takes at most this many bytes (half of L1) and at most
// kRowAtATimeMaxDensity of the weights are stored (any density with far
// prefetches), the batch-1 kernel walks one row at a time, prefetching
// kRowPrefetchBytes ahead (near; far: kFarPrefetchBytes): two streams instead
// of eight. Cold, 2 threads,
// AVX-512: 11008 x 4096 at 70% sparsity ran in 3.0-3.4 ms one row at a time
// against 4.2-4.8 ms four at a time, and 4096 x 4096 in 1.2-1.3 against
// 1.3-1.9 ms. Four at a time stays faster on longer rows (4096 x 11008, 43 KB
// of x: 2.9-3.3 against 3.3-3.9 ms) and, with near prefetches, on denser ones
// (11008 x 4096 at 0%: 7.4-7.6 against 10.2 ms; at 50% even).
constexpr int64_t kRowAtATimeMaxXBytes = 24 * 1024;
constexpr double kRowAtATimeMaxDensity = 0.4;
constexpr int64_t kRowPrefetchBytes = 4096;
// Far prefetches (BitmapPrefetch::kFar, core/isa.h) go to L2 this far ahead
// of each row's read position. Zen 4, cold 4096 x 4096 at 50%, 2 threads
// (standalone loop): one row at a time 8 KB ahead 1.30-1.33 ms, 4 KB 1.36-1.38,
// 16 KB 1.34; four rows at a time 1.51-1.60; near prefetches 1.65-1.83, none
// 1.67-1.77.
constexpr int64_t kFarPrefetchBytes = 8192;
// With far prefetches, a row at a time of at least kSplitMinWords full words,
// where at most kSplitMaxDensity of the weights are stored, is walked as
// kSplitSegments interleaved segments (gemv_row_split). There one row's walk is
// bound by instructions, not memory: L2-resident, one row cost 1.7 ns per 16
// columns, four segments 1.27 ns, four rows 0.92 ns (which streamed slower
// cold). Zen 4, cold, 2 threads, two runs each, split against one stream:
// 4096^2 at 70% 0.84-0.99 against 1.24-1.31 ms, at 90% 0.70-0.85 against
// 1.03-1.14, at 50% 1.04-1.10 against 1.15-1.22; 11008 x 4096 at 70% 2.5-2.6
// against 2.9-3.2 ms; at 0% 2-3% slower.
constexpr int kSplitSegments = 4;
constexpr int64_t kSplitMinWords = 16;
constexpr double kSplitMaxDensity = 0.6;
// Where the compress walk is chosen (core/isa.h), it runs where at most
// kCompressMaxDensity of the weights are stored; denser rows stream at the
// memory's pace either way. Zen 4, cold, 2 threads, in one process, compress
// against expand: 4096^2 1.18x at 70% sparsity, 1.11x at 50%, 1.04x at 40%,
// 0.99-1.00x at 0-25%; 11008 x 4096 1.22x at 70%, 0.96-1.02x at 0-25%;
// 4096 x 11008 1.20-1.23x at 70-80%, 0.94-0.99x at 0-40%.
constexpr double kCompressMaxDensity = 0.6;
// Columns of a tile the small-batch kernel expands at once (whole words).
constexpr int64_t kTileCols = 256;
// Dense vectors that share one expanded tile.
constexpr int kVectorChunk = 16;

// Whether BitExpand E offers compress (the compress walk): those that do say
// so by kCompressWalk.
template <typename E, typename = void>
struct HasCompressWalk : std::false_type {};
template <typename E>
struct HasCompressWalk<E, std::void_t<decltype(E::kCompressWalk)>>
    : std::bool_constant<E::kCompressWalk> {};

// acc + one chunk's values times x, by the expand walk or (Compress) the
// compress walk. The latter reads L values at p whatever the chunk's
// popcount (never Safe: the caller keeps them inside the values array); those
// past the chunk's own meet zeros, which adds nothing unless one is infinite
// or NaN. That lane is then NaN, and the caller redoes the row by expand.
template <typename E, bool Safe, bool Compress, typename Reg, typename V>
__attribute__((always_inline)) inline Reg chunk_fmadd(unsigned bits, const V* p, Reg x, Reg acc) {
  if constexpr (Compress) {
    static_assert(!Safe, "the compress walk reads whole vectors of values");
    using Vt = Vec<compute_t<V>>;
    return Vt::fmadd(Vt::load(p), E::compress(bits, x), acc);
  } else {
    return E::template fmadd<Safe>(bits, p, x, acc);
  }
}

// Chunk s (L bits) of a word.
template <typename T>
inline unsigned chunk_bits(uint64_t word, int s) {
  constexpr int L = Vec<T>::kLanes;
  static_assert(L > 1 && L < 64, "vector levels only");
  return static_cast<unsigned>((word >> (s * L)) & ((uint64_t(1) << L) - 1));
}

// Chunk s of *word, read from memory where chunks are whole bytes (16 bits
// for AVX-512 floats): one load feeds both the mask and the popcount, where
// cutting it out of the word in a register took a shift, a mask and (GCC)
// a second mask move per chunk. The batch-1 kernel is bound by instructions,
// not memory, on AVX-512: warm 256 x 4096 at 70%, 0.095 against 0.13 ms.
template <typename T>
inline unsigned chunk_at(const uint64_t* word, int s) {
  constexpr int L = Vec<T>::kLanes;
  if constexpr (L == 16 || L == 8) {
    using Chunk = std::conditional_t<L == 16, uint16_t, uint8_t>;
    Chunk c;
    std::memcpy(&c, reinterpret_cast<const unsigned char*>(word) + s * sizeof(Chunk),
                sizeof(Chunk));
    unsigned bits = c;
    // Keep the chunk in a general register: left alone, GCC loads it twice,
    // once into the mask register (kmovw k, m16), which measured slower.
    asm("" : "+r"(bits));
    return bits;
  } else {
    return chunk_bits<T>(*word, s);
  }
}

// Scalar level: row . x by walking set bits (x is read at stored columns only).
template <typename V, typename T = compute_t<V>>
inline T row_dot_by_bits(const uint64_t* words, int64_t nwords, const V* vals, const T* x) {
  T sums[4] = {};
  int u = 0;
  for (int64_t w = 0; w < nwords; ++w) {
    const T* xw = x + w * kWordBits;
    for (uint64_t word = words[w]; word != 0; word &= word - 1) {
      sums[u & 3] += StoredValue<V>::widen(*vals++) * xw[__builtin_ctzll(word)];
      ++u;
    }
  }
  return (sums[0] + sums[1]) + (sums[2] + sums[3]);
}

// How the batch-1 kernel prefetches each row's values: near (into L1) or far
// (kFarPrefetchBytes ahead, into L2); per chunk, each chunk prefetches ahead
// of its row, not each word: a word's prefetch covers one cache line, fewer
// than a word's values fill above a quarter density. Cold, 2 threads,
// AVX-512, near: per chunk ran 5-18% faster at 0-70% sparsity, and 4-5%
// slower at 90%. Far prefetches go per chunk at every density: Zen 4, 80%
// sparsity, compress walk, per chunk against per word: 4096^2 0.70 against
// 0.90 ms, 11008 x 4096 2.06 against 2.42, 4096 x 11008 1.77 against 1.89
// (at 70% per word was 1.5x slower). With none, the hardware prefetchers
// alone follow the rows.
enum class Prefetch { kNone, kNearPerWord, kNearPerChunk, kFarPerChunk };

// A far prefetch (prefetcht2) ahead of a row's read position p.
template <typename V>
inline void prefetch_far(const V* p) {
  __builtin_prefetch(p + kFarPrefetchBytes / static_cast<int64_t>(sizeof(V)), 0, 1);
}

// acc[s % A] += chunk s of one word of a row times x (that word's first
// `columns` <= 64 columns; x is read only up to the last of them), for each
// chunk s: a row's partial last word, or a whole word walked on its own.
template <typename V, int A, bool Safe, typename T = compute_t<V>>
__attribute__((always_inline)) inline void add_word(uint64_t word, int columns, const T* xw,
                                                    const V*& vp, typename Vec<T>::reg* acc) {
  using Vt = Vec<T>;
  constexpr int L = Vt::kLanes;
  // Unrolled, so acc is indexed by constants: the callers' accumulators then stay
  // in registers through their main loops instead of being stored every chunk.
#pragma GCC unroll 64
  for (int s = 0; s < kWordBits / L; ++s) {
    if (s * L >= columns) break;
    const typename Vt::reg xs = (s + 1) * L <= columns
                                    ? Vt::load(xw + s * L)
                                    : Vt::maskz_load(Vt::tail_mask(columns - s * L), xw + s * L);
    const unsigned b = chunk_bits<T>(word, s);
    acc[s % A] = BitExpand<V>::template fmadd<Safe>(b, vp, xs, acc[s % A]);
    vp += __builtin_popcount(b);
  }
}

// Vector levels: sums[i] = row (r + i) . x for i < R. With Safe, values are
// read by masked loads only (for rows near the end of the values array).
// RowAtATime (R == 1 only) picks that mode's accumulators and prefetch
// distance. A row's summation order depends on the mode alone, never on R, so
// the result does not depend on how rows are split across threads.
template <typename V, int R, bool RowAtATime, bool Safe, Prefetch P, bool Compress = false,
          typename T = compute_t<V>>
inline void gemv_group(const BitmapView<V>& a, int64_t r, const T* x, T* sums) {
  static_assert(R == 1 || !RowAtATime, "one row at a time means R == 1");
  using Vt = Vec<T>;
  using E = BitExpand<V>;
  constexpr int L = Vt::kLanes;
  constexpr int S = kWordBits / L;
  // Accumulators per row: enough to cover the FMA latency with one row in flight.
  constexpr int A = RowAtATime ? 4 : 2;
  constexpr int64_t ahead =
      RowAtATime ? kRowPrefetchBytes / static_cast<int64_t>(sizeof(V)) : kPrefetchAhead;
  const int64_t wpr = a.words_per_row;
  const int64_t full = a.cols / kWordBits;
  const int rem = static_cast<int>(a.cols % kWordBits);
  typename Vt::reg acc[R][A];
  const uint64_t* words[R];
  const V* vp[R];
  // The loops over rows are unrolled like the main loop's, so acc, words and vp
  // are indexed by constants and stay in registers (no store per chunk).
#pragma GCC unroll 4
  for (int i = 0; i < R; ++i) {
    for (int j = 0; j < A; ++j) acc[i][j] = Vt::zero();
    words[i] = a.bits + (r + i) * wpr;
    vp[i] = a.values + a.offsets[r + i];
  }
  for (int64_t w = 0; w < full; ++w) {
    if constexpr (P == Prefetch::kNearPerWord)
      for (int i = 0; i < R; ++i) Vt::prefetch(vp[i] + ahead);
    const T* xw = x + w * kWordBits;
    // Fully unrolled, so the accumulators and offsets are static and stay in registers.
#pragma GCC unroll 16
    for (int s = 0; s < S; ++s) {
      const typename Vt::reg xs = Vt::load(xw + s * L);
#pragma GCC unroll 4
      for (int i = 0; i < R; ++i) {
        const unsigned b = chunk_at<T>(words[i] + w, s);
        if constexpr (P == Prefetch::kNearPerChunk) Vt::prefetch(vp[i] + ahead);
        if constexpr (P == Prefetch::kFarPerChunk) prefetch_far(vp[i]);
        acc[i][s % A] = chunk_fmadd<E, Safe, Compress>(b, vp[i], xs, acc[i][s % A]);
        vp[i] += __builtin_popcount(b);
      }
    }
  }
  if (rem != 0)
#pragma GCC unroll 4
    for (int i = 0; i < R; ++i)
      add_word<V, A, Safe>(words[i][full], rem, x + full * kWordBits, vp[i], acc[i]);
#pragma GCC unroll 4
  for (int i = 0; i < R; ++i) {
    for (int j = 2; j < A; ++j) acc[i][j & 1] = Vt::add(acc[i][j & 1], acc[i][j]);
    sums[i] = Vt::reduce_add(Vt::add(acc[i][0], acc[i][1]));
  }
}

// Where each of gemv_row_split's segments of row r starts reading values:
// after the values of the runs (of `run` words) before it.
template <typename V>
inline void segment_starts(const BitmapView<V>& a, int64_t r, int64_t run,
                           const V* (&vp)[kSplitSegments]) {
  const uint64_t* words = a.bits + r * a.words_per_row;
  vp[0] = a.values + a.offsets[r];
#pragma GCC unroll 4
  for (int q = 1; q < kSplitSegments; ++q) {
    vp[q] = vp[q - 1];
    for (int64_t w = (q - 1) * run; w < q * run; ++w) vp[q] += __builtin_popcountll(words[w]);
  }
}

// acc += the words of a row past its kSplitSegments runs (from word `first`)
// and its partial last word times x, by the expand walk from read position vp.
template <typename V, bool Safe, typename T = compute_t<V>>
inline void add_words_past_segments(const BitmapView<V>& a, const uint64_t* words, int64_t first,
                                    const T* x, const V*& vp, typename Vec<T>::reg* acc) {
  const int64_t full = a.cols / kWordBits;
  const int rem = static_cast<int>(a.cols % kWordBits);
  for (int64_t w = first; w < full; ++w)
    add_word<V, 2, Safe>(words[w], static_cast<int>(kWordBits), x + w * kWordBits, vp, acc);
  if (rem != 0) add_word<V, 2, Safe>(words[full], rem, x + full * kWordBits, vp, acc);
}

// One row walked as kSplitSegments equal runs of words, interleaved, each with
// its own read position (found by popcounts before the walk): the segments'
// chains overlap as separate rows' do in gemv_group, while the loads stay
// within one row. The words past the segments (fewer than kSplitSegments) and
// the partial last word go to the last segment. Used with far prefetches.
template <typename V, bool Safe, Prefetch P, bool Compress = false, typename T = compute_t<V>>
inline T gemv_row_split(const BitmapView<V>& a, int64_t r, const T* x) {
  using Vt = Vec<T>;
  using E = BitExpand<V>;
  constexpr int L = Vt::kLanes;
  constexpr int S = kWordBits / L;
  constexpr int Q = kSplitSegments;
  const int64_t run = a.cols / kWordBits / Q;
  const uint64_t* words = a.bits + r * a.words_per_row;
  const V* vp[Q];
  segment_starts(a, r, run, vp);
  // Loops over segments unrolled, as in gemv_group, so vp and acc stay in registers.
  typename Vt::reg acc[Q][2];
#pragma GCC unroll 4
  for (int q = 0; q < Q; ++q) acc[q][0] = acc[q][1] = Vt::zero();
  for (int64_t w = 0; w < run; ++w) {
#pragma GCC unroll 16
    for (int s = 0; s < S; ++s) {
#pragma GCC unroll 4
      for (int q = 0; q < Q; ++q) {
        const int64_t word = q * run + w;
        const unsigned b = chunk_at<T>(words + word, s);
        if constexpr (P == Prefetch::kFarPerChunk) prefetch_far(vp[q]);
        acc[q][s % 2] = chunk_fmadd<E, Safe, Compress>(
            b, vp[q], Vt::load(x + word * kWordBits + s * L), acc[q][s % 2]);
        vp[q] += __builtin_popcount(b);
      }
    }
  }
  add_words_past_segments<V, Safe>(a, words, Q * run, x, vp[Q - 1], acc[Q - 1]);
#pragma GCC unroll 4
  for (int q = 1; q < Q; ++q) {
    acc[0][0] = Vt::add(acc[0][0], acc[q][0]);
    acc[0][1] = Vt::add(acc[0][1], acc[q][1]);
  }
  return Vt::reduce_add(Vt::add(acc[0][0], acc[0][1]));
}

// sums[v] = row r . x(v) for NV vectors x(v) = x + v * x_vstride by the
// compress walk, in gemv_row_split's segments: each chunk's values are loaded
// once and met by every vector's compressed x, so the row streams once for
// all NV, where the tile kernel (small_batch_group) first expands it into a
// buffer. The words past the segments go by the expand walk, from the last
// segment's position. Row r must read whole vectors (reads_whole_vectors).
template <typename V, int NV, typename T = compute_t<V>>
inline void gemv_row_split_vectors(const BitmapView<V>& a, int64_t r, const T* x, int64_t x_vstride,
                                   T* sums) {
  using Vt = Vec<T>;
  using E = BitExpand<V>;
  constexpr int L = Vt::kLanes;
  constexpr int S = kWordBits / L;
  constexpr int Q = kSplitSegments;
  const int64_t run = a.cols / kWordBits / Q;
  const uint64_t* words = a.bits + r * a.words_per_row;
  const V* vp[Q];
  segment_starts(a, r, run, vp);
  typename Vt::reg acc[Q][NV];
#pragma GCC unroll 4
  for (int q = 0; q < Q; ++q)
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) acc[q][v] = Vt::zero();
  for (int64_t w = 0; w < run; ++w) {
#pragma GCC unroll 16
    for (int s = 0; s < S; ++s) {
#pragma GCC unroll 4
      for (int q = 0; q < Q; ++q) {
        const int64_t column = (q * run + w) * kWordBits + s * L;
        const unsigned b = chunk_at<T>(words + q * run + w, s);
        prefetch_far(vp[q]);
        const typename Vt::reg values = Vt::load(vp[q]);
#pragma GCC unroll 4
        for (int v = 0; v < NV; ++v)
          acc[q][v] =
              Vt::fmadd(values, E::compress(b, Vt::load(x + v * x_vstride + column)), acc[q][v]);
        vp[q] += __builtin_popcount(b);
      }
    }
  }
#pragma GCC unroll 4
  for (int v = 0; v < NV; ++v) {
    const V* p = vp[Q - 1];
    typename Vt::reg tail[2] = {acc[Q - 1][v], Vt::zero()};
    add_words_past_segments<V, false>(a, words, Q * run, x + v * x_vstride, p, tail);
    typename Vt::reg sum = Vt::add(tail[0], tail[1]);
#pragma GCC unroll 4
    for (int q = 0; q < Q - 1; ++q) sum = Vt::add(sum, acc[q][v]);
    sums[v] = Vt::reduce_add(sum);
  }
}

// Whether the compress walk may read L values at each read position of row
// r: from L values before the end of the values array on, rows take the
// expand walk's masked loads (Safe).
template <typename V, typename T = compute_t<V>>
inline bool reads_whole_vectors(const BitmapView<V>& a, int64_t r) {
  return a.offsets[r + 1] + Vec<T>::kLanes <= a.nnz();
}

// Rows [r, r + R) by gemv_group, by the compress walk where `compress` and
// BitExpand<V> offers it. A row whose compress sum is NaN is walked again by
// expand: a value past a chunk's own met a zero there and may have made the NaN
// (an infinite one does), where the expand walk gives the sum its stored
// values make.
template <typename V, int R, bool RowAtATime, Prefetch P, typename T = compute_t<V>>
inline void gemv_group_walk(const BitmapView<V>& a, int64_t r, const T* x, bool compress, T* sums) {
  if (!reads_whole_vectors(a, r + R - 1)) {
    if constexpr (R > 1) {
      // Row by row, so the walk a row takes depends on that row alone, never on
      // the rows grouped with it (nor, then, on the split across threads).
      for (int i = 0; i < R; ++i)
        gemv_group_walk<V, 1, RowAtATime, P>(a, r + i, x, compress, sums + i);
    } else {
      gemv_group<V, 1, RowAtATime, true, P>(a, r, x, sums);
    }
    return;
  }
  if constexpr (HasCompressWalk<BitExpand<V>>::value) {
    if (compress) {
      gemv_group<V, R, RowAtATime, false, P, true>(a, r, x, sums);
      for (int i = 0; i < R; ++i)
        if (sums[i] != sums[i]) gemv_group<V, 1, RowAtATime, false, P>(a, r + i, x, sums + i);
      return;
    }
  }
  gemv_group<V, R, RowAtATime, false, P>(a, r, x, sums);
}

// Row r by gemv_row_split, choosing its walk as gemv_group_walk does.
template <typename V, Prefetch P, typename T = compute_t<V>>
inline T gemv_row_split_walk(const BitmapView<V>& a, int64_t r, const T* x, bool compress) {
  if (!reads_whole_vectors(a, r)) return gemv_row_split<V, true, P>(a, r, x);
  if constexpr (HasCompressWalk<BitExpand<V>>::value) {
    if (compress) {
      const T sum = gemv_row_split<V, false, P, true>(a, r, x);
      if (sum == sum) return sum;
    }
  }
  return gemv_row_split<V, false, P>(a, r, x);
}

// Two vectors, where the compress walk runs (compress_split_walk), go by
// gemv_row_split_vectors instead of the tile kernel. Zen 4, 2 threads, cold,
// in one process, 50-80% sparsity: 1.18-1.21x faster on 4096^2, 1.20-1.42x on
// 11008 x 4096, 1.06-1.21x on 4096 x 11008. Three and four vectors (16
// accumulators, the compiler's choice of spills) ran 0.72-1.04x, so they keep
// the tiles.
constexpr int64_t kCompressMaxVectors = 2;

// Whether a's rows may be walked in kSplitSegments segments (gemv_row_split):
// with far prefetches, over long rows holding at most kSplitMaxDensity.
template <typename V>
inline bool splits_rows(const BitmapView<V>& a, BitmapPrefetch mode) {
  return mode == BitmapPrefetch::kFar && a.cols / kWordBits >= kSplitMinWords &&
         static_cast<double>(a.nnz()) <= kSplitMaxDensity * static_cast<double>(a.rows * a.cols);
}

// Whether a's rows go by the compress walk in segments, where BitExpand<V>
// offers it: the walk is chosen (core/isa.h) and the rows split, at most
// kCompressMaxDensity of them stored.
template <typename V>
inline bool compress_split_walk(const BitmapView<V>& a) {
  return bitmap_compress_walk() && splits_rows(a, bitmap_prefetch()) &&
         static_cast<double>(a.nnz()) <= kCompressMaxDensity * static_cast<double>(a.rows * a.cols);
}

// sums[v] = row r . x(v) for kCompressMaxVectors vectors, where
// compress_split_walk(a): as gemv_row_split_walk does per vector, with each
// row's values read once for all of them.
template <typename V, typename T = compute_t<V>>
inline void gemv_row_vectors_walk(const BitmapView<V>& a, int64_t r, const T* x, int64_t x_vstride,
                                  T* sums) {
  constexpr Prefetch P = Prefetch::kFarPerChunk;
  constexpr int NV = static_cast<int>(kCompressMaxVectors);
  if (!reads_whole_vectors(a, r)) {
    for (int v = 0; v < NV; ++v) sums[v] = gemv_row_split<V, true, P>(a, r, x + v * x_vstride);
    return;
  }
  gemv_row_split_vectors<V, NV>(a, r, x, x_vstride, sums);
  for (int v = 0; v < NV; ++v)
    if (sums[v] != sums[v]) sums[v] = gemv_row_split<V, false, P>(a, r, x + v * x_vstride);
}

template <typename V, typename T = compute_t<V>>
void gemv_rows(const BitmapView<V>& a, int64_t row_begin, int64_t row_end, const T* x,
               int64_t x_vstride, int64_t nvec, const T* bias, T* y, int64_t y_vstride,
               int64_t y_rstride) {
  constexpr int L = Vec<T>::kLanes;
  const auto put = [&](int64_t v, int64_t r, T sum) {
    y[v * y_vstride + r * y_rstride] = sum + (bias ? bias[r] : T(0));
  };
  for (int64_t v = 0; v < nvec; ++v) {
    const T* xv = x + v * x_vstride;
    if constexpr (L == 1) {
      for (int64_t r = row_begin; r < row_end; ++r)
        put(v, r,
            row_dot_by_bits(a.bits + r * a.words_per_row, a.words_per_row, a.values + a.offsets[r],
                            xv));
    } else {
      const int64_t total = a.nnz();
      const double entries = static_cast<double>(a.rows * a.cols);
      const BitmapPrefetch mode = bitmap_prefetch();
      const bool compress =
          bitmap_compress_walk() && static_cast<double>(total) <= kCompressMaxDensity * entries;
      const bool per_chunk = 4 * total > a.rows * a.cols;
      const Prefetch prefetch = mode == BitmapPrefetch::kOff   ? Prefetch::kNone
                                : mode == BitmapPrefetch::kFar ? Prefetch::kFarPerChunk
                                : per_chunk                    ? Prefetch::kNearPerChunk
                                                               : Prefetch::kNearPerWord;
      const auto group = [&](auto rows, auto row_at_a_time, int64_t r, T* sums) {
        constexpr int R = decltype(rows)::value;
        constexpr bool One = decltype(row_at_a_time)::value;
        const auto run = [&](auto mode) {
          constexpr Prefetch P = decltype(mode)::value;
          gemv_group_walk<V, R, One, P>(a, r, xv, compress, sums);
        };
        switch (prefetch) {
          case Prefetch::kNone:
            return run(std::integral_constant<Prefetch, Prefetch::kNone>{});
          case Prefetch::kNearPerWord:
            return run(std::integral_constant<Prefetch, Prefetch::kNearPerWord>{});
          case Prefetch::kNearPerChunk:
            return run(std::integral_constant<Prefetch, Prefetch::kNearPerChunk>{});
          case Prefetch::kFarPerChunk:
            return run(std::integral_constant<Prefetch, Prefetch::kFarPerChunk>{});
        }
      };
      T sums[kGemvRows];
      int64_t r = row_begin;
      const bool row_at_a_time = a.cols * static_cast<int64_t>(sizeof(T)) <= kRowAtATimeMaxXBytes &&
                                 (mode == BitmapPrefetch::kFar ||
                                  static_cast<double>(total) <= kRowAtATimeMaxDensity * entries);
      const bool split = splits_rows(a, mode);
      if (row_at_a_time && split) {
        for (; r < row_end; ++r)
          put(v, r, gemv_row_split_walk<V, Prefetch::kFarPerChunk>(a, r, xv, compress));
      } else if (row_at_a_time) {
        for (; r < row_end; ++r) {
          group(std::integral_constant<int, 1>{}, std::true_type{}, r, sums);
          put(v, r, sums[0]);
        }
      } else {
        for (; r + kGemvRows <= row_end; r += kGemvRows) {
          group(std::integral_constant<int, kGemvRows>{}, std::false_type{}, r, sums);
          for (int i = 0; i < kGemvRows; ++i) put(v, r + i, sums[i]);
        }
        for (; r < row_end; ++r) {
          group(std::integral_constant<int, 1>{}, std::false_type{}, r, sums);
          put(v, r, sums[0]);
        }
      }
    }
  }
}

// Expands nwords words of one row into dst (nwords * 64 entries, zeros where
// bits are clear), reading packed values from vp onwards and advancing it.
template <typename V, bool Safe, typename T = compute_t<V>>
inline void expand_words(const uint64_t* words, int64_t nwords, const V*& vp, T* dst) {
  using Vt = Vec<T>;
  constexpr int L = Vt::kLanes;
  if constexpr (L == 1) {
    for (int64_t w = 0; w < nwords; ++w) {
      T* d = dst + w * kWordBits;
      for (int64_t c = 0; c < kWordBits; ++c) d[c] = T(0);
      for (uint64_t word = words[w]; word != 0; word &= word - 1)
        d[__builtin_ctzll(word)] = StoredValue<V>::widen(*vp++);
    }
  } else {
    constexpr int S = kWordBits / L;
    for (int64_t w = 0; w < nwords; ++w) {
      const uint64_t word = words[w];
#pragma GCC unroll 16
      for (int s = 0; s < S; ++s) {
        const unsigned b = chunk_bits<T>(word, s);
        Vt::store(dst + w * kWordBits + s * L, BitExpand<V>::template load<Safe>(b, vp));
        vp += __builtin_popcount(b);
      }
    }
  }
}

// acc[i][v0 + v] += tile[i][0:width] . xs(v)[0:width] for i < R, v < VB, where
// xs(v) = x + v * x_vstride. tile rows hold whole words (zeros past width);
// x is read only below width.
template <typename T, int R, int VB>
inline void tile_dot(const T (*tile)[kTileCols], int64_t width, const T* x, int64_t x_vstride,
                     typename Vec<T>::reg (*acc)[kVectorChunk], int v0) {
  using Vt = Vec<T>;
  constexpr int L = Vt::kLanes;
  typename Vt::reg sum[R][VB];
  for (int i = 0; i < R; ++i)
    for (int v = 0; v < VB; ++v) sum[i][v] = acc[i][v0 + v];
  int64_t c = 0;
  for (; c + L <= width; c += L) {
    typename Vt::reg w[R];
#pragma GCC unroll 4
    for (int i = 0; i < R; ++i) w[i] = Vt::load(tile[i] + c);
#pragma GCC unroll 4
    for (int v = 0; v < VB; ++v) {
      const typename Vt::reg xv = Vt::load(x + v * x_vstride + c);
#pragma GCC unroll 4
      for (int i = 0; i < R; ++i) sum[i][v] = Vt::fmadd(w[i], xv, sum[i][v]);
    }
  }
  if (c < width) {
    const typename Vt::mask m = Vt::tail_mask(width - c);
    typename Vt::reg w[R];
    for (int i = 0; i < R; ++i) w[i] = Vt::load(tile[i] + c);
    for (int v = 0; v < VB; ++v) {
      const typename Vt::reg xv = Vt::maskz_load(m, x + v * x_vstride + c);
      for (int i = 0; i < R; ++i) sum[i][v] = Vt::fmadd(w[i], xv, sum[i][v]);
    }
  }
  for (int i = 0; i < R; ++i)
    for (int v = 0; v < VB; ++v) acc[i][v0 + v] = sum[i][v];
}

// Rows [r, r + R) times every vector, kVectorChunk vectors per pass.
template <typename V, int R, typename T = compute_t<V>>
void small_batch_group(const BitmapView<V>& a, int64_t r, const T* x, int64_t x_vstride,
                       int64_t nvec, const T* bias, T* y, int64_t y_vstride, int64_t y_rstride) {
  using Vt = Vec<T>;
  constexpr int L = Vt::kLanes;
  alignas(64) T tile[R][kTileCols];
  typename Vt::reg acc[R][kVectorChunk];
  const int64_t total = a.nnz();
  for (int64_t v0 = 0; v0 < nvec; v0 += kVectorChunk) {
    const int nv = static_cast<int>(nvec - v0 < kVectorChunk ? nvec - v0 : kVectorChunk);
    const T* xc = x + v0 * x_vstride;
    const V* vp[R];
    bool safe[R];
    for (int i = 0; i < R; ++i) {
      for (int v = 0; v < nv; ++v) acc[i][v] = Vt::zero();
      vp[i] = a.values + a.offsets[r + i];
      safe[i] = a.offsets[r + i + 1] + L > total;
    }
    for (int64_t kb = 0; kb < a.cols; kb += kTileCols) {
      const int64_t width = a.cols - kb < kTileCols ? a.cols - kb : kTileCols;
      const int64_t nwords = (width + kWordBits - 1) / kWordBits;
      for (int i = 0; i < R; ++i) {
        const uint64_t* words = a.bits + (r + i) * a.words_per_row + kb / kWordBits;
        if (safe[i])
          expand_words<V, true>(words, nwords, vp[i], tile[i]);
        else
          expand_words<V, false>(words, nwords, vp[i], tile[i]);
      }
      const T* xb = xc + kb;
      int v = 0;
      for (; v + 4 <= nv; v += 4)
        tile_dot<T, R, 4>(tile, width, xb + v * x_vstride, x_vstride, acc, v);
      switch (nv - v) {
        case 3:
          tile_dot<T, R, 3>(tile, width, xb + v * x_vstride, x_vstride, acc, v);
          break;
        case 2:
          tile_dot<T, R, 2>(tile, width, xb + v * x_vstride, x_vstride, acc, v);
          break;
        case 1:
          tile_dot<T, R, 1>(tile, width, xb + v * x_vstride, x_vstride, acc, v);
          break;
        default:
          break;
      }
    }
    for (int i = 0; i < R; ++i)
      for (int v = 0; v < nv; ++v)
        y[(v0 + v) * y_vstride + (r + i) * y_rstride] =
            Vt::reduce_add(acc[i][v]) + (bias ? bias[r + i] : T(0));
  }
}

template <typename V, typename T = compute_t<V>>
void small_batch_rows(const BitmapView<V>& a, int64_t row_begin, int64_t row_end, const T* x,
                      int64_t x_vstride, int64_t nvec, const T* bias, T* y, int64_t y_vstride,
                      int64_t y_rstride) {
  if constexpr (HasCompressWalk<BitExpand<V>>::value) {
    if (nvec == kCompressMaxVectors && compress_split_walk(a)) {
      T sums[kCompressMaxVectors];
      for (int64_t r = row_begin; r < row_end; ++r) {
        gemv_row_vectors_walk(a, r, x, x_vstride, sums);
        for (int64_t v = 0; v < nvec; ++v)
          y[v * y_vstride + r * y_rstride] = sums[v] + (bias ? bias[r] : T(0));
      }
      return;
    }
  }
  // Rows per tile: R x 4 accumulators plus R weight vectors must fit the registers.
  constexpr int R = Vec<T>::kRegisters >= 32 ? 4 : 2;
  int64_t r = row_begin;
  for (; r + R <= row_end; r += R)
    small_batch_group<V, R>(a, r, x, x_vstride, nvec, bias, y, y_vstride, y_rstride);
  for (; r < row_end; ++r)
    small_batch_group<V, 1>(a, r, x, x_vstride, nvec, bias, y, y_vstride, y_rstride);
}

// The bfloat16 tables are instantiated by the scalar and AVX2 files only (see
// bitmap_kernels.h).
template <typename V>
const BitmapKernels<V>& bitmap_kernel_table() {
  static const BitmapKernels<V> table{&gemv_rows<V>, &small_batch_rows<V>};
  return table;
}

template const BitmapKernels<float>& bitmap_kernel_table<float>();
template const BitmapKernels<double>& bitmap_kernel_table<double>();
