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

}  // namespace avx512
}  // namespace sparsegemm
