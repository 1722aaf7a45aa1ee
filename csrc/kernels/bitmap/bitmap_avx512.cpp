// Bitmap kernels compiled for the avx512 level (flags set per file in CMakeLists.txt).
#include <immintrin.h>
#include <cstdint>
#include <cstring>
#include <type_traits>

#include "kernels/bitmap/bitmap_kernels.h"

namespace sparsegemm {
namespace avx512 {

#include "kernels/simd/simd_avx512.h"
#include "kernels/bitmap/bitmap_expand_avx512.h"
#include "kernels/bitmap/bitmap_kernels.inl"
#include "kernels/bitmap/bitmap_windows_avx512.h"

void gemv_rows_indexed(const ColumnWindowPlan& plan, const BitmapView<float>& a, int64_t row_begin,
                       int64_t row_end, const float* x, int64_t x_vstride, int64_t nvec,
                       const float* bias, float* y, int64_t y_vstride, int64_t y_rstride) {
  gemv_rows_windows(plan, a, row_begin, row_end, x, x_vstride, nvec, bias, y, y_vstride, y_rstride);
}

}  // namespace avx512
}  // namespace sparsegemm
