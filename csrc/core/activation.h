// Elementwise activations a linear product can apply to its output before it
// leaves cache (the epilogue), so a Linear followed by ReLU or GELU is one call.
#pragma once

namespace sparsegemm {

enum class Activation : int {
  None = 0,
  Relu = 1,
  Gelu = 2,      // x * Phi(x), exact (erf) form, torch's approximate="none"
  GeluTanh = 3,  // torch's approximate="tanh"
};

}  // namespace sparsegemm
