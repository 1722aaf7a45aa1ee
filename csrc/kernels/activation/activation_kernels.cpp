#include "kernels/activation/activation_kernels.h"

namespace sparsegemm {

template <typename T>
const ActivationKernels<T>& activation_kernels(Isa isa) {
  switch (isa) {
    case Isa::Avx512:
      return avx512::activation_kernel_table<T>();
    case Isa::Avx2:
      return avx2::activation_kernel_table<T>();
    case Isa::Scalar:
      break;
  }
  return scalar::activation_kernel_table<T>();
}

template const ActivationKernels<float>& activation_kernels<float>(Isa);
template const ActivationKernels<double>& activation_kernels<double>(Isa);

}  // namespace sparsegemm
