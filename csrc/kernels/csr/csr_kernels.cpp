#include "kernels/csr/csr_kernels.h"

namespace sparsegemm {

template <typename T>
const CsrKernels<T>& csr_kernels(Isa isa) {
  switch (isa) {
    case Isa::Avx512:
      return avx512::csr_kernel_table<T>();
    case Isa::Avx2:
      return avx2::csr_kernel_table<T>();
    case Isa::Scalar:
      break;
  }
  return scalar::csr_kernel_table<T>();
}

template const CsrKernels<float>& csr_kernels<float>(Isa);
template const CsrKernels<double>& csr_kernels<double>(Isa);
template const CsrKernels<bfloat16_t>& csr_kernels<bfloat16_t>(Isa);

}  // namespace sparsegemm
