// Int8 bitmap kernels written once against Int8Expand (int8_expand_<isa>.h).
// This file is included inside an ISA namespace by int8_bitmap_<isa>.cpp
// after that header; it must not include headers itself.
//
// Batch-1 kernel (gemv_rows): each 64-bit word of a row is cut into four
// 16-bit chunks; a chunk expands the next packed int8 values into 16 int16
// lanes, which madd_epi16 multiplies with the matching 16 entries of the
// vector (pre-extended to int16 by the driver). The packed position of the
// next chunk depends on the popcount of this one, so each row's loads form a
// chain: kGemvRows rows are walked together, sharing the loads of x, so the
// chains of different rows overlap (as bitmap_kernels.inl does for floats).
//
// Small-batch kernel (small_batch_rows): a tile of rows x kTileCols columns
// is expanded to int16 on the stack once, then multiplied with up to
// kVectorChunk vectors, 4 at a time from registers.
//
// The vectors are zero-padded to whole words by the driver, so no kernel has
// a column tail. The scalar level (!E::kVector) walks the set bits instead.

namespace int8_kernels {

constexpr int64_t kWordBits = 64;
constexpr int kChunkBits = 16;  // bitmap bits per expanded vector
// Rows the batch-1 kernel walks together: with 4 their read positions, words
// and accumulators no longer fit the 16 general and vector registers.
constexpr int kGemvRows = 2;
// Bytes prefetched ahead of each row's read position. Measured on Zen 4 with
// these kernels forced (SPARSEGEMM_ISA=avx2, or AVX-512 without the
// extensions), cold, batch 1, 2 threads, 4096 x 11008 and 11008 x 4096:
// 4096 ran 1.02-1.39x as fast as 256 at 50% sparsity, 1.12-1.56x at 70% and
// 1.01-1.06x at 90%; 8192 was level with 4096; 1024 and no prefetch were no
// better than 256.
constexpr int64_t kPrefetchAhead = 4096;
// Columns of a tile the small-batch kernel expands at once (whole words).
constexpr int64_t kTileCols = 256;
// Vectors that share one expanded tile.
constexpr int kVectorChunk = 16;

inline unsigned chunk_bits(uint64_t word, int s) {
  return static_cast<unsigned>((word >> (s * kChunkBits)) & 0xffff);
}

// Scalar level: row . x by walking set bits (x is read at stored columns only).
inline int32_t row_dot_by_bits(const uint64_t* words, int64_t nwords, const int8_t* vals,
                               const int16_t* x) {
  int32_t sum = 0;
  for (int64_t w = 0; w < nwords; ++w) {
    const int16_t* xw = x + w * kWordBits;
    for (uint64_t word = words[w]; word != 0; word &= word - 1)
      sum += static_cast<int32_t>(*vals++) * xw[__builtin_ctzll(word)];
  }
  return sum;
}

// Vector levels: sums[i] = row (r + i) . x for i < R.
template <typename E, int R, bool Safe>
inline void gemv_group(const BitmapView<int8_t>& a, int64_t r, const int16_t* x, int32_t* sums) {
  constexpr int S = kWordBits / kChunkBits;
  const int64_t wpr = a.words_per_row;
  typename E::reg acc[R];
  const uint64_t* words[R];
  const int8_t* vp[R];
  for (int i = 0; i < R; ++i) {
    acc[i] = E::zero();
    words[i] = a.bits + (r + i) * wpr;
    vp[i] = a.values + a.offsets[r + i];
  }
  for (int64_t w = 0; w < wpr; ++w) {
    uint64_t word[R];
    for (int i = 0; i < R; ++i) {
      word[i] = words[i][w];
      E::prefetch(vp[i] + kPrefetchAhead);
    }
    const int16_t* xw = x + w * kWordBits;
#pragma GCC unroll 4
    for (int s = 0; s < S; ++s) {
      const typename E::reg xs = E::load(xw + s * kChunkBits);
#pragma GCC unroll 4
      for (int i = 0; i < R; ++i)
        acc[i] = E::madd_add(E::template expand16<Safe>(chunk_bits(word[i], s), vp[i]), xs, acc[i]);
    }
  }
  for (int i = 0; i < R; ++i) sums[i] = E::reduce_add(acc[i]);
}

// Whether rows [r, r + R) may use plain packed loads: each reads up to
// kPackedBytes from a position at most at the end of row r + R - 1.
template <typename E>
inline bool plain_loads_fit(const BitmapView<int8_t>& a, int64_t end_row) {
  return a.offsets[end_row] + E::kPackedBytes <= a.nnz();
}

template <typename E>
void gemv_rows(const BitmapView<int8_t>& a, int64_t row_begin, int64_t row_end, const int16_t* x,
               int64_t x_vstride, int64_t nvec, int32_t* acc, int64_t acc_vstride) {
  for (int64_t v = 0; v < nvec; ++v) {
    const int16_t* xv = x + v * x_vstride;
    int32_t* out = acc + v * acc_vstride;
    if constexpr (!E::kVector) {
      for (int64_t r = row_begin; r < row_end; ++r)
        out[r] = row_dot_by_bits(a.bits + r * a.words_per_row, a.words_per_row,
                                 a.values + a.offsets[r], xv);
    } else {
      int32_t sums[kGemvRows];
      int64_t r = row_begin;
      for (; r + kGemvRows <= row_end; r += kGemvRows) {
        if (plain_loads_fit<E>(a, r + kGemvRows))
          gemv_group<E, kGemvRows, false>(a, r, xv, sums);
        else
          gemv_group<E, kGemvRows, true>(a, r, xv, sums);
        for (int i = 0; i < kGemvRows; ++i) out[r + i] = sums[i];
      }
      for (; r < row_end; ++r) {
        if (plain_loads_fit<E>(a, r + 1))
          gemv_group<E, 1, false>(a, r, xv, sums);
        else
          gemv_group<E, 1, true>(a, r, xv, sums);
        out[r] = sums[0];
      }
    }
  }
}

// Expands nwords words of one row into dst (nwords * 64 int16, zeros where
// bits are clear), reading packed values from vp onwards and advancing it.
template <typename E, bool Safe>
inline void expand_words(const uint64_t* words, int64_t nwords, const int8_t*& vp, int16_t* dst) {
  constexpr int S = kWordBits / kChunkBits;
  for (int64_t w = 0; w < nwords; ++w) {
    const uint64_t word = words[w];
#pragma GCC unroll 4
    for (int s = 0; s < S; ++s)
      E::store(dst + w * kWordBits + s * kChunkBits,
               E::template expand16<Safe>(chunk_bits(word, s), vp));
  }
}

// acc[i][v0 + v] += tile[i][0:width] . xs(v)[0:width] for i < R, v < VB, where
// xs(v) = x + v * x_vstride and width is whole words.
template <typename E, int R, int VB>
inline void tile_dot(const int16_t (*tile)[kTileCols], int64_t width, const int16_t* x,
                     int64_t x_vstride, typename E::reg (*acc)[kVectorChunk], int v0) {
  typename E::reg sum[R][VB];
  for (int i = 0; i < R; ++i)
    for (int v = 0; v < VB; ++v) sum[i][v] = acc[i][v0 + v];
  for (int64_t c = 0; c < width; c += kChunkBits) {
    typename E::reg w[R];
#pragma GCC unroll 4
    for (int i = 0; i < R; ++i) w[i] = E::load(tile[i] + c);
#pragma GCC unroll 4
    for (int v = 0; v < VB; ++v) {
      const typename E::reg xv = E::load(x + v * x_vstride + c);
#pragma GCC unroll 4
      for (int i = 0; i < R; ++i) sum[i][v] = E::madd_add(w[i], xv, sum[i][v]);
    }
  }
  for (int i = 0; i < R; ++i)
    for (int v = 0; v < VB; ++v) acc[i][v0 + v] = sum[i][v];
}

// Rows [r, r + R) times every vector, kVectorChunk vectors per pass.
template <typename E, int R>
void small_batch_group(const BitmapView<int8_t>& a, int64_t r, const int16_t* x, int64_t x_vstride,
                       int64_t nvec, int32_t* out, int64_t out_vstride) {
  alignas(64) int16_t tile[R][kTileCols];
  typename E::reg acc[R][kVectorChunk];
  const int64_t padded_cols = a.words_per_row * kWordBits;
  for (int64_t v0 = 0; v0 < nvec; v0 += kVectorChunk) {
    const int nv = static_cast<int>(nvec - v0 < kVectorChunk ? nvec - v0 : kVectorChunk);
    const int16_t* xc = x + v0 * x_vstride;
    const int8_t* vp[R];
    bool plain[R];
    for (int i = 0; i < R; ++i) {
      for (int v = 0; v < nv; ++v) acc[i][v] = E::zero();
      vp[i] = a.values + a.offsets[r + i];
      plain[i] = plain_loads_fit<E>(a, r + i + 1);
    }
    for (int64_t kb = 0; kb < padded_cols; kb += kTileCols) {
      const int64_t width = padded_cols - kb < kTileCols ? padded_cols - kb : kTileCols;
      for (int i = 0; i < R; ++i) {
        const uint64_t* words = a.bits + (r + i) * a.words_per_row + kb / kWordBits;
        if (plain[i])
          expand_words<E, false>(words, width / kWordBits, vp[i], tile[i]);
        else
          expand_words<E, true>(words, width / kWordBits, vp[i], tile[i]);
      }
      const int16_t* xb = xc + kb;
      int v = 0;
      for (; v + 4 <= nv; v += 4)
        tile_dot<E, R, 4>(tile, width, xb + v * x_vstride, x_vstride, acc, v);
      switch (nv - v) {
        case 3:
          tile_dot<E, R, 3>(tile, width, xb + v * x_vstride, x_vstride, acc, v);
          break;
        case 2:
          tile_dot<E, R, 2>(tile, width, xb + v * x_vstride, x_vstride, acc, v);
          break;
        case 1:
          tile_dot<E, R, 1>(tile, width, xb + v * x_vstride, x_vstride, acc, v);
          break;
        default:
          break;
      }
    }
    for (int i = 0; i < R; ++i)
      for (int v = 0; v < nv; ++v) out[(v0 + v) * out_vstride + r + i] = E::reduce_add(acc[i][v]);
  }
}

template <typename E>
void small_batch_rows(const BitmapView<int8_t>& a, int64_t row_begin, int64_t row_end,
                      const int16_t* x, int64_t x_vstride, int64_t nvec, int32_t* acc,
                      int64_t acc_vstride) {
  if constexpr (!E::kVector) {
    gemv_rows<E>(a, row_begin, row_end, x, x_vstride, nvec, acc, acc_vstride);
  } else {
    // 2 rows x 4 vectors of accumulators plus 2 weight vectors fit 16 registers.
    constexpr int R = 2;
    int64_t r = row_begin;
    for (; r + R <= row_end; r += R)
      small_batch_group<E, R>(a, r, x, x_vstride, nvec, acc, acc_vstride);
    for (; r < row_end; ++r) small_batch_group<E, 1>(a, r, x, x_vstride, nvec, acc, acc_vstride);
  }
}

}  // namespace int8_kernels

const Int8BitmapKernels& int8_bitmap_kernel_table() {
  static const Int8BitmapKernels table{&int8_kernels::gemv_rows<Int8Expand>,
                                       &int8_kernels::small_batch_rows<Int8Expand>, nullptr,
                                       nullptr, nullptr};
  return table;
}
