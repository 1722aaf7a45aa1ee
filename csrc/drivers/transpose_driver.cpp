#include "drivers/transpose_driver.h"

#include <algorithm>
#include <cstring>

#include "core/isa.h"
#include "core/parallel.h"
#include "kernels/activation/activation_kernels.h"
#include "kernels/transpose/transpose_kernels.h"

namespace sparsegemm {

namespace {
// Tiles of 8 source rows x 64 columns, or of the tile kernel's block rows
// where those are more (16 with AVX-512). With 8x8 blocks, which read half
// cache lines, a source row stride that is a multiple of 4 KiB (e.g. 4096
// floats) maps every row of a tile to one L1 set, so more than 8 rows (the L1
// associativity) evicted each other's lines before their second half was read;
// a 16x16 block reads whole lines once.
constexpr int64_t kMinRowTile = 8, kMaxRowTile = 16, kColTile = 64;

int64_t row_tile(int64_t block_size) { return std::clamp(block_size, kMinRowTile, kMaxRowTile); }

// dst[j * dst_ld + i] = block[j * Width + i] for i < Width, j < count.
template <int64_t Width, typename T>
void copy_rows(const T* block, int64_t count, T* dst, int64_t dst_ld) {
  for (int64_t j = 0; j < count; ++j)
    std::memcpy(dst + j * dst_ld, block + j * Width, sizeof(T) * Width);
}

// The blocks of a rows x cols transpose in tiles of row_tile source rows, split
// across threads: copy_block(i0, i1, j0, j1, dst_block) copies source rows
// [i0, i1) x columns [j0, j1) to dst_block = dst + j0 * dst_ld + i0.
template <typename T, typename CopyBlock>
void transpose_blocks(int64_t rows, int64_t cols, int64_t row_tile, T* dst, int64_t dst_ld,
                      int num_threads, const CopyBlock& copy_block) {
  const int64_t row_tiles = (rows + row_tile - 1) / row_tile;
  const int threads = threads_for_pass(num_threads, rows * cols);
  parallel_ranges(threads, row_tiles, [&](int64_t tile_begin, int64_t tile_end) {
    for (int64_t i0 = tile_begin * row_tile; i0 < std::min(rows, tile_end * row_tile);
         i0 += row_tile) {
      const int64_t i1 = std::min(rows, i0 + row_tile);
      for (int64_t j0 = 0; j0 < cols; j0 += kColTile)
        copy_block(i0, i1, j0, std::min(cols, j0 + kColTile), dst + j0 * dst_ld + i0);
    }
  });
}

}  // namespace

template <typename T>
void transpose(const T* src, int64_t rows, int64_t cols, int64_t src_rstride, int64_t src_cstride,
               T* dst, int64_t dst_ld, int num_threads) {
  const auto& kernels = transpose_kernels<T>(active_isa());
  const auto tile = kernels.tile;
  transpose_blocks(rows, cols, row_tile(kernels.block_size), dst, dst_ld, num_threads,
                   [&](int64_t i0, int64_t i1, int64_t j0, int64_t j1, T* dst_block) {
                     if (src_cstride == 1) {
                       tile(src + i0 * src_rstride + j0, i1 - i0, j1 - j0, src_rstride, dst_block,
                            dst_ld);
                       return;
                     }
                     for (int64_t j = j0; j < j1; ++j)
                       for (int64_t i = i0; i < i1; ++i)
                         dst[j * dst_ld + i] = src[i * src_rstride + j * src_cstride];
                   });
}

template <typename T>
void transpose_activated(const T* src, int64_t rows, int64_t cols, int64_t src_ld, T* dst,
                         int64_t dst_ld, int num_threads, Activation act) {
  if (act == Activation::None) {
    transpose(src, rows, cols, src_ld, int64_t{1}, dst, dst_ld, num_threads);
    return;
  }
  // Each block is transposed into a small contiguous buffer, activated there and
  // then copied out. Activated in dst (64 rows of 8 at y's row stride, which can
  // map onto two L1 sets) or in src (which dirties every line of a src that is
  // otherwise only read), it measured slower than a separate pass over y.
  const auto& kernels = transpose_kernels<T>(active_isa());
  const auto tile = kernels.tile;
  const auto activate = activation_kernels<T>(active_isa()).apply;
  const int64_t rows_per_tile = row_tile(kernels.block_size);
  transpose_blocks(rows, cols, rows_per_tile, dst, dst_ld, num_threads,
                   [&](int64_t i0, int64_t i1, int64_t j0, int64_t j1, T* dst_block) {
                     alignas(64) T block[kColTile * kMaxRowTile];
                     const int64_t width = i1 - i0;
                     tile(src + i0 * src_ld + j0, width, j1 - j0, src_ld, block, rows_per_tile);
                     activate(block, j1 - j0, width, rows_per_tile, act);
                     // A fixed-size copy compiles to vector moves.
                     if (width == kMinRowTile && rows_per_tile == kMinRowTile)
                       return copy_rows<kMinRowTile>(block, j1 - j0, dst_block, dst_ld);
                     if (width == kMaxRowTile && rows_per_tile == kMaxRowTile)
                       return copy_rows<kMaxRowTile>(block, j1 - j0, dst_block, dst_ld);
                     for (int64_t j = 0; j < j1 - j0; ++j)
                       std::copy(block + j * rows_per_tile, block + j * rows_per_tile + width,
                                 dst_block + j * dst_ld);
                   });
}

template <typename T>
void pack_panel(const T* src, int64_t rows, int64_t cols, int64_t src_rstride, int64_t panel_rows,
                int64_t panel_ld, T* dst) {
  transpose(src, rows, cols, src_rstride, int64_t{1}, dst, panel_ld, 1);
  if (rows < panel_rows)
    for (int64_t k = 0; k < cols; ++k)
      std::fill(dst + k * panel_ld + rows, dst + k * panel_ld + panel_rows, T(0));
}

template void transpose<float>(const float*, int64_t, int64_t, int64_t, int64_t, float*, int64_t,
                               int);
template void transpose<double>(const double*, int64_t, int64_t, int64_t, int64_t, double*, int64_t,
                                int);
template void transpose_activated<float>(const float*, int64_t, int64_t, int64_t, float*, int64_t,
                                         int, Activation);
template void transpose_activated<double>(const double*, int64_t, int64_t, int64_t, double*,
                                          int64_t, int, Activation);

template void pack_panel<float>(const float*, int64_t, int64_t, int64_t, int64_t, int64_t, float*);
template void pack_panel<double>(const double*, int64_t, int64_t, int64_t, int64_t, int64_t,
                                 double*);

}  // namespace sparsegemm
