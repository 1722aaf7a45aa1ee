// The activation epilogue as a pass of its own over a dense output, for the
// products whose last write cannot apply it (see driver::linear).
#pragma once

#include <cstdint>

#include "core/activation.h"

namespace sparsegemm {

// y[i * ld + j] = act(y[i * ld + j]) for i < rows, j < cols, on up to num_threads threads.
template <typename T>
void apply_activation(T* y, int64_t rows, int64_t cols, int64_t ld, Activation act,
                      int num_threads);

}  // namespace sparsegemm
