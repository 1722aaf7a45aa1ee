// Residual add + LayerNorm over the rows of a matrix, on up to num_threads threads
// (kernels/layer_norm for the method).
#pragma once

#include "kernels/layer_norm/layer_norm_kernels.h"

namespace sparsegemm {

template <typename T>
void layer_norm(const LayerNormArgs<T>& args, int num_threads);

}  // namespace sparsegemm
