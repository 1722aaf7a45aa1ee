#include "kernels/bsr/bsr_kernels.h"

namespace sparsegemm {

template <typename T>
const BsrKernels<T>& bsr_kernels(Isa isa) {
  switch (isa) {
    case Isa::Avx512:
      return avx512::bsr_kernel_table<T>();
    case Isa::Avx2:
      return avx2::bsr_kernel_table<T>();
    case Isa::Scalar:
      break;
  }
  return scalar::bsr_kernel_table<T>();
}

template const BsrKernels<float>& bsr_kernels<float>(Isa);
template const BsrKernels<double>& bsr_kernels<double>(Isa);
template const BsrKernels<bfloat16_t>& bsr_kernels<bfloat16_t>(Isa);

}  // namespace sparsegemm
