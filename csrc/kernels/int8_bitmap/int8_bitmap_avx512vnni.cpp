// Int8 bitmap kernels for AVX-512 CPUs with VBMI2 and VNNI (flags set per
// file in CMakeLists.txt; called only when use_avx512_extensions()).
//
// One 64-bit word of a row is the mask of one byte expand (vpexpandb), which
// places the next popcount(word) packed values in the lanes whose bit is
// set, zeros elsewhere: 64 weights per instruction, where the AVX2 kernels
// expand 16. vpdpbusd then multiplies 64 byte pairs and adds them four at a
// time into 16 int32 lanes, but it takes its first operand unsigned. So x
// comes biased to x + 128 (the driver flips its sign bits once per call),
// the weights stay signed, and
//   sum_k (x_k + 128) w_k = sum_k x_k w_k + 128 sum_k w_k,
// where the last term is 128 times the sum of the row's stored values,
// which the matrix keeps (Int8BitmapMatrix::row_sums). Biasing
// the weights instead would cost an xor per 64 weights on the same port as
// vpdpbusd. Each product fits 16 bits (255 * 127) and the sums wrap modulo
// 2^32, so the result is exact whenever the true sum fits int32, which
// kMaxInt8Cols guarantees. The vectors are padded to whole words by the driver.
//
// Four kernels: gemv_rows (a row at a time, every vector, for 1-4 vectors),
// gemv_rows_indexed (the same over very sparse rows, by their stored columns),
// small_batch_rows (a tile of 4 rows x 256 columns expanded once, for many
// vectors over dense-ish rows) and small_batch_rows_quads (only the column
// quads that hold weights, read from the matrix's quad plan, for many
// vectors over sparse rows).
#include <immintrin.h>

#include <algorithm>
#include <cstdint>

#include "core/int8_bitmap_matrix.h"
#include "kernels/int8_bitmap/int8_bitmap_kernels.h"

namespace sparsegemm {
namespace avx512 {

namespace {

constexpr int64_t kWordBits = 64;
// Bytes prefetched ahead of a row's read positions (measured best of
// 0.5-16 KB; the next rows' data when the row ends sooner).
constexpr int64_t kValuesAhead = 4096;
constexpr int64_t kBitsAhead = 4096;
// Where at most this fraction of the weights is stored, the batch-1 walk
// issues no prefetches: a row's values then advance about one cache line per
// 4 words, the hardware prefetchers keep up with its two streams, and the
// five prefetch instructions per 4 words only took issue slots from a walk
// bound by instructions (about 4.3 cycles per word on Zen 4 at 90-95%
// sparsity, cold). In-process A/B, Zen 4, 2 threads, cold, 4096 x 11008 and
// 11008 x 4096, batch 1: without them 1.05-1.40x as fast at 90% (12 pairs)
// and 0.85-1.14x at 95% (6 pairs, the one loss in a noisy run); at 80%
// 0.90-1.25x and at 50-70% 0.76-1.23x, so denser rows keep them.
constexpr double kPrefetchMinDensity = 0.15;
// Bytes of a row's columns and values prefetched ahead of the walk by
// stored columns (row_dot_indexed), once per pair of groups.
constexpr int64_t kIndexedAhead = 2048;
// Quads of the quad plan prefetched ahead of the small-batch walk (2 KB of
// weights, 1 KB of quad numbers). Zen 4, cold, 4096 x 11008 and 11008 x
// 4096, 2 threads: 1.07-1.17x as fast at 16 vectors and 90% sparsity,
// 1.05-1.06x at 80%, 1.04-1.10x at 12 vectors and 1.04-1.08x at 64; 1024
// ahead was no better.
constexpr int64_t kQuadsAhead = 512;
// Columns of a tile the small-batch kernel expands at once (whole words).
constexpr int64_t kTileCols = 256;
// Vectors that share one expanded tile.
constexpr int kVectorChunk = 16;

// The 64 weights of one word of a row, signed, zeros where the bit is clear;
// p moves past the values used. The expand load reads only the values it
// places, so no row needs a guard at the end of the array (a plain load plus
// the register form measured no faster). The mask is loaded straight from
// memory: kmovq from a register would take port 5, as the expand does.
inline __m512i expand_word(const uint64_t* word, const int8_t*& p) {
  const __mmask64 k =
      _load_mask64(const_cast<__mmask64*>(reinterpret_cast<const __mmask64*>(word)));
  const __m512i weights = _mm512_maskz_expandloadu_epi8(k, p);
  p += __builtin_popcountll(*word);
  return weights;
}

// The sum of the 16 lanes modulo 2^32, by vector adds only:
// _mm512_reduce_add_epi32 adds in signed int, where wrapping is undefined.
inline uint32_t wrapping_sum(__m512i lanes) {
  __m256i s8 = _mm256_add_epi32(_mm512_castsi512_si256(lanes), _mm512_extracti64x4_epi64(lanes, 1));
  __m128i s4 = _mm_add_epi32(_mm256_castsi256_si128(s8), _mm256_extracti128_si256(s8, 1));
  s4 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, _MM_SHUFFLE(1, 0, 3, 2)));
  s4 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, _MM_SHUFFLE(2, 3, 0, 1)));
  return static_cast<uint32_t>(_mm_cvtsi128_si32(s4));
}

