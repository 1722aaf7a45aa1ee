// Transpose tiles for the scalar level: one element at a time.
#include <cstdint>

#include "kernels/transpose/transpose_kernels.h"

namespace sparsegemm {
namespace scalar {

template <typename T>
struct Block {
  static constexpr int64_t kSize = 1;
  static void transpose(const T* src, int64_t, T* dst, int64_t) { *dst = *src; }
};

#include "kernels/transpose/transpose_kernels.inl"

}  // namespace scalar
}  // namespace sparsegemm
