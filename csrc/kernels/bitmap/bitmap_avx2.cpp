// Bitmap kernels compiled for the avx2 level (flags set per file in CMakeLists.txt).
#include <immintrin.h>
#include <cstdint>

#include "kernels/bitmap/bitmap_kernels.h"

namespace sparsegemm {
namespace avx2 {

#include "kernels/simd/simd_avx2.h"
#include "kernels/bitmap/bitmap_expand_avx2.h"
#include "kernels/bitmap/bitmap_kernels.inl"

}  // namespace avx2
}  // namespace sparsegemm