// The row's exact sum from its sum over x + 128 (wrapping: that sum may have
// wrapped, the difference has not).
inline int32_t unbias(__m512i biased_sum, int32_t row_sum) {
  return static_cast<int32_t>(wrapping_sum(biased_sum) - 128u * static_cast<uint32_t>(row_sum));
}

// row r . x. One row at a time, so the kernel reads two sequential streams
// (the row's words and its values): walking 2, 4 or 8 rows together, as the
// float kernels do, ran 1.05-2.6x slower with the weights streaming from
// memory (4096 x 11008 at 50-90%), as more streams ran further from the
// memory bandwidth; without prefetches, two rows sharing each load of x ran
// 0.56-0.80x as fast at 90-95%. Four accumulators cover vpdpbusd's latency.
template <bool Prefetch>
inline int32_t row_dot(const BitmapView<int8_t>& a, const int32_t* row_sums, int64_t r,
                       const uint8_t* x) {
  constexpr int kAccumulators = 4;
  const int64_t wpr = a.words_per_row;
  const uint64_t* words = a.bits + r * wpr;
  const int8_t* vp = a.values + a.offsets[r];
  __m512i acc[kAccumulators];
  for (int j = 0; j < kAccumulators; ++j) acc[j] = _mm512_setzero_si512();
  int64_t w = 0;
  for (; w + kAccumulators <= wpr; w += kAccumulators) {
    if constexpr (Prefetch)
      _mm_prefetch(reinterpret_cast<const char*>(words + w) + kBitsAhead, _MM_HINT_T0);
#pragma GCC unroll 4
    for (int j = 0; j < kAccumulators; ++j) {
      if constexpr (Prefetch)
        _mm_prefetch(reinterpret_cast<const char*>(vp) + kValuesAhead, _MM_HINT_T0);
      const __m512i xw = _mm512_loadu_si512(x + (w + j) * kWordBits);
      acc[j] = _mm512_dpbusd_epi32(acc[j], xw, expand_word(words + w + j, vp));
    }
  }
  for (; w < wpr; ++w) {
    const __m512i xw = _mm512_loadu_si512(x + w * kWordBits);
    acc[0] = _mm512_dpbusd_epi32(acc[0], xw, expand_word(words + w, vp));
  }
  const __m512i sum =
      _mm512_add_epi32(_mm512_add_epi32(acc[0], acc[1]), _mm512_add_epi32(acc[2], acc[3]));
  return unbias(sum, row_sums[r]);
}

