// Bitmap kernels for AVX-512 CPUs with VBMI2 (flags set per file in
// CMakeLists.txt; bitmap_kernels() hands out their bfloat16 table only when
// use_avx512_extensions()). The float and double tables the shared .inl
// instantiates here are unused: bitmap_avx512.cpp serves those types.
#include <immintrin.h>
#include <cstdint>
#include <cstring>
#include <type_traits>

#include "kernels/bitmap/bitmap_kernels.h"

namespace sparsegemm {
namespace avx512ext {

#include "kernels/simd/simd_avx512.h"
#include "kernels/bitmap/bitmap_expand_avx512.h"
#include "kernels/bitmap/bitmap_kernels.inl"

template const BitmapKernels<bfloat16_t>& bitmap_kernel_table<bfloat16_t>();

}  // namespace avx512ext
}  // namespace sparsegemm
