// Activation epilogues: the per-ISA function table and how to get it.
//
// The float32 SIMD levels evaluate both GELU forms with rational fits of their
// CDFs (absolute error below 1.1e-6 for |x| <= 8, relative below 1e-7 beyond);
// float64 and the scalar level use std::erfc and std::exp. ReLU keeps NaN, as
// torch.relu does.
#pragma once

#include <cstdint>

#include "core/activation.h"
#include "core/isa.h"

// The vector math of the activations is inlined into the loops that apply it, so
// several independent evaluations interleave (GCC otherwise calls it per vector).
#define SPARSEGEMM_ALWAYS_INLINE inline __attribute__((always_inline))

namespace sparsegemm {

template <typename T>
struct ActivationKernels {
  // y[i * ld + j] = act(y[i * ld + j]) for i < rows, j < cols.
  void (*apply)(T* y, int64_t rows, int64_t cols, int64_t ld, Activation act);
};

// The kernels for one ISA. The caller must check isa_supported(isa).
template <typename T>
const ActivationKernels<T>& activation_kernels(Isa isa);

namespace scalar {
template <typename T>
const ActivationKernels<T>& activation_kernel_table();
// The portable kernel, which the SIMD levels also run for float64 and row tails.
template <typename T>
void apply_activation(T* y, int64_t rows, int64_t cols, int64_t ld, Activation act);
}  // namespace scalar
namespace avx2 {
template <typename T>
const ActivationKernels<T>& activation_kernel_table();
}
namespace avx512 {
template <typename T>
const ActivationKernels<T>& activation_kernel_table();
}

}  // namespace sparsegemm
