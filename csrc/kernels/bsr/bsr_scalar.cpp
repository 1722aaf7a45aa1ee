// BSR kernels compiled for the scalar level (flags set per file in CMakeLists.txt).
#include <cstdint>

#include "kernels/bsr/bsr_kernels.h"

namespace sparsegemm {
namespace scalar {

#include "kernels/simd/simd_scalar.h"
#include "kernels/bsr/bsr_kernels.inl"

}  // namespace scalar
}  // namespace sparsegemm
