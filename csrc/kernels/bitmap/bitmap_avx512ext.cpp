// Bitmap kernels for AVX-512 CPUs with VBMI2 (flags set per file in
// CMakeLists.txt; bitmap_kernels() hands out their bfloat16 table only when
// use_avx512_extensions()) and their walk of very sparse rows by windows of
// stored weights. The float and double tables the shared .inl instantiates
// here are unused: bitmap_avx512.cpp serves those types.
#include <immintrin.h>
#include <cstdint>
#include <cstring>
#include <type_traits>

#include "kernels/bitmap/bitmap_kernels.h"

namespace sparsegemm {
namespace avx512ext {

#include "kernels/simd/simd_avx512.h"
#include "kernels/bitmap/bitmap_expand_avx512.h"
#include "kernels/bitmap/bitmap_kernels.inl"

template const BitmapKernels<bfloat16_t>& bitmap_kernel_table<bfloat16_t>();

#include "kernels/bitmap/bitmap_windows_avx512.h"

void gemv_rows_indexed(const ColumnWindowPlan& plan, const BitmapView<bfloat16_t>& a,
                       int64_t row_begin, int64_t row_end, const float* x, int64_t x_vstride,
                       int64_t nvec, const float* bias, float* y, int64_t y_vstride,
                       int64_t y_rstride) {
  gemv_rows_windows(plan, a, row_begin, row_end, x, x_vstride, nvec, bias, y, y_vstride, y_rstride);
}

}  // namespace avx512ext
}  // namespace sparsegemm
