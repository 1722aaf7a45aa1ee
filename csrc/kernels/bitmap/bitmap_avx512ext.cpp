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

// The walk by stored columns (gemv_rows_indexed): for each 256-column group
// of a row, its stored weights' columns (one byte each, ColumnIndexPlan)
// gather x, 16 at a time, and their values widen from bfloat16 by a shift.
// At 90% sparsity a 64-column word holds about six weights, which the bit
// walk decodes with two expands whatever their number.
namespace {

// Bytes of a row's columns and values prefetched ahead (the int8 walk's).
constexpr int64_t kIndexedAhead = 2048;

// 16 bfloat16 values (their bits) as floats: exactly, in the upper halves.
inline __m512 widen(__m256i bits) {
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(bits), 16));
}

// acc + the n stored weights of one group (columns within it, x from xg)
// times x. Lanes past n are masked: no column past the row's is read.
inline __m512 group_dot(const float* xg, int64_t n, const uint8_t* columns, const uint16_t* values,
                        __m512 acc) {
  int64_t j = 0;
  for (; j + 16 <= n; j += 16) {
    const __m512i lanes =
        _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(columns + j)));
    const __m256i bits = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(values + j));
    acc = _mm512_fmadd_ps(widen(bits), _mm512_i32gather_ps(lanes, xg, 4), acc);
  }
  if (j < n) {
    const __mmask16 m = _cvtu32_mask16((1u << (n - j)) - 1);
    const __m512i lanes = _mm512_cvtepu8_epi32(_mm_maskz_loadu_epi8(m, columns + j));
    const __m256i bits = _mm256_maskz_loadu_epi16(m, values + j);
    acc = _mm512_fmadd_ps(widen(bits),
                          _mm512_mask_i32gather_ps(_mm512_setzero_ps(), m, lanes, xg, 4), acc);
  }
  return acc;
}

// row r . x, groups alternating between two accumulators.
inline float row_dot_indexed(const ColumnIndexPlan& plan, const BitmapView<bfloat16_t>& a,
                             int64_t r, const float* x) {
  constexpr int64_t kGroupCols = ColumnIndexPlan::kGroupCols;
  const int64_t groups = plan.groups_per_row;
  const uint16_t* counts = plan.counts.data() + r * groups;
  const uint8_t* columns = plan.columns.data() + a.offsets[r];
  const uint16_t* values = reinterpret_cast<const uint16_t*>(a.values + a.offsets[r]);
  __m512 even = _mm512_setzero_ps(), odd = _mm512_setzero_ps();
  int64_t g = 0;
  for (; g + 2 <= groups; g += 2) {
    _mm_prefetch(reinterpret_cast<const char*>(columns) + kIndexedAhead, _MM_HINT_T0);
    _mm_prefetch(reinterpret_cast<const char*>(values) + kIndexedAhead, _MM_HINT_T0);
    const float* xg = x + g * kGroupCols;
    even = group_dot(xg, counts[g], columns, values, even);
    columns += counts[g];
    values += counts[g];
    odd = group_dot(xg + kGroupCols, counts[g + 1], columns, values, odd);
    columns += counts[g + 1];
    values += counts[g + 1];
  }
  if (g < groups) even = group_dot(x + g * kGroupCols, counts[g], columns, values, even);
  return _mm512_reduce_add_ps(_mm512_add_ps(even, odd));
}

}  // namespace

void gemv_rows_indexed(const ColumnIndexPlan& plan, const BitmapView<bfloat16_t>& a,
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
