// Bitmap kernels for AVX-512 CPUs with VBMI2 (flags set per file in
// CMakeLists.txt; bitmap_kernels() hands out their bfloat16 table only when
// use_avx512_extensions()). The float and double tables the shared .inl
// instantiates here are unused: bitmap_avx512.cpp serves those types.
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

// The walk by stored columns (gemv_rows_indexed): each window of a row's
// stored weights (ColumnWindowPlan: up to 16 within 256 columns) gathers its
// entries of x at once from the window's first column, by the weights' offset
// bytes, and its values widen from bfloat16 by a shift. At 90% sparsity a
// 64-column word holds about six weights, which the bit walk decodes with two
// expands whatever their number.
namespace {

// Bytes of a row's offsets and values prefetched ahead. Xeon, cold
// 4096 x 11008 at 90%, 2 threads (standalone loop): 2048 0.64-0.69 ms,
// 1024 0.67-0.68, 4096 0.65-0.71, none 0.84-0.92.
constexpr int64_t kIndexedAhead = 2048;

// 16 bfloat16 values (their bits) as floats: exactly, in the upper halves.
inline __m512 widen(__m256i bits) {
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(bits), 16));
}

// acc + one window's weights times x: the window's weights and offsets start
// at *offsets and *values, which advance past them. Lanes past the window's
// weights are masked: nothing past the row's last weight is read.
inline __m512 window_dot(uint32_t window, const float* x, const uint8_t*& offsets,
                         const uint16_t*& values, __m512 acc) {
  const unsigned weights = window & ColumnWindowPlan::kCountMask;
  const __mmask16 m = _cvtu32_mask16((1u << weights) - 1);
  const __m512i lanes = _mm512_cvtepu8_epi32(_mm_maskz_loadu_epi8(m, offsets));
  const __m256i bits = _mm256_maskz_loadu_epi16(m, values);
  const float* first = x + (window >> ColumnWindowPlan::kCountBits);
  offsets += weights;
  values += weights;
  return _mm512_fmadd_ps(widen(bits),
                         _mm512_mask_i32gather_ps(_mm512_setzero_ps(), m, lanes, first, 4), acc);
}

// row r . x, windows alternating between two accumulators.
inline float row_dot_indexed(const ColumnWindowPlan& plan, const BitmapView<bfloat16_t>& a,
                             int64_t r, const float* x) {
  const uint32_t* windows = plan.windows.data() + plan.row_windows[r];
  const int64_t count = plan.row_windows[r + 1] - plan.row_windows[r];
  const uint8_t* offsets = plan.offsets.data() + a.offsets[r];
  const uint16_t* values = reinterpret_cast<const uint16_t*>(a.values + a.offsets[r]);
  __m512 even = _mm512_setzero_ps(), odd = _mm512_setzero_ps();
  int64_t i = 0;
  for (; i + 2 <= count; i += 2) {
    _mm_prefetch(reinterpret_cast<const char*>(offsets) + kIndexedAhead, _MM_HINT_T0);
    _mm_prefetch(reinterpret_cast<const char*>(values) + kIndexedAhead, _MM_HINT_T0);
    even = window_dot(windows[i], x, offsets, values, even);
    odd = window_dot(windows[i + 1], x, offsets, values, odd);
  }
  if (i < count) even = window_dot(windows[i], x, offsets, values, even);
  return _mm512_reduce_add_ps(_mm512_add_ps(even, odd));
}

}  // namespace

void gemv_rows_indexed(const ColumnWindowPlan& plan, const BitmapView<bfloat16_t>& a,
                       int64_t row_begin, int64_t row_end, const float* x, int64_t x_vstride,
                       int64_t nvec, const float* bias, float* y, int64_t y_vstride,
                       int64_t y_rstride) {
  for (int64_t r = row_begin; r < row_end; ++r) {
    const float b = bias ? bias[r] : 0.0f;
    for (int64_t v = 0; v < nvec; ++v)
      y[v * y_vstride + r * y_rstride] = row_dot_indexed(plan, a, r, x + v * x_vstride) + b;
  }
}

}  // namespace avx512ext
}  // namespace sparsegemm
