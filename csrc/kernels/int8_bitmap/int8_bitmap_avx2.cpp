// Int8 bitmap kernels compiled for the avx2 level (flags set per file in CMakeLists.txt).
#include <immintrin.h>
#include <cstdint>

#include "kernels/int8_bitmap/int8_bitmap_kernels.h"

namespace sparsegemm {
namespace avx2 {

#include "kernels/int8_bitmap/int8_expand_avx2.h"
#include "kernels/int8_bitmap/int8_bitmap_kernels.inl"

}  // namespace avx2
}  // namespace sparsegemm
