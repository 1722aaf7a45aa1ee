// Residual add + LayerNorm over rows: the per-ISA function table and how to get it.
//
// A post-norm transformer block ends in LayerNorm(y + residual), where y is the
// output projection's result. torch runs that as two passes over memory (the
// add, then the norm). Here one pass per row adds, and the row, a few KiB,
// stays in L1 for the mean, the variance (two-pass, so no cancellation) and the
// normalisation.
#pragma once

#include <cstdint>

#include "core/isa.h"

namespace sparsegemm {

// out[i, :] = (s - mean(s)) / sqrt(var(s) + eps) * gamma + beta for
// s = x[i, :] + residual[i, :], var the biased variance (as torch's LayerNorm).
// Rows are strided, each row contiguous. residual, gamma and beta may be null
// (no residual, gamma 1, beta 0). out's row may be x's or residual's row (same
// address); no other overlap.
template <typename T>
struct LayerNormArgs {
  const T* x = nullptr;
  int64_t x_row_stride = 0;
  const T* residual = nullptr;
  int64_t residual_row_stride = 0;
  const T* gamma = nullptr;
  const T* beta = nullptr;
  T* out = nullptr;
  int64_t out_row_stride = 0;
  int64_t rows = 0;
  int64_t cols = 0;
  T eps = T(0);
};

template <typename T>
struct LayerNormKernels {
  // Rows [row_begin, row_end) of args.
  void (*rows)(const LayerNormArgs<T>& args, int64_t row_begin, int64_t row_end);
};

// The kernels for one ISA. The caller must check isa_supported(isa).
template <typename T>
const LayerNormKernels<T>& layer_norm_kernels(Isa isa);

namespace scalar {
template <typename T>
const LayerNormKernels<T>& layer_norm_kernel_table();
}
namespace avx2 {
template <typename T>
const LayerNormKernels<T>& layer_norm_kernel_table();
}
namespace avx512 {
template <typename T>
const LayerNormKernels<T>& layer_norm_kernel_table();
}

}  // namespace sparsegemm
