// Cache-blocked out-of-place transpose: dst(j, i) = src(i, j).
#pragma once

#include <cstdint>

#include "core/activation.h"

namespace sparsegemm {

// src is rows x cols with element (i, j) at src[i * src_rstride + j * src_cstride];
// dst is cols x rows, C order with row stride dst_ld.
template <typename T>
void transpose(const T* src, int64_t rows, int64_t cols, int64_t src_rstride, int64_t src_cstride,
               T* dst, int64_t dst_ld, int num_threads);

// dst(j, i) = act(src(i, j)) for src rows x cols with row stride src_ld: the
// activation is applied to each block on its way through L1.
template <typename T>
void transpose_activated(const T* src, int64_t rows, int64_t cols, int64_t src_ld, T* dst,
                         int64_t dst_ld, int num_threads, Activation act);

// Packs the transpose of src (rows <= panel_rows x cols, row stride
// src_rstride, columns contiguous) as one panel of the CSR panel kernel: a
// cols x panel_rows block with row stride panel_ld >= panel_rows, so
// dst[k * panel_ld + i] = src[i * src_rstride + k], zero for i in
// [rows, panel_rows). The padding past panel_rows is not written.
// Single-threaded: the drivers call it from their own threads.
template <typename T>
void pack_panel(const T* src, int64_t rows, int64_t cols, int64_t src_rstride, int64_t panel_rows,
                int64_t panel_ld, T* dst);

}  // namespace sparsegemm
