// Transpose tiles compiled for the avx2 level (flags set per file in CMakeLists.txt).
#include <immintrin.h>
#include <cstdint>
#include <type_traits>

#include "kernels/transpose/transpose_kernels.h"

namespace sparsegemm {
namespace avx2 {

#include "kernels/transpose/transpose_avx2_blocks.h"

template <typename T>
using TileBlock = Block<T>;

#include "kernels/transpose/transpose_kernels.inl"

}  // namespace avx2
}  // namespace sparsegemm
