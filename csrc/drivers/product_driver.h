// What every sparse format's drivers share: splitting rows by stored entries,
// and the choice between the few-vector kernel and the panel kernel (with the
// packing and transposes around it) for a @ b and x @ w.T.
//
// A format plugs in through a small "product" type with:
//   int64_t rows() const, cols() const;         // logical shape of the sparse operand
//   int64_t stored_entries() const;             // multiply-adds per dense vector
//   int64_t max_few_vectors() const;            // up to this many vectors use few_vectors()
//   bool few_vector_strides_ok(int64_t kstride) const;
//   void few_vectors(const T* x, int64_t x_vstride, int64_t x_kstride, int64_t nvec, const T* bias,
//                    T* y, int64_t y_vstride, int64_t y_rstride, int threads) const;
//   void panel(const T* b, int64_t ldb, int64_t n, const T* bias, T* c, int64_t ldc,
//              int threads) const;   // b with contiguous columns
//   static constexpr bool kConflictFreeStride;  // pack with conflict_free_stride
//   static constexpr bool kTransposedPanel;   // true if it also has:
//   void panel_transposed(const T* b, int64_t ldb, int64_t n, const T* bias, T* ct, int64_t ldct,
//                         int threads) const;   // ct = (a @ b + bias)^T
//   static constexpr bool kPackedPanel;       // true if it also has:
//   int64_t packed_panel_columns() const;     // P, the columns of a packed panel
//   int64_t packed_panel_stride() const;      // row stride of a packed panel, >= P
//   bool prefer_packed_panels(int64_t panels) const;  // pack x^T for this many panels?
//   const int64_t* row_offsets() const;       // stored entries before each row (indptr)
//   auto packed_rows_kernel() const;          // see CsrProduct::packed_rows_kernel
// (see drivers/csr_driver.cpp and drivers/bsr_driver.cpp).
#pragma once

#include <algorithm>
#include <cstdint>
#include <vector>

#include "core/activation.h"
#include "core/parallel.h"
#include "drivers/activation_driver.h"
#include "drivers/transpose_driver.h"
#include "drivers/buffer.h"

