// Activation epilogues compiled for the avx2 level (flags set per file in CMakeLists.txt).
#include <immintrin.h>
#include <cstdint>
#include <limits>

#include "kernels/activation/activation_kernels.h"

namespace sparsegemm {
namespace avx2 {

#include "kernels/simd/simd_avx2.h"

// Vec<float> (loads, stores, tail masks, fmadd, add) plus the math the
// activations need.
struct FloatOps : Vec<float> {
  static reg mul(reg a, reg b) { return _mm256_mul_ps(a, b); }
  static reg div(reg a, reg b) { return _mm256_div_ps(a, b); }
  static reg fnmadd(reg a, reg b, reg c) { return _mm256_fnmadd_ps(a, b, c); }
  // max/min return the second operand when either is NaN.
  static reg max(reg a, reg b) { return _mm256_max_ps(a, b); }
  static reg min(reg a, reg b) { return _mm256_min_ps(a, b); }
  static reg round(reg a) {
    return _mm256_round_ps(a, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  }
  // 2^n for integral n in [-126, 127].
  static reg pow2(reg n) {
    const __m256i biased = _mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127));
    return _mm256_castsi256_ps(_mm256_slli_epi32(biased, 23));
  }
  // if_lt where a < b, else otherwise (also where either is NaN).
  static reg select_lt(reg a, reg b, reg if_lt, reg otherwise) {
    return _mm256_blendv_ps(otherwise, if_lt, _mm256_cmp_ps(a, b, _CMP_LT_OQ));
  }
};

#include "kernels/activation/activation_kernels.inl"

}  // namespace avx2
}  // namespace sparsegemm