void gemv_rows(const BitmapView<int8_t>& a, const int32_t* row_sums, int64_t row_begin,
               int64_t row_end, const uint8_t* x, int64_t x_vstride, int64_t nvec, int32_t* acc,
               int64_t acc_vstride) {
  // Row by row, every vector: the row stays in L1 for the vectors after the first.
  const bool prefetch =
      static_cast<double>(a.nnz()) > kPrefetchMinDensity * static_cast<double>(a.rows * a.cols);
  for (int64_t r = row_begin; r < row_end; ++r)
    for (int64_t v = 0; v < nvec; ++v)
      acc[v * acc_vstride + r] = prefetch ? row_dot<true>(a, row_sums, r, x + v * x_vstride)
                                          : row_dot<false>(a, row_sums, r, x + v * x_vstride);
}

// Up to 64 stored weights of one group of a row's index plan (at most 64 per
// step: `take`) times x, whose group of 256 bytes is x0..x3: each weight's
// column byte picks its x byte with two permutes, one per 128-byte half
// (bits 0-6), and the column's top bit (the byte's sign) chooses the half.
// Lanes past `take` read column 0 and weight 0, so they add nothing.
inline __m512i indexed_step(const uint8_t* columns, const int8_t* values, int64_t take,
                            const __m512i (&xg)[4], __m512i acc) {
  const __mmask64 stored = _cvtu64_mask64(_bzhi_u64(~uint64_t{0}, static_cast<unsigned>(take)));
  const __m512i column = _mm512_maskz_loadu_epi8(stored, columns);
  const __m512i low_half = _mm512_permutex2var_epi8(xg[0], column, xg[1]);
  const __m512i high_half = _mm512_permutex2var_epi8(xg[2], column, xg[3]);
  const __m512i xs = _mm512_mask_blend_epi8(_mm512_movepi8_mask(column), low_half, high_half);
  return _mm512_dpbusd_epi32(acc, xs, _mm512_maskz_loadu_epi8(stored, values));
}

// One group of a row's index plan times x (xw: the group's first byte of x):
// one step per 64 stored weights, usually one. `words` < 4 only in a row's
// last group, where x is padded to whole words only and the missing words
// read as zero.
inline __m512i group_dot_indexed(const uint8_t* xw, int64_t words, int64_t count,
                                 const uint8_t*& columns, const int8_t*& values, __m512i acc) {
  __m512i xg[4];
  for (int64_t j = 0; j < 4; ++j)
    xg[j] = j < words ? _mm512_loadu_si512(xw + j * kWordBits) : _mm512_setzero_si512();
  for (int64_t n = count; n > 0;) {
    const int64_t take = n < 64 ? n : 64;
    acc = indexed_step(columns, values, take, xg, acc);
    columns += take;
    values += take;
    n -= take;
  }
  return acc;
}

// row r . x over the matrix's index plan (core/int8_bitmap_matrix.h), for
// rows so sparse that a group of 256 columns holds about as many stored
// weights as one vector has lanes: two permutes per group replace four
// expands, and the bitmap is not read. Zen 4, 2 threads, cold, standalone
// loop over 4096 x 11008: 0.335-0.347 ms against the bitmap walk's
// 0.439-0.447 at 90% and 95% sparsity, even at 80%, slower at 70%.
// Two accumulators, named rather than indexed by the group's parity: an
// indexed pair (acc[g & 1]) went through the stack on every step (GCC 12);
// named, the walk ran 1.08-1.22x as fast on one thread, cold, on both
// shapes at 90% (5 alternating runs each), and level to 1.1x on two, where
// it nears the memory bandwidth.
inline int32_t row_dot_indexed(const ColumnIndexPlan& plan, const BitmapView<int8_t>& a,
                               const int32_t* row_sums, int64_t r, const uint8_t* x) {
  constexpr int64_t kGroupWords = ColumnIndexPlan::kGroupCols / kWordBits;
  const int64_t groups = plan.groups_per_row;
  const int64_t full_groups = a.words_per_row / kGroupWords;
  const uint16_t* counts = plan.counts.data() + r * groups;
  const uint8_t* columns = plan.columns.data() + a.offsets[r];
  const int8_t* values = a.values + a.offsets[r];
  __m512i even = _mm512_setzero_si512(), odd = _mm512_setzero_si512();
  int64_t g = 0;
  for (; g + 2 <= full_groups; g += 2) {
    // Unlike the bitmap walk at such densities (kPrefetchMinDensity), this
    // walk gains from prefetches: on a 2-core Xeon (Sapphire Rapids class,
    // AMX) it ran 1.3-1.4x as fast with them at 90-95% sparsity (4096x11008
    // and 11008x4096, batch 1, cold, 2 threads, alternating processes; 80%
    // level), where the hardware prefetchers alone streamed about 19 GB/s.
    // On Zen 4 a prefetch here measured level.
    _mm_prefetch(reinterpret_cast<const char*>(columns) + kIndexedAhead, _MM_HINT_T0);
    _mm_prefetch(reinterpret_cast<const char*>(values) + kIndexedAhead, _MM_HINT_T0);
    const uint8_t* xw = x + g * ColumnIndexPlan::kGroupCols;
    even = group_dot_indexed(xw, kGroupWords, counts[g], columns, values, even);
    odd = group_dot_indexed(xw + ColumnIndexPlan::kGroupCols, kGroupWords, counts[g + 1], columns,
                            values, odd);
  }
  for (; g < groups; ++g)
    even = group_dot_indexed(x + g * ColumnIndexPlan::kGroupCols,
                             std::min(kGroupWords, a.words_per_row - g * kGroupWords), counts[g],
                             columns, values, even);
  return unbias(_mm512_add_epi32(even, odd), row_sums[r]);
}

