// Attention compiled for the avx2 level (flags set per file in CMakeLists.txt).
#include <immintrin.h>
#include <cstddef>
#include <cstdint>

#include "kernels/attention/attention_kernels.h"
#include "kernels/transpose/transpose_kernels.h"

#define SPARSEGEMM_ATTENTION_INLINE inline __attribute__((always_inline))

namespace sparsegemm {
namespace avx2 {

#include "kernels/simd/simd_avx2.h"

struct AttentionOps : Vec<float> {
  static reg mul(reg a, reg b) { return _mm256_mul_ps(a, b); }
  static reg sub(reg a, reg b) { return _mm256_sub_ps(a, b); }
  // The second operand when either is NaN.
  static reg max(reg a, reg b) { return _mm256_max_ps(a, b); }
  static float reduce_max(reg a) {
    __m128 m = _mm_max_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
    m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    m = _mm_max_ss(m, _mm_movehdup_ps(m));
    return _mm_cvtss_f32(m);
  }
  static reg round_nearest(reg a) {
    return _mm256_round_ps(a, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  }
  // a * 2^n for integral n in [-126, 127], through the exponent bits of 2^n.
  static reg scale_pow2(reg a, reg n) {
    const __m256i bits =
        _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
    return _mm256_mul_ps(a, _mm256_castsi256_ps(bits));
  }
  // if_lt where a < b, else otherwise (also where either is NaN).
  static reg select_lt(reg a, reg b, reg if_lt, reg otherwise) {
    return _mm256_blendv_ps(otherwise, if_lt, _mm256_cmp_ps(a, b, _CMP_LT_OQ));
  }
};

#include "kernels/attention/attention_kernels.inl"

const AttentionKernels& attention_kernel_table() { return make_attention_kernel_table(); }

}  // namespace avx2
}  // namespace sparsegemm
