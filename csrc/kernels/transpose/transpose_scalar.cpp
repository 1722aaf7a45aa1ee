// Transpose tiles for the scalar level: one element at a time.
#include <cstdint>
#include <type_traits>

#include "kernels/transpose/transpose_kernels.h"

namespace sparsegemm {
namespace scalar {

template <typename T>
struct Block {
  static constexpr int64_t kSize = 1;
  using Next = void;
  static void transpose(const T* src, int64_t, T* dst, int64_t) { *dst = *src; }
};

template <typename T>
using TileBlock = Block<T>;

#include "kernels/transpose/transpose_kernels.inl"

}  // namespace scalar
}  // namespace sparsegemm
