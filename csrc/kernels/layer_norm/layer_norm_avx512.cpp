// Residual add + LayerNorm compiled for the avx512 level (flags set per file in CMakeLists.txt).
#include <immintrin.h>
#include <cmath>
#include <cstdint>
#include <type_traits>

#include "kernels/layer_norm/layer_norm_kernels.h"

namespace sparsegemm {
namespace avx512 {

#include "kernels/simd/simd_avx512.h"
#include "kernels/layer_norm/layer_norm_kernels.inl"

}  // namespace avx512
}  // namespace sparsegemm
