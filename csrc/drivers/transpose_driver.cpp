#include "drivers/transpose_driver.h"

#include <algorithm>
#include <cstring>

#include "core/isa.h"
#include "core/parallel.h"
#include "kernels/activation/activation_kernels.h"
#include "kernels/transpose/transpose_kernels.h"

namespace sparsegemm {

namespace {
// Tiles of 8 source rows x 64 columns: when the source row stride is a
// multiple of 4 KiB (e.g. 4096 floats), every row of a tile falls in the
// same L1 set, so more than 8 rows (the L1 associativity) would evict each
// other on every element.
constexpr int64_t kRowTile = 8, kColTile = 64;

// The blocks of a rows x cols transpose, split across threads:
// copy_block(i0, i1, j0, j1, dst_block) copies source rows [i0, i1) x columns
// [j0, j1) to dst_block = dst + j0 * dst_ld + i0.
template <typename T, typename CopyBlock>
void transpose_blocks(int64_t rows, int64_t cols, T* dst, int64_t dst_ld, int num_threads,
                      const CopyBlock& copy_block) {
  const int64_t row_tiles = (rows + kRowTile - 1) / kRowTile;
  const int threads = threads_for_pass(num_threads, rows * cols);
  parallel_ranges(threads, row_tiles, [&](int64_t tile_begin, int64_t tile_end) {
    for (int64_t i0 = tile_begin * kRowTile; i0 < std::min(rows, tile_end * kRowTile);
         i0 += kRowTile) {
      const int64_t i1 = std::min(rows, i0 + kRowTile);
      for (int64_t j0 = 0; j0 < cols; j0 += kColTile)
        copy_block(i0, i1, j0, std::min(cols, j0 + kColTile), dst + j0 * dst_ld + i0);
    }
  });
}

}  // namespace

template <typename T>
void transpose(const T* src, int64_t rows, int64_t cols, int64_t src_rstride, int64_t src_cstride,
               T* dst, int64_t dst_ld, int num_threads) {
  const auto tile = transpose_kernels<T>(active_isa()).tile;
  transpose_blocks(rows, cols, dst, dst_ld, num_threads,
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
  const auto tile = transpose_kernels<T>(active_isa()).tile;
  const auto activate = activation_kernels<T>(active_isa()).apply;
  transpose_blocks(
      rows, cols, dst, dst_ld, num_threads,
      [&](int64_t i0, int64_t i1, int64_t j0, int64_t j1, T* dst_block) {
        alignas(64) T block[kColTile * kRowTile];
        const int64_t width = i1 - i0;
        tile(src + i0 * src_ld + j0, width, j1 - j0, src_ld, block, kRowTile);
        activate(block, j1 - j0, width, kRowTile, act);
        if (width == kRowTile) {  // a fixed-size copy compiles to vector moves
          for (int64_t j = 0; j < j1 - j0; ++j)
            std::memcpy(dst_block + j * dst_ld, block + j * kRowTile, sizeof(T) * kRowTile);
          return;
        }
        for (int64_t j = 0; j < j1 - j0; ++j)
          std::copy(block + j * kRowTile, block + j * kRowTile + width, dst_block + j * dst_ld);
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
