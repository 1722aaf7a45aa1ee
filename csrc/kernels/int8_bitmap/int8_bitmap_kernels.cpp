#include "kernels/int8_bitmap/int8_bitmap_kernels.h"

namespace sparsegemm {

const Int8BitmapKernels& int8_bitmap_kernels(Isa isa) {
  switch (isa) {
    case Isa::Avx512:
      return use_avx512_extensions() ? avx512::int8_bitmap_vnni_kernel_table()
                                     : avx512::int8_bitmap_kernel_table();
    case Isa::Avx2:
      return avx2::int8_bitmap_kernel_table();
    case Isa::Scalar:
      break;
  }
  return scalar::int8_bitmap_kernel_table();
}

}  // namespace sparsegemm
