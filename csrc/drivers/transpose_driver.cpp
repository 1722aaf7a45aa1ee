#include "drivers/transpose_driver.h"

#include <algorithm>

#include "core/isa.h"
#include "core/parallel.h"
#include "kernels/activation/activation_kernels.h"
#include "kernels/transpose/transpose_kernels.h"

namespace sparsegemm {

namespace {
// Threads for copying rows x cols elements: one below 64k, where waking
// another costs more than it copies.
int copy_threads(int64_t rows, int64_t cols, int num_threads) {
  return rows * cols < (1 << 16) ? 1 : num_threads;
}
}  // namespace

template <typename T>
void transpose(const T* src, int64_t rows, int64_t cols, int64_t src_rstride, int64_t src_cstride,
               T* dst, int64_t dst_ld, int num_threads, Activation act) {
  // Tiles of 8 source rows x 64 columns: when the source row stride is a
  // multiple of 4 KiB (e.g. 4096 floats), every row of a tile falls in the
  // same L1 set, so more than 8 rows (the L1 associativity) would evict each
  // other on every element.
  constexpr int64_t kRowTile = 8, kColTile = 64;
  const int64_t row_tiles = (rows + kRowTile - 1) / kRowTile;
  const int threads = copy_threads(rows, cols, num_threads);
  const int64_t parts = std::min<int64_t>(row_tiles, threads);
  const auto tile = transpose_kernels<T>(active_isa()).tile;
  const auto activate = activation_kernels<T>(active_isa()).apply;
  parallel_for(threads, parts, [&](int64_t part) {
    const int64_t tile_begin = row_tiles * part / parts, tile_end = row_tiles * (part + 1) / parts;
    for (int64_t i0 = tile_begin * kRowTile; i0 < std::min(rows, tile_end * kRowTile);
         i0 += kRowTile) {
      const int64_t i1 = std::min(rows, i0 + kRowTile);
      for (int64_t j0 = 0; j0 < cols; j0 += kColTile) {
        const int64_t j1 = std::min(cols, j0 + kColTile);
        T* dst_block = dst + j0 * dst_ld + i0;
        if (src_cstride == 1) {
          tile(src + i0 * src_rstride + j0, i1 - i0, j1 - j0, src_rstride, dst_block, dst_ld);
        } else {
          for (int64_t j = j0; j < j1; ++j)
            for (int64_t i = i0; i < i1; ++i)
              dst[j * dst_ld + i] = src[i * src_rstride + j * src_cstride];
        }
        if (act != Activation::None) activate(dst_block, j1 - j0, i1 - i0, dst_ld, act);
      }
    }
  });
}

template <typename T>
void pack_panels(const T* src, int64_t rows, int64_t cols, int64_t src_rstride, int64_t panel_rows,
                 int64_t panel_ld, T* dst, int num_threads) {
  const int64_t panels = (rows + panel_rows - 1) / panel_rows;
  const int threads = copy_threads(rows, cols, num_threads);
  const int64_t parts = std::min<int64_t>(panels, threads);
  parallel_for(threads, parts, [&](int64_t part) {
    for (int64_t p = panels * part / parts; p < panels * (part + 1) / parts; ++p) {
      const int64_t first = p * panel_rows, count = std::min(panel_rows, rows - first);
      T* panel = dst + p * cols * panel_ld;
      transpose(src + first * src_rstride, count, cols, src_rstride, int64_t{1}, panel, panel_ld,
                1);
      if (count < panel_rows)
        for (int64_t k = 0; k < cols; ++k)
          std::fill(panel + k * panel_ld + count, panel + k * panel_ld + panel_rows, T(0));
    }
  });
}

template void transpose<float>(const float*, int64_t, int64_t, int64_t, int64_t, float*, int64_t,
                               int, Activation);
template void transpose<double>(const double*, int64_t, int64_t, int64_t, int64_t, double*, int64_t,
                                int, Activation);

template void pack_panels<float>(const float*, int64_t, int64_t, int64_t, int64_t, int64_t, float*,
                                 int);
template void pack_panels<double>(const double*, int64_t, int64_t, int64_t, int64_t, int64_t,
                                  double*, int);

}  // namespace sparsegemm
