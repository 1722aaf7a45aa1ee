// Bitmap kernels compiled for the scalar level (flags set per file in CMakeLists.txt).
#include <cstdint>
#include <cstring>
#include <type_traits>

#include "kernels/bitmap/bitmap_kernels.h"

namespace sparsegemm {
namespace scalar {

#include "kernels/simd/simd_scalar.h"
#include "kernels/bitmap/bitmap_expand_scalar.h"
#include "kernels/bitmap/bitmap_kernels.inl"

// bfloat16 values, float compute (the AVX-512 level reuses the AVX2 table).
template const BitmapKernels<bfloat16_t>& bitmap_kernel_table<bfloat16_t>();

}  // namespace scalar
}  // namespace sparsegemm
