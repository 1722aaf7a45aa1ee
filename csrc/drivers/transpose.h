// Cache-blocked out-of-place transpose: dst(j, i) = src(i, j).
#pragma once

#include <cstdint>

namespace sparsegemm {

// src is rows x cols with element (i, j) at src[i * src_rstride + j * src_cstride];
// dst is cols x rows, C order with row stride dst_ld.
template <typename T>
void transpose(const T* src, int64_t rows, int64_t cols, int64_t src_rstride, int64_t src_cstride,
               T* dst, int64_t dst_ld, int num_threads);

}  // namespace sparsegemm
