#include "kernels/int8_bitmap/int8_bitmap_kernels.h"

namespace sparsegemm {

const Int8BitmapKernels& int8_bitmap_kernels(Isa isa) {
  switch (isa) {
    case Isa::Avx512: {
      if (!use_avx512_extensions()) return avx512::int8_bitmap_kernel_table();
      static const Int8BitmapKernels with_amx = [] {
        Int8BitmapKernels table = avx512::int8_bitmap_vnni_kernel_table();
        table.small_batch_rows_amx = &amx::small_batch_rows_amx;
        return table;
      }();
      return use_amx() ? with_amx : avx512::int8_bitmap_vnni_kernel_table();
    }
    case Isa::Avx2:
      return avx2::int8_bitmap_kernel_table();
    case Isa::Scalar:
      break;
  }
  return scalar::int8_bitmap_kernel_table();
}

}  // namespace sparsegemm
