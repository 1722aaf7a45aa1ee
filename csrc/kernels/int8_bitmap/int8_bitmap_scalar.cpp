// Int8 bitmap kernels compiled for the scalar level (flags set per file in CMakeLists.txt).
#include <cstdint>

#include "kernels/int8_bitmap/int8_bitmap_kernels.h"

namespace sparsegemm {
namespace scalar {

#include "kernels/int8_bitmap/int8_expand_scalar.h"
#include "kernels/int8_bitmap/int8_bitmap_kernels.inl"

}  // namespace scalar
}  // namespace sparsegemm
