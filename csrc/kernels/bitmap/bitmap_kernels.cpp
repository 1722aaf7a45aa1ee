#include "kernels/bitmap/bitmap_kernels.h"

namespace sparsegemm {

template <typename T>
const BitmapKernels<T>& bitmap_kernels(Isa isa) {
  switch (isa) {
    case Isa::Avx512:
      return avx512::bitmap_kernel_table<T>();
    case Isa::Avx2:
      return avx2::bitmap_kernel_table<T>();
    case Isa::Scalar:
      break;
  }
  return scalar::bitmap_kernel_table<T>();
}

template const BitmapKernels<float>& bitmap_kernels<float>(Isa);
template const BitmapKernels<double>& bitmap_kernels<double>(Isa);

}  // namespace sparsegemm
