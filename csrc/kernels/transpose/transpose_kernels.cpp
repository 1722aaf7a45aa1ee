#include "kernels/transpose/transpose_kernels.h"

namespace sparsegemm {

template <typename T>
const TransposeKernels<T>& transpose_kernels(Isa isa) {
  switch (isa) {
    case Isa::Avx512:
      return avx512::transpose_kernel_table<T>();
    case Isa::Avx2:
      return avx2::transpose_kernel_table<T>();
    case Isa::Scalar:
      break;
  }
  return scalar::transpose_kernel_table<T>();
}

template const TransposeKernels<float>& transpose_kernels<float>(Isa);
template const TransposeKernels<double>& transpose_kernels<double>(Isa);

}  // namespace sparsegemm
