// Int8 bitmap kernels compiled for the avx512 level (flags set per file in CMakeLists.txt).
// No AVX-512 code yet: this level runs the AVX2 expander and kernels (compiled
// with the AVX-512 flags, which changes nothing in their results). An
// AVX-512/VNNI version (vpexpandb, vpdpwssd) needs a machine that can test it.
#include <immintrin.h>
#include <cstdint>

#include "kernels/int8_bitmap/int8_bitmap_kernels.h"

namespace sparsegemm {
namespace avx512 {

#include "kernels/int8_bitmap/int8_expand_avx2.h"
#include "kernels/int8_bitmap/int8_bitmap_kernels.inl"

}  // namespace avx512
}  // namespace sparsegemm
