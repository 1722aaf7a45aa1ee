#include "kernels/layer_norm/layer_norm_kernels.h"

namespace sparsegemm {

template <typename T>
const LayerNormKernels<T>& layer_norm_kernels(Isa isa) {
  switch (isa) {
    case Isa::Avx512:
      return avx512::layer_norm_kernel_table<T>();
    case Isa::Avx2:
      return avx2::layer_norm_kernel_table<T>();
    case Isa::Scalar:
      break;
  }
  return scalar::layer_norm_kernel_table<T>();
}

template const LayerNormKernels<float>& layer_norm_kernels<float>(Isa);
template const LayerNormKernels<double>& layer_norm_kernels<double>(Isa);

}  // namespace sparsegemm
