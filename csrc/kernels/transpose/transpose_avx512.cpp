// Transpose tiles compiled for the avx512 level (flags set per file in CMakeLists.txt).
#include <immintrin.h>
#include <cstdint>
#include <type_traits>

#include "kernels/transpose/transpose_kernels.h"

namespace sparsegemm {
namespace avx512 {

#include "kernels/transpose/transpose_avx512_blocks.h"

template <typename T>
using TileBlock = WideBlock<T>;

#include "kernels/transpose/transpose_kernels.inl"

}  // namespace avx512
}  // namespace sparsegemm
