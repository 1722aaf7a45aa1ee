#include "kernels/conv/conv_kernels.h"

namespace sparsegemm {

template <typename T>
const ConvKernels<T>& conv_kernels(Isa isa) {
  switch (isa) {
    case Isa::Avx512:
      return avx512::conv_kernel_table<T>();
    case Isa::Avx2:
      return avx2::conv_kernel_table<T>();
    case Isa::Scalar:
      break;
  }
  return scalar::conv_kernel_table<T>();
}

template const ConvKernels<float>& conv_kernels<float>(Isa);
template const ConvKernels<double>& conv_kernels<double>(Isa);

}  // namespace sparsegemm
