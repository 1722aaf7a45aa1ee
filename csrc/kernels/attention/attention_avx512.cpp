// Attention compiled for the avx512 level (flags set per file in CMakeLists.txt).
#include <immintrin.h>
#include <cstddef>
#include <cstdint>

#include "kernels/attention/attention_kernels.h"
#include "kernels/transpose/transpose_kernels.h"

#define SPARSEGEMM_ATTENTION_INLINE inline __attribute__((always_inline))

namespace sparsegemm {
namespace avx512 {

#include "kernels/simd/simd_avx512.h"

struct AttentionOps : Vec<float> {
  static reg mul(reg a, reg b) { return _mm512_mul_ps(a, b); }
  static reg sub(reg a, reg b) { return _mm512_sub_ps(a, b); }
  // The second operand when either is NaN.
  static reg max(reg a, reg b) { return _mm512_max_ps(a, b); }
  static float reduce_max(reg a) { return _mm512_reduce_max_ps(a); }
  static reg round_nearest(reg a) {
    return _mm512_roundscale_ps(a, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  }
  // a * 2^n for integral n.
  static reg scale_pow2(reg a, reg n) { return _mm512_scalef_ps(a, n); }
  // if_lt where a < b, else otherwise (also where either is NaN).
  static reg select_lt(reg a, reg b, reg if_lt, reg otherwise) {
    return _mm512_mask_blend_ps(_mm512_cmp_ps_mask(a, b, _CMP_LT_OQ), otherwise, if_lt);
  }
};

#include "kernels/attention/attention_kernels.inl"

const AttentionKernels& attention_kernel_table() { return make_attention_kernel_table(); }

}  // namespace avx512
}  // namespace sparsegemm
