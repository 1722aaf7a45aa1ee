// Residual add + LayerNorm, portable level: the SIMD template over one-lane vectors.
#include <cmath>
#include <cstdint>
#include <type_traits>

#include "kernels/layer_norm/layer_norm_kernels.h"

namespace sparsegemm {
namespace scalar {

#include "kernels/simd/simd_scalar.h"
#include "kernels/layer_norm/layer_norm_kernels.inl"

}  // namespace scalar
}  // namespace sparsegemm
