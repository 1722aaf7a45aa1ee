#include "kernels/attention/attention_kernels.h"

namespace sparsegemm {

const AttentionKernels& attention_kernels(Isa isa) {
  switch (isa) {
    case Isa::Avx512:
      return avx512::attention_kernel_table();
    case Isa::Avx2:
      return avx2::attention_kernel_table();
    case Isa::Scalar:
      break;
  }
  return scalar::attention_kernel_table();
}

}  // namespace sparsegemm
