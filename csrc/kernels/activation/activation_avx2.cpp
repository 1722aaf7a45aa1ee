// Activation epilogues compiled for the avx2 level (flags set per file in CMakeLists.txt).
#include <immintrin.h>
#include <cstdint>
#include <cstddef>

#include "kernels/activation/activation_kernels.h"

namespace sparsegemm {
namespace avx2 {

#include "kernels/simd/simd_avx2.h"

// Vec<float> (loads, stores, tail masks, fmadd, add) plus the math the
// activations need.
struct FloatOps : Vec<float> {
  static reg mul(reg a, reg b) { return _mm256_mul_ps(a, b); }
  static reg div(reg a, reg b) { return _mm256_div_ps(a, b); }
  // max/min return the second operand when either is NaN.
  static reg max(reg a, reg b) { return _mm256_max_ps(a, b); }
  static reg min(reg a, reg b) { return _mm256_min_ps(a, b); }
  // if_lt where a < b, else otherwise (also where either is NaN).
  static reg select_lt(reg a, reg b, reg if_lt, reg otherwise) {
    return _mm256_blendv_ps(otherwise, if_lt, _mm256_cmp_ps(a, b, _CMP_LT_OQ));
  }
};

#include "kernels/activation/activation_kernels.inl"

}  // namespace avx2
}  // namespace sparsegemm
