// Activation epilogues compiled for the avx512 level (flags set per file in CMakeLists.txt).
#include <immintrin.h>
#include <cstdint>
#include <cstddef>

#include "kernels/activation/activation_kernels.h"

namespace sparsegemm {
namespace avx512 {

#include "kernels/simd/simd_avx512.h"

// Vec<float> (loads, stores, tail masks, fmadd, add) plus the math the
// activations need.
struct FloatOps : Vec<float> {
  static reg mul(reg a, reg b) { return _mm512_mul_ps(a, b); }
  static reg div(reg a, reg b) { return _mm512_div_ps(a, b); }
  // max/min return the second operand when either is NaN.
  static reg max(reg a, reg b) { return _mm512_max_ps(a, b); }
  static reg min(reg a, reg b) { return _mm512_min_ps(a, b); }
  // if_lt where a < b, else otherwise (also where either is NaN).
  static reg select_lt(reg a, reg b, reg if_lt, reg otherwise) {
    return _mm512_mask_blend_ps(_mm512_cmp_ps_mask(a, b, _CMP_LT_OQ), otherwise, if_lt);
  }
};

#include "kernels/activation/activation_kernels.inl"

}  // namespace avx512
}  // namespace sparsegemm
