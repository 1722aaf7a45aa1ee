// Int8 bitmap kernels compiled for the avx512 level (flags set per file in CMakeLists.txt).
// These are the AVX2 expander and kernels (compiled with the AVX-512 flags,
// which changes nothing in their results), for AVX-512 CPUs without VBMI2 and
// VNNI; int8_bitmap_avx512vnni.cpp serves the others.
#include <immintrin.h>
#include <cstdint>

#include "kernels/int8_bitmap/int8_bitmap_kernels.h"

namespace sparsegemm {
namespace avx512 {

#include "kernels/int8_bitmap/int8_expand_avx2.h"
#include "kernels/int8_bitmap/int8_bitmap_kernels.inl"

}  // namespace avx512
}  // namespace sparsegemm
