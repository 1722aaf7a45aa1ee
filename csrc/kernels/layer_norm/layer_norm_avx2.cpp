// Residual add + LayerNorm compiled for the avx2 level (flags set per file in CMakeLists.txt).
#include <immintrin.h>
#include <cmath>
#include <cstdint>
#include <type_traits>

#include "kernels/layer_norm/layer_norm_kernels.h"

namespace sparsegemm {
namespace avx2 {

#include "kernels/simd/simd_avx2.h"
#include "kernels/layer_norm/layer_norm_kernels.inl"

}  // namespace avx2
}  // namespace sparsegemm
