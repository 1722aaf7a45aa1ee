#include "kernels/bitmap/bitmap_kernels.h"

#include <type_traits>

namespace sparsegemm {

template <typename V>
const BitmapKernels<V>& bitmap_kernels(Isa isa) {
  switch (isa) {
    case Isa::Avx512:
      // bfloat16 needs VBMI2's word expand; without it the AVX2 kernels serve.
      if constexpr (std::is_same_v<V, bfloat16_t>) {
        if (!use_avx512_extensions()) return avx2::bitmap_kernel_table<V>();
        static const BitmapKernels<V> indexed = [] {
          BitmapKernels<V> table = avx512ext::bitmap_kernel_table<V>();
          table.gemv_rows_indexed = &avx512ext::gemv_rows_indexed;
          return table;
        }();
        static const BitmapKernels<V> with_bf16_input = [] {
          BitmapKernels<V> table = indexed;
          table.gemv_rows_bf16_input = &avx512bf16::gemv_rows_bf16_input;
          return table;
        }();
        return avx512_bf16_supported() ? with_bf16_input : indexed;
      } else if constexpr (std::is_same_v<V, float>) {
        static const BitmapKernels<V> indexed = [] {
          BitmapKernels<V> table = avx512::bitmap_kernel_table<V>();
          table.gemv_rows_indexed = &avx512::gemv_rows_indexed;
          return table;
        }();
        return indexed;
      } else {
        return avx512::bitmap_kernel_table<V>();
      }
    case Isa::Avx2:
      return avx2::bitmap_kernel_table<V>();
    case Isa::Scalar:
      break;
  }
  return scalar::bitmap_kernel_table<V>();
}

template const BitmapKernels<float>& bitmap_kernels<float>(Isa);
template const BitmapKernels<double>& bitmap_kernels<double>(Isa);
template const BitmapKernels<bfloat16_t>& bitmap_kernels<bfloat16_t>(Isa);

}  // namespace sparsegemm
