#include "kernels/catalogue.h"

#include "core/bsr_matrix.h"
#include "core/csr_matrix.h"
#include "kernels/csr/csr_kernels.h"

namespace sparsegemm {

const KernelCatalogue& kernel_catalogue() {
  static const KernelCatalogue catalogue{
      {
#define SPARSEGEMM_KERNEL_FAMILY(NAME, WHAT) KernelFamily{#NAME, WHAT},
#include "kernels/families.inc"
#undef SPARSEGEMM_KERNEL_FAMILY
      },
      {Isa::Scalar, Isa::Avx2, Isa::Avx512},
      {
#define SPARSEGEMM_BSR_BLOCK_SHAPE(R, C) BlockShape{R, C},
#include "kernels/bsr/bsr_block_shapes.inc"
#undef SPARSEGEMM_BSR_BLOCK_SHAPE
      },
      kMaxBlockEdge,
      kMaxCompactCols,
      kMaxDimension,
      kGatherMaxVectors,
  };
  return catalogue;
}

}  // namespace sparsegemm
