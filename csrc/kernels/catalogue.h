// The kernel catalogue: what this build contains, as plain data.
//
// Kernel families (families.inc), the ISA levels each is compiled for, the
// BSR block shapes with specialised kernels (bsr/bsr_block_shapes.inc) and
// the format limits. The bindings expose it as _core.kernel_catalogue(), and
// the planner's candidates, the kernel tests and the benchmarks read it there,
// so none of them keeps a hand-written copy.
#pragma once

#include <cstdint>
#include <vector>

#include "core/isa.h"

namespace sparsegemm {

struct KernelFamily {
  const char* name;
  const char* description;
};

struct BlockShape {
  int rows;
  int cols;
};

struct KernelCatalogue {
  std::vector<KernelFamily> families;
  std::vector<Isa> compiled_isas;  // every family has one file per level
  std::vector<BlockShape> bsr_block_shapes;
  int max_block_edge;          // BSR block edges are in [1, max_block_edge]
  int64_t max_compact_cols;    // CSR stores 16-bit column indices up to this
  int64_t max_dimension;       // rows and columns of any format
  int64_t gather_max_vectors;  // CSR few-vector kernels up to this many vectors
};

const KernelCatalogue& kernel_catalogue();

}  // namespace sparsegemm