void gemv_rows_indexed(const ColumnIndexPlan& plan, const BitmapView<int8_t>& a,
                       const int32_t* row_sums, int64_t row_begin, int64_t row_end,
                       const uint8_t* x, int64_t x_vstride, int64_t nvec, int32_t* acc,
                       int64_t acc_vstride) {
  for (int64_t r = row_begin; r < row_end; ++r)
    for (int64_t v = 0; v < nvec; ++v)
      acc[v * acc_vstride + r] = row_dot_indexed(plan, a, row_sums, r, x + v * x_vstride);
}

// acc[i][v0 + v] += x(v)[0:width] + 128 . tile[i][0:width] for i < R, v < VB.
template <int R, int VB>
inline void tile_dot(const int8_t (*tile)[kTileCols], int64_t width, const uint8_t* x,
                     int64_t x_vstride, __m512i (*acc)[kVectorChunk], int v0) {
  __m512i sum[R][VB];
  for (int i = 0; i < R; ++i)
    for (int v = 0; v < VB; ++v) sum[i][v] = acc[i][v0 + v];
  for (int64_t c = 0; c < width; c += kWordBits) {
    __m512i w[R];
#pragma GCC unroll 4
    for (int i = 0; i < R; ++i) w[i] = _mm512_load_si512(tile[i] + c);
#pragma GCC unroll 4
    for (int v = 0; v < VB; ++v) {
      const __m512i xv = _mm512_loadu_si512(x + v * x_vstride + c);
#pragma GCC unroll 4
      for (int i = 0; i < R; ++i) sum[i][v] = _mm512_dpbusd_epi32(sum[i][v], xv, w[i]);
    }
  }
  for (int i = 0; i < R; ++i)
    for (int v = 0; v < VB; ++v) acc[i][v0 + v] = sum[i][v];
}

