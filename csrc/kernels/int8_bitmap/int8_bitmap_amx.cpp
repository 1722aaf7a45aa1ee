// The int8 bitmap small-batch kernel for CPUs with AMX (Sapphire Rapids and
// later; flags set per file in CMakeLists.txt; int8_bitmap_kernels() hands it
// out only when use_amx()).
//
// A tile multiply (tdpbsud) takes 16 rows x 64 signed bytes of the weight and
// 16 column quads x 16 vectors x 4 unsigned bytes of x, and adds the 16 x 16
// int32 products to an accumulator tile: 16,384 multiplies per instruction,
// where vpdpbusd does 64. So the weight is expanded densely (one byte expand
// per row and word, zeros where bits are clear) into a 1 KB tile and
// multiplied whole: the expand and the tile multiply cost the same whatever
// the density, and the work left is streaming the bitmap and the values.
//
// x comes as the quad kernel reads it (Int8QuadKernelFn): biased to x + 128
// and interleaved by column quads, 16 vectors at a time, which is the layout
// of the tile multiply's second operand, so a word's 16 quads are one
// contiguous 1 KB tile. The bias comes back off with the row sums, as in the
// VNNI kernels, and the sums wrap modulo 2^32 the same way.
#include <immintrin.h>
#include <cstdint>
#include <cstring>

#include "kernels/int8_bitmap/int8_bitmap_kernels.h"

namespace sparsegemm {
namespace amx {

namespace {

constexpr int kTileRows = 16;      // weight rows per tile (and vectors per tile)
constexpr int kTileBytes = 64;     // bytes per tile row: one bitmap word of a row
constexpr int64_t kWordBits = 64;  // columns per word
static_assert(kQuadVectors == kTileRows, "the quad layout must be the tile layout");
// A tile load cannot take data from the store buffer: reading a tile just
// expanded stalls until its stores reach the cache. So words are expanded
// kExpandAhead words before they are multiplied, into a ring of tiles.
constexpr int64_t kExpandAhead = 6;
constexpr int64_t kRingTiles = 8;
static_assert(kRingTiles >= kExpandAhead + 2, "a slot must not be rewritten before it is read");

// Tiles: 0 and 1 accumulate even and odd words (two independent chains for
// the tile multiply's latency), 2 and 3 hold expanded weights, 4 and 5 x.
struct alignas(64) TileConfig {
  uint8_t palette = 1;
  uint8_t start_row = 0;
  uint8_t reserved[14] = {};
  uint16_t bytes_per_row[16] = {};
  uint8_t rows[16] = {};
};

void load_tile_config() {
  TileConfig config;
  for (int t = 0; t < 6; ++t) {
    config.bytes_per_row[t] = kTileBytes;
    config.rows[t] = kTileRows;
  }
  _tile_loadconfig(&config);
}

// Word w of rows [0, m) of the block, expanded into tile rows (values from
// vp[i] on, which advance).
inline void expand_word(const uint64_t* const* words, const int8_t** vp, int m, int64_t w,
                        int8_t (*tile)[kTileBytes]) {
  for (int i = 0; i < m; ++i) {
    const uint64_t word = words[i][w];
    _mm512_store_si512(tile[i], _mm512_maskz_expandloadu_epi8(_cvtu64_mask64(word), vp[i]));
    vp[i] += __builtin_popcountll(word);
  }
}

}  // namespace

void small_batch_rows_amx(const BitmapView<int8_t>& a, const int32_t* row_sums, int64_t row_begin,
                          int64_t row_end, const uint8_t* x4, int64_t nvec, int32_t* acc,
                          int64_t acc_vstride) {
  const int64_t wpr = a.words_per_row;
  const int64_t chunk_bytes = wpr * kWordBits * kQuadVectors;  // one chunk of 16 vectors
  alignas(64) int8_t ring[kRingTiles][kTileRows][kTileBytes];
  alignas(64) int32_t even[kTileRows][kTileRows];
  alignas(64) int32_t odd[kTileRows][kTileRows];
  // Rows past the block's last stay zero (their products are not used).
  std::memset(ring, 0, sizeof ring);
  load_tile_config();
  for (int64_t r = row_begin; r < row_end; r += kTileRows) {
    const int m = static_cast<int>(row_end - r < kTileRows ? row_end - r : kTileRows);
    const uint64_t* words[kTileRows];
    for (int i = 0; i < m; ++i) words[i] = a.bits + (r + i) * wpr;
    for (int64_t v0 = 0; v0 < nvec; v0 += kQuadVectors) {
      const uint8_t* xc = x4 + v0 / kQuadVectors * chunk_bytes;
      const int8_t* vp[kTileRows];
      for (int i = 0; i < m; ++i) vp[i] = a.values + a.offsets[r + i];
      _tile_zero(0);
      _tile_zero(1);
      // Word w is expanded kExpandAhead words before its tile load reads it.
      int64_t expanded = 0;
      for (; expanded < wpr && expanded < kExpandAhead; ++expanded)
        expand_word(words, vp, m, expanded, ring[expanded % kRingTiles]);
      int64_t w = 0;
      for (; w + 2 <= wpr; w += 2) {
        for (; expanded < wpr && expanded < w + 2 + kExpandAhead; ++expanded)
          expand_word(words, vp, m, expanded, ring[expanded % kRingTiles]);
        _tile_loadd(2, ring[w % kRingTiles], kTileBytes);
        _tile_loadd(4, xc + w * kWordBits * kQuadVectors, kTileBytes);
        _tile_dpbsud(0, 2, 4);
        _tile_loadd(3, ring[(w + 1) % kRingTiles], kTileBytes);
        _tile_loadd(5, xc + (w + 1) * kWordBits * kQuadVectors, kTileBytes);
        _tile_dpbsud(1, 3, 5);
      }
      if (w < wpr) {
        _tile_loadd(2, ring[w % kRingTiles], kTileBytes);
        _tile_loadd(4, xc + w * kWordBits * kQuadVectors, kTileBytes);
        _tile_dpbsud(0, 2, 4);
      }
      _tile_stored(0, even, kTileRows * sizeof(int32_t));
      _tile_stored(1, odd, kTileRows * sizeof(int32_t));
      const int nv = static_cast<int>(nvec - v0 < kQuadVectors ? nvec - v0 : kQuadVectors);
      for (int i = 0; i < m; ++i) {
        const uint32_t bias = 128u * static_cast<uint32_t>(row_sums[r + i]);
        for (int v = 0; v < nv; ++v)
          acc[(v0 + v) * acc_vstride + r + i] = static_cast<int32_t>(
              static_cast<uint32_t>(even[i][v]) + static_cast<uint32_t>(odd[i][v]) - bias);
      }
    }
  }
  _tile_release();
}

}  // namespace amx
}  // namespace sparsegemm
