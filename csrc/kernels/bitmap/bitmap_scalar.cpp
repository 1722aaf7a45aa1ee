// Bitmap kernels compiled for the scalar level (flags set per file in CMakeLists.txt).
#include <cstdint>

#include "kernels/bitmap/bitmap_kernels.h"

namespace sparsegemm {
namespace scalar {

#include "kernels/simd/simd_scalar.h"
#include "kernels/bitmap/bitmap_expand_scalar.h"
#include "kernels/bitmap/bitmap_kernels.inl"

}  // namespace scalar
}  // namespace sparsegemm