// Rows [r, r + R) times every vector, kVectorChunk vectors per pass.
template <int R>
void small_batch_group(const BitmapView<int8_t>& a, const int32_t* row_sums, int64_t r,
                       const uint8_t* x, int64_t x_vstride, int64_t nvec, int32_t* out,
                       int64_t out_vstride) {
  alignas(64) int8_t tile[R][kTileCols];
  __m512i acc[R][kVectorChunk];
  const int64_t padded_cols = a.words_per_row * kWordBits;
  for (int64_t v0 = 0; v0 < nvec; v0 += kVectorChunk) {
    const int nv = static_cast<int>(nvec - v0 < kVectorChunk ? nvec - v0 : kVectorChunk);
    const uint8_t* xc = x + v0 * x_vstride;
    const int8_t* vp[R];
    for (int i = 0; i < R; ++i) {
      for (int v = 0; v < nv; ++v) acc[i][v] = _mm512_setzero_si512();
      vp[i] = a.values + a.offsets[r + i];
    }
    for (int64_t kb = 0; kb < padded_cols; kb += kTileCols) {
      const int64_t width = padded_cols - kb < kTileCols ? padded_cols - kb : kTileCols;
      for (int i = 0; i < R; ++i) {
        const uint64_t* words = a.bits + (r + i) * a.words_per_row + kb / kWordBits;
        for (int64_t w = 0; w < width / kWordBits; ++w)
          _mm512_store_si512(tile[i] + w * kWordBits, expand_word(words + w, vp[i]));
      }
      const uint8_t* xb = xc + kb;
      int v = 0;
      for (; v + 4 <= nv; v += 4)
        tile_dot<R, 4>(tile, width, xb + v * x_vstride, x_vstride, acc, v);
      switch (nv - v) {
        case 3:
          tile_dot<R, 3>(tile, width, xb + v * x_vstride, x_vstride, acc, v);
          break;
        case 2:
          tile_dot<R, 2>(tile, width, xb + v * x_vstride, x_vstride, acc, v);
          break;
        case 1:
          tile_dot<R, 1>(tile, width, xb + v * x_vstride, x_vstride, acc, v);
          break;
        default:
          break;
      }
    }
    for (int i = 0; i < R; ++i)
      for (int v = 0; v < nv; ++v)
        out[(v0 + v) * out_vstride + r + i] = unbias(acc[i][v], row_sums[r + i]);
  }
}

void small_batch_rows(const BitmapView<int8_t>& a, const int32_t* row_sums, int64_t row_begin,
                      int64_t row_end, const uint8_t* x, int64_t x_vstride, int64_t nvec,
                      int32_t* acc, int64_t acc_vstride) {
  // 4 rows x 4 vectors of accumulators, 4 tile rows and a vector: 25 of 32 registers.
  constexpr int R = 4;
  int64_t r = row_begin;
  for (; r + R <= row_end; r += R)
    small_batch_group<R>(a, row_sums, r, x, x_vstride, nvec, acc, acc_vstride);
  for (; r < row_end; ++r)
    small_batch_group<1>(a, row_sums, r, x, x_vstride, nvec, acc, acc_vstride);
}

// acc + the quads [j, end) of one row segment of the plan times the 16
// vectors of x4: one vpdpbusd per quad, its 4 weights broadcast against the
// quad's 64 bytes of x4 (4 columns of 16 vectors). Four accumulators cover
// vpdpbusd's latency.
inline __m512i segment_dot(const uint16_t* quads, const int32_t* weights, int64_t j, int64_t end,
                           const uint8_t* x4, __m512i acc) {
  constexpr int kQuadShift = 6;  // 64 bytes of x4 per quad
  __m512i sum[4] = {acc, _mm512_setzero_si512(), _mm512_setzero_si512(), _mm512_setzero_si512()};
  for (; j + 4 <= end; j += 4) {
    // The plan is one forward stream, so 512 quads ahead is the next data even
    // past this segment's end.
    _mm_prefetch(reinterpret_cast<const char*>(weights + j + kQuadsAhead), _MM_HINT_T0);
    _mm_prefetch(reinterpret_cast<const char*>(quads + j + kQuadsAhead), _MM_HINT_T0);
#pragma GCC unroll 4
    for (int u = 0; u < 4; ++u)
      sum[u] =
          _mm512_dpbusd_epi32(sum[u], _mm512_load_si512(x4 + (int64_t{quads[j + u]} << kQuadShift)),
                              _mm512_set1_epi32(weights[j + u]));
  }
  for (int u = 0; j < end; ++j, ++u)
    sum[u] = _mm512_dpbusd_epi32(sum[u], _mm512_load_si512(x4 + (int64_t{quads[j]} << kQuadShift)),
                                 _mm512_set1_epi32(weights[j]));
  return _mm512_add_epi32(_mm512_add_epi32(sum[0], sum[1]), _mm512_add_epi32(sum[2], sum[3]));
}