namespace sparsegemm::driver {

// Runs kernel(row_begin, row_end) over ranges of [0, rows) balanced by the
// entries that indptr counts, plus row_cost per row.
template <typename Kernel>
void for_row_ranges(const int64_t* indptr, int64_t rows, int threads, int64_t row_cost,
                    const Kernel& kernel) {
  const std::vector<int64_t> bounds = split_rows_by_cost(indptr, rows, threads, row_cost);
  const int64_t parts = static_cast<int64_t>(bounds.size()) - 1;
  parallel_for(threads, parts, [&](int64_t p) { kernel(bounds[p], bounds[p + 1]); });
}

// Row stride for a packed copy of a dense operand with n columns: rounded up
// to whole cache lines, so every row starts on a line and no vector load of
// the panel kernels straddles two lines.
template <typename T>
int64_t padded_stride(int64_t n) {
  constexpr int64_t kLine = 64 / sizeof(T);
  return (n + kLine - 1) / kLine * kLine;
}

// Row stride for a packed copy whose rows the panel kernels read in random
// order: padded_stride plus one line when that is an even number of lines. A
// stride of a power of two times 64 bytes (a batch of 64 or 128 floats) maps
// the part of each row that one panel reads onto a fraction of the cache sets,
// so the panel is evicted long before it outgrows L2; an odd number of lines
// spreads the rows over every set. Measured on Zen 3 (2 threads, 70% and 90%):
// the CSR panel kernel gains 10-27% at 128-256 rows; the BSR and bitmap kernels
// came out mixed, so a product opts in with kConflictFreeStride.
template <typename T>
int64_t conflict_free_stride(int64_t n) {
  constexpr int64_t kLine = 64 / sizeof(T);
  const int64_t stride = padded_stride<T>(n);
  return (stride / kLine) % 2 == 0 ? stride + kLine : stride;
}

template <typename Product, typename T>
int64_t packed_stride(int64_t n) {
  return Product::kConflictFreeStride ? conflict_free_stride<T>(n) : padded_stride<T>(n);
}

template <typename T>
bool cache_line_aligned(const T* p, int64_t ld) {
  return reinterpret_cast<uintptr_t>(p) % 64 == 0 &&
         (ld * static_cast<int64_t>(sizeof(T))) % 64 == 0;
}

// c = a @ b (+ bias). b is a.cols() x n with element (k, j) at b[k * b_rstride + j * b_cstride].
template <typename T, typename Product>
void matmul(const Product& a, const T* b, int64_t b_rstride, int64_t b_cstride, int64_t n,
            const T* bias, T* c, int64_t ldc, int num_threads) {
  const int64_t rows = a.rows(), k = a.cols();
  if (rows == 0 || n == 0) return;
  if (n <= a.max_few_vectors()) {
    // Vector v is column v of b; output (v, r) is c[r, v].
    if (a.few_vector_strides_ok(b_rstride)) {
      a.few_vectors(b, b_cstride, b_rstride, n, bias, c, 1, ldc, num_threads);
    } else {
      ScratchBuffer<T> bt(static_cast<size_t>(k * n));  // b transposed: n x k
      transpose(b, k, n, b_rstride, b_cstride, bt.data(), k, num_threads);
      a.few_vectors(bt.data(), k, 1, n, bias, c, 1, ldc, num_threads);
    }
    return;
  }
  // Packing b costs k * n copies against stored_entries * n multiply-adds:
  // worth it for aligned loads once each row of b is reused a few times, and
  // needed when its columns are not contiguous (e.g. Fortran order).
  const bool reused = a.stored_entries() >= 4 * k;
  // A b with an even number of cache lines per row is read in place all the
  // same: copying it only for the cache sets cost more than it won (measured:
  // the 90% ResNet bottleneck, whose 1x1 convolutions reuse a row of b about 6
  // times, fell from 1.44x to 0.98x over dense).
  if (b_cstride == 1 && (!reused || cache_line_aligned(b, b_rstride))) {
    a.panel(b, b_rstride, n, bias, c, ldc, num_threads);
    return;
  }
  const int64_t ldp = packed_stride<Product, T>(n);
  ScratchBuffer<T> packed(static_cast<size_t>(k * ldp));
  // packed(k, j) = b(k, j): the transpose of the n x k matrix b^T.
  transpose(b, n, k, b_cstride, b_rstride, packed.data(), ldp, num_threads);
  a.panel(packed.data(), ldp, n, bias, c, ldc, num_threads);
}

// The rows of w that part `part` of split_rows_by_cost's bounds runs, in tiles
// of tile_rows: tile(r0, r1) for each.
template <typename Tile>
void for_row_tiles(const std::vector<int64_t>& bounds, int64_t part, int64_t tile_rows,
                   const Tile& tile) {
  for (int64_t r0 = bounds[part]; r0 < bounds[part + 1]; r0 += tile_rows)
    tile(r0, std::min(r0 + tile_rows, bounds[part + 1]));
}

// Rows of c per tile of run_packed_panels: a tile of this many bytes stays in
// L1 or L2 between the kernel that writes it and the caller that takes it.
// Tiles of 4 KiB to the whole row range measured within noise of each other
// (Zen 3, 2 threads, in-process A/B over MiniLM and BERT shapes).
constexpr int64_t kFusedTileBytes = 32 * 1024;

// c = w @ b (+ bias) over packed panels of b that the caller fills and takes
// back one at a time, so neither b nor c makes a round trip through memory in
// another layout (x^T and y^T of a linear layer, the im2col matrix of a
// convolution): each part packs one panel into its own scratch with
// pack(p, packed, panel_ld), which returns the panel's real columns (the rest
// zero), runs the kernel over tiles of c and hands each tile, still in cache,
// to emit(p, columns, r0, r1, tile, tile_ld) for c's rows [r0, r1). Parts are
// panels times ranges of w's rows, so that fewer panels than threads still
// keep every thread busy. pack and emit must not throw.
template <typename T, typename Product, typename Pack, typename Emit>
void run_packed_panels(const Product& w, int64_t panels, const T* bias, int num_threads,
                       const Pack& pack, const Emit& emit) {
  const int64_t out = w.rows(), in = w.cols();
  const int64_t panel = w.packed_panel_columns(), panel_ld = w.packed_panel_stride();
  const int threads = threads_for_work(num_threads, (w.stored_entries() + out) * panels * panel);
  const int64_t panel_groups = std::min<int64_t>(panels, threads);
  const std::vector<int64_t> row_bounds =
      split_rows_by_cost(w.row_offsets(), out, std::max<int64_t>(1, threads / panel_groups), 2);
  const int64_t row_parts = static_cast<int64_t>(row_bounds.size()) - 1;
  const int64_t parts = panel_groups * row_parts;
  const int64_t tile_rows =
      std::max<int64_t>(1, kFusedTileBytes / (panel * static_cast<int64_t>(sizeof(T))));
  // Both sizes are whole cache lines (panel_ld and panel are), so every part's
  // slice stays 64-byte aligned.
  const int64_t part_size = in * panel_ld + tile_rows * panel;
  ScratchBuffer<T> scratch(static_cast<size_t>(parts * part_size));
  const auto rows_kernel = w.packed_rows_kernel();
  parallel_for(threads, parts, [&](int64_t part) {
    const int64_t group = part / row_parts, row_part = part % row_parts;
    T* packed = scratch.data() + part * part_size;
    T* tile = packed + in * panel_ld;
    for (int64_t p = panels * group / panel_groups; p < panels * (group + 1) / panel_groups; ++p) {
      const int64_t columns = pack(p, packed, panel_ld);
      for_row_tiles(row_bounds, row_part, tile_rows, [&](int64_t r0, int64_t r1) {
        rows_kernel(packed, panel_ld, r0, r1, bias, tile, panel);
        emit(p, columns, r0, r1, static_cast<const T*>(tile), panel);
      });
    }
  });
}

// y = act(x @ w.T + bias) through run_packed_panels: panels of x^T in, tiles
// of y^T transposed into y. Against packing all of x^T and transposing all of
// y^T (each one parallel pass over memory), on Zen 3 with 2 threads, in-process
// A/B: 1.25-1.47x faster at BERT-base shapes with 128 rows at 90% sparsity,
// 1.04-1.13x at 70%, and 1.02-1.17x at MiniLM shapes with 1024 rows;
// 4096x4096 at 64-256 rows within 2%. It also made slicing a large batch into
// slabs (which had bounded the two round trips' footprint) unnecessary:
// 1.01-1.09x faster without.
template <typename T, typename Product>
void linear_fused_panels(const Product& w, const T* x, int64_t ldx, int64_t batch, const T* bias,
                         T* y, int64_t ldy, int num_threads, Activation act) {
  const int64_t in = w.cols(), panel = w.packed_panel_columns();
  run_packed_panels<T>(
      w, (batch + panel - 1) / panel, bias, num_threads,
      [&](int64_t p, T* packed, int64_t panel_ld) {
        const int64_t first = p * panel, count = std::min(panel, batch - first);
        pack_panel(x + first * ldx, count, in, ldx, panel, panel_ld, packed);
        return count;
      },
      [&](int64_t p, int64_t count, int64_t r0, int64_t r1, const T* tile, int64_t tile_ld) {
        transpose_activated(tile, r1 - r0, count, tile_ld, y + p * panel * ldy + r0, ldy, 1, act);
      });
}

// y = act(x @ w.T + bias) over the panel kernels, through x^T and y^T in memory.
template <typename T, typename Product>
void linear_panels(const Product& w, const T* x, int64_t ldx, int64_t batch, const T* bias, T* y,
                   int64_t ldy, int num_threads, Activation act) {
  const int64_t out = w.rows(), in = w.cols();
  // y^T = w @ x^T: the panel kernels want the batch dimension contiguous.
  const int64_t ldp = packed_stride<Product, T>(batch);
  ScratchBuffer<T> xt(static_cast<size_t>(in * ldp));
  transpose(x, batch, in, ldx, 1, xt.data(), ldp, num_threads);
  if constexpr (Product::kTransposedPanel) {
    w.panel_transposed(xt.data(), ldp, batch, bias, y, ldy, num_threads);
    apply_activation(y, batch, out, ldy, act, num_threads);
    return;
  }
  ScratchBuffer<T> yt(static_cast<size_t>(out * ldp));
  w.panel(xt.data(), ldp, batch, bias, yt.data(), ldp, num_threads);
  transpose_activated(yt.data(), out, batch, ldp, y, ldy, num_threads, act);
}

// The nn.Linear product y = act(x @ w.T (+ bias)); x is batch x w.cols() with row
// stride ldx (rows contiguous), y is batch x w.rows() with row stride ldy. The
// activation rides on the transpose that writes y where there is one, and is a
// pass over y (small, or just written) otherwise.
template <typename T, typename Product>
void linear(const Product& w, const T* x, int64_t ldx, int64_t batch, const T* bias, T* y,
            int64_t ldy, int num_threads, Activation act) {
  const int64_t out = w.rows();
  if (batch == 0 || out == 0) return;
  if (batch <= w.max_few_vectors()) {
    // Rows of x are the vectors; y(v, r) = y[v, r].
    w.few_vectors(x, ldx, 1, batch, bias, y, ldy, 1, num_threads);
    apply_activation(y, batch, out, ldy, act, num_threads);
    return;
  }
  if constexpr (Product::kPackedPanel) {
    const int64_t panel = w.packed_panel_columns();
    if (w.prefer_packed_panels((batch + panel - 1) / panel)) {
      linear_fused_panels(w, x, ldx, batch, bias, y, ldy, num_threads, act);
      return;
    }
  }
  linear_panels(w, x, ldx, batch, bias, y, ldy, num_threads, act);
}

// linear_pair with fewer panels than threads (a batch of one panel on two
// threads): the whole team takes one panel at a time. Each thread packs the
// panel's x^T into its own scratch, runs its share of w1's rows into the
// panel's hidden activations h, shared by the team, and activates them; once
// all of h is written, it runs its share of w2's rows, transposing each tile
// into y. Against two linear calls (what such a batch ran before) this saves
// h's round trip through memory in both layouts: an MLP of four sparse
// 1024-4096-4096-4096-1024 layers at batch 64, 2 threads, ran 1.07-1.11x
// faster at 90% sparsity and 1.0-1.1x at 70% (Xeon, alternating builds).
// Packing a slice of one shared panel per thread measured the same.
template <typename T, typename First, typename Second>
void linear_pair_team(const First& w1, const Second& w2, const T* x, int64_t ldx, int64_t batch,
                      const T* bias1, Activation act, const T* bias2, T* y, int64_t ldy,
                      int threads) {
  const int64_t in = w1.cols(), hidden = w1.rows(), out = w2.rows();
  const int64_t p1 = w1.packed_panel_columns(), p2 = w2.packed_panel_columns();
  const int64_t panel = std::max(p1, p2);
  const int64_t panels = (batch + panel - 1) / panel;
  const std::vector<int64_t> bounds1 = split_rows_by_cost(w1.row_offsets(), hidden, threads, 2);
  const std::vector<int64_t> bounds2 = split_rows_by_cost(w2.row_offsets(), out, threads, 2);
  const int64_t parts1 = static_cast<int64_t>(bounds1.size()) - 1;
  const int64_t parts2 = static_cast<int64_t>(bounds2.size()) - 1;
  const int64_t tile_rows =
      std::max<int64_t>(1, kFusedTileBytes / (panel * static_cast<int64_t>(sizeof(T))));
  // h, then each thread's packed panel and tile: whole cache lines each.
  const int64_t part_size = in * panel + tile_rows * panel;
  ScratchBuffer<T> scratch(static_cast<size_t>(hidden * panel + threads * part_size));
  T* h = scratch.data();
  const auto first_rows = w1.packed_rows_kernel();
  const auto second_rows = w2.packed_rows_kernel();
  parallel_team(threads, [&](int thread, int team) {
    T* packed = h + hidden * panel + thread * part_size;
    T* tile = packed + in * panel;
    for (int64_t p = 0; p < panels; ++p) {
      const int64_t first = p * panel, count = std::min(panel, batch - first);
      pack_panel(x + first * ldx, count, in, ldx, panel, panel, packed);
      if (p > 0) team_barrier();  // the team is done reading the previous panel's h
      for (int64_t part = thread; part < parts1; part += team) {
        const int64_t r0 = bounds1[part], r1 = bounds1[part + 1];
        for (int64_t s = 0; s < panel; s += p1)
          first_rows(packed + s, panel, r0, r1, bias1, h + r0 * panel + s, panel);
        apply_activation(h + r0 * panel, r1 - r0, panel, panel, act, 1);
      }
      team_barrier();  // all of h is written
      for (int64_t part = thread; part < parts2; part += team)
        for_row_tiles(bounds2, part, tile_rows, [&](int64_t r0, int64_t r1) {
          for (int64_t s = 0; s < panel; s += p2)
            second_rows(h + s, panel, r0, r1, bias2, tile + s, panel);
          transpose_activated(static_cast<const T*>(tile), r1 - r0, count, panel,
                              y + first * ldy + r0, ldy, 1, Activation::None);
        });
    }
  });
}

// y = act(x @ w1.T + bias1) @ w2.T + bias2 (a transformer's feed-forward block)
// with the hidden activations never leaving the cache: each thread takes
// panels of x's rows, packs the panel's x^T, runs w1 over all of its hidden
// rows into h (hidden x panel), applies act there, runs w2 over h tile by
// tile and transposes each tile into y. Against two linear calls this saves
// the round trip of the hidden activations through memory in both layouts
// (y^T to y after w1, x to x^T before w2), the largest of the block's
// activations. It needs at least as many panels as threads; with fewer (a
// short batch), or panels whose widths do not divide each other, it makes the
// two linear calls. Both products must be packed-panel products.
template <typename T, typename First, typename Second>
void linear_pair(const First& w1, const Second& w2, const T* x, int64_t ldx, int64_t batch,
                 const T* bias1, Activation act, const T* bias2, T* y, int64_t ldy,
                 int num_threads) {
  const int64_t in = w1.cols(), hidden = w1.rows(), out = w2.rows();
  if (batch == 0 || out == 0) return;
  const int64_t p1 = w1.packed_panel_columns(), p2 = w2.packed_panel_columns();
  const int64_t panel = std::max(p1, p2);
  const int64_t panels = (batch + panel - 1) / panel;
  const int64_t entries = w1.stored_entries() + w2.stored_entries() + hidden + out;
  const int threads = threads_for_work(num_threads, entries * batch);
  const bool fusable = hidden > 0 && batch > std::max(w1.max_few_vectors(), w2.max_few_vectors()) &&
                       panel % p1 == 0 && panel % p2 == 0;
  if (fusable && panels < threads) {
    linear_pair_team(w1, w2, x, ldx, batch, bias1, act, bias2, y, ldy, threads);
    return;
  }
  if (!fusable) {
    ScratchBuffer<T> h(static_cast<size_t>(batch * std::max<int64_t>(hidden, 1)));
    linear(w1, x, ldx, batch, bias1, h.data(), hidden, num_threads, act);
    linear(w2, h.data(), hidden, batch, bias2, y, ldy, num_threads, Activation::None);
    return;
  }
  const int64_t tile_rows =
      std::max<int64_t>(1, kFusedTileBytes / (panel * static_cast<int64_t>(sizeof(T))));
  const int64_t part_size = (in + hidden + tile_rows) * panel;  // whole cache lines
  ScratchBuffer<T> scratch(static_cast<size_t>(threads * part_size));
  const auto first_rows = w1.packed_rows_kernel();
  const auto second_rows = w2.packed_rows_kernel();
  parallel_for(threads, threads, [&](int64_t part) {
    T* packed = scratch.data() + part * part_size;
    T* h = packed + in * panel;
    T* tile = h + hidden * panel;
    for (int64_t p = panels * part / threads; p < panels * (part + 1) / threads; ++p) {
      const int64_t first = p * panel, count = std::min(panel, batch - first);
      pack_panel(x + first * ldx, count, in, ldx, panel, panel, packed);
      for (int64_t s = 0; s < panel; s += p1)
        first_rows(packed + s, panel, 0, hidden, bias1, h + s, panel);
      apply_activation(h, hidden, panel, panel, act, 1);
      for (int64_t r0 = 0; r0 < out; r0 += tile_rows) {
        const int64_t r1 = std::min(r0 + tile_rows, out);
        for (int64_t s = 0; s < panel; s += p2)
          second_rows(h + s, panel, r0, r1, bias2, tile + s, panel);
        transpose_activated(static_cast<const T*>(tile), r1 - r0, count, panel,
                            y + first * ldy + r0, ldy, 1, Activation::None);
      }
    }
  });
}

}  // namespace sparsegemm::driver