// Rows [row_begin, row_end) of the plan times every vector, 16 at a time:
// for each block of rows, panel by panel, so the panel's 16 KB of x4 stays
// in L1 while the block's rows read it, and the plan is one forward stream.
// The rows' running sums wait in `sums` between panels. Against gathering
// each row's quads from the bitmap on every call (two vpcompressd per
// word, slow on AMD Zen 4), cold, 2 threads, 16 vectors, 4096 x 11008 at 90%
// sparsity: 1.6 against about 4 ms.
void small_batch_rows_quads(const Int8QuadPlan& plan, const int32_t* row_sums, int64_t row_begin,
                            int64_t row_end, const uint8_t* x4, int64_t nvec, int32_t* acc,
                            int64_t acc_vstride) {
  constexpr int64_t B = Int8QuadPlan::kRowBlock;
  const int64_t chunk_bytes = plan.words_per_row * kWordBits * kQuadVectors;
  const uint16_t* quads = plan.quads.data();
  const int32_t* weights = plan.weights.data();
  alignas(64) int32_t sums[B][kQuadVectors];
  for (int64_t v0 = 0; v0 < nvec; v0 += kQuadVectors) {
    const uint8_t* xc = x4 + v0 / kQuadVectors * chunk_bytes;
    const int64_t nv = nvec - v0 < kQuadVectors ? nvec - v0 : kQuadVectors;
    for (int64_t block = row_begin / B; block * B < row_end; ++block) {
      // The rows of this block in the range: [i0, i1).
      const int64_t i0 = std::max<int64_t>(row_begin - block * B, 0);
      const int64_t i1 = std::min<int64_t>(row_end - block * B, B);
      for (int64_t i = i0; i < i1; ++i) _mm512_store_si512(sums[i], _mm512_setzero_si512());
      int64_t j = plan.block_starts[block];
      for (int64_t panel = 0; panel < plan.panels; ++panel) {
        const uint16_t* counts = plan.counts.data() + (block * plan.panels + panel) * B;
        for (int64_t i = 0; i < i0; ++i) j += counts[i];
        for (int64_t i = i0; i < i1; ++i) {
          const int64_t end = j + counts[i];
          _mm512_store_si512(sums[i],
                             segment_dot(quads, weights, j, end, xc, _mm512_load_si512(sums[i])));
          j = end;
        }
        for (int64_t i = i1; i < B; ++i) j += counts[i];
      }
      for (int64_t i = i0; i < i1; ++i) {
        const int64_t r = block * B + i;
        const uint32_t bias = 128u * static_cast<uint32_t>(row_sums[r]);
        for (int64_t v = 0; v < nv; ++v)
          acc[(v0 + v) * acc_vstride + r] =
              static_cast<int32_t>(static_cast<uint32_t>(sums[i][v]) - bias);
      }
    }
  }
}

// Int8QuantizeFn, 16 values a step: GCC's vectorization of the driver's loop
// (clamp in float, widen, pack) ran it at about 3 cycles per value on Zen 4,
// the largest part of a batch-16 call at 11008 columns. The conversion rounds
// half to even (the default MXCSR mode), as the driver's loop does; the
// product is at most about 127 in magnitude, so it never overflows int32.
// A masked vpmovdb to memory is slow on Zen 4, so full steps narrow in a
// register and store plainly; only the last, partial step is masked.
void quantize_biased(const float* x, int64_t cols, float inverse_sx, uint8_t* xq) {
  const __m512 inverse = _mm512_set1_ps(inverse_sx);
  const __m512i low = _mm512_set1_epi32(-kInt8Max), high = _mm512_set1_epi32(kInt8Max);
  const __m512i bias = _mm512_set1_epi32(128);
  const auto biased = [&](__m512 values) {
    const __m512i q = _mm512_cvtps_epi32(_mm512_mul_ps(values, inverse));
    return _mm512_add_epi32(_mm512_min_epi32(_mm512_max_epi32(q, low), high), bias);
  };
  int64_t k = 0;
  for (; k + 16 <= cols; k += 16)
    _mm_storeu_si128(reinterpret_cast<__m128i*>(xq + k),
                     _mm512_cvtepi32_epi8(biased(_mm512_loadu_ps(x + k))));
  if (k < cols) {
    const __mmask16 mask = static_cast<__mmask16>((1u << (cols - k)) - 1);
    _mm512_mask_cvtepi32_storeu_epi8(xq + k, mask, biased(_mm512_maskz_loadu_ps(mask, x + k)));
  }
}

// Int8InterleaveFn, 16 vectors by 16 quads a step: a 16 x 16 transpose of
// 32-bit words (unpacks within 128-bit lanes, then the lanes themselves),
// against one 4-byte copy per vector and quad in the driver's loop.
void interleave_quads(const uint8_t* xs, int64_t stride, int64_t batch, int64_t padded_cols,
                      uint8_t* x4) {
  const int64_t quads = padded_cols / 4;
  const __m512i biased_zeros = _mm512_set1_epi32(static_cast<int>(0x80808080u));
  for (int64_t v0 = 0; v0 < batch; v0 += kQuadVectors) {
    const int64_t vectors = std::min<int64_t>(kQuadVectors, batch - v0);
    uint8_t* out = x4 + v0 / kQuadVectors * quads * 64;
    for (int64_t q0 = 0; q0 < quads; q0 += 16) {
      __m512i r[16], t[16];
      for (int v = 0; v < 16; ++v)
        r[v] = v < vectors ? _mm512_loadu_si512(xs + (v0 + v) * stride + 4 * q0) : biased_zeros;
      // t[4g + m], lane L: the words of rows 4g..4g+3 at column 4L + m.
      for (int g = 0; g < 4; ++g) {
        const __m512i lo01 = _mm512_unpacklo_epi32(r[4 * g], r[4 * g + 1]);
        const __m512i hi01 = _mm512_unpackhi_epi32(r[4 * g], r[4 * g + 1]);
        const __m512i lo23 = _mm512_unpacklo_epi32(r[4 * g + 2], r[4 * g + 3]);
        const __m512i hi23 = _mm512_unpackhi_epi32(r[4 * g + 2], r[4 * g + 3]);
        t[4 * g] = _mm512_unpacklo_epi64(lo01, lo23);
        t[4 * g + 1] = _mm512_unpackhi_epi64(lo01, lo23);
        t[4 * g + 2] = _mm512_unpacklo_epi64(hi01, hi23);
        t[4 * g + 3] = _mm512_unpackhi_epi64(hi01, hi23);
      }
      // Column 4L + m gathers lane L of t[m], t[4 + m], t[8 + m], t[12 + m].
      for (int m = 0; m < 4; ++m) {
        const __m512i a = _mm512_shuffle_i32x4(t[m], t[4 + m], 0x44);
        const __m512i b = _mm512_shuffle_i32x4(t[m], t[4 + m], 0xEE);
        const __m512i c = _mm512_shuffle_i32x4(t[8 + m], t[12 + m], 0x44);
        const __m512i d = _mm512_shuffle_i32x4(t[8 + m], t[12 + m], 0xEE);
        uint8_t* column = out + (q0 + m) * 64;
        _mm512_store_si512(column, _mm512_shuffle_i32x4(a, c, 0x88));
        _mm512_store_si512(column + 4 * 64, _mm512_shuffle_i32x4(a, c, 0xDD));
        _mm512_store_si512(column + 8 * 64, _mm512_shuffle_i32x4(b, d, 0x88));
        _mm512_store_si512(column + 12 * 64, _mm512_shuffle_i32x4(b, d, 0xDD));
      }
    }
  }
}

}  // namespace

const Int8BitmapKernels& int8_bitmap_vnni_kernel_table() {
  static const Int8BitmapKernels table{nullptr,
                                       nullptr,
                                       &gemv_rows,
                                       &small_batch_rows,
                                       &small_batch_rows_quads,
                                       nullptr,
                                       &gemv_rows_indexed,
                                       &quantize_biased,
                                       &interleave_quads};
  return table;
}

}  // namespace avx512
}  // namespace sparsegemm
