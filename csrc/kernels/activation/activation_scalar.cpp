// Activation epilogues, portable level: one element at a time with <cmath>.
// The SIMD levels use these for float64 and for the tail of each row.
#include <cmath>
#include <cstdint>

#include "kernels/activation/activation_kernels.h"

namespace sparsegemm {
namespace scalar {

template <typename T>
T activate(T x, Activation act) {
  switch (act) {
    case Activation::Relu:
      return x < T(0) ? T(0) : x;  // NaN stays NaN
    case Activation::Gelu:
      // 0.5 x (1 + erf(x / sqrt 2)) = 0.5 x erfc(-x / sqrt 2), without the
      // cancellation of 1 + erf for negative x.
      return T(0.5) * x * std::erfc(-x * T(0.70710678118654752440));
    case Activation::GeluTanh: {
      // 0.5 x (1 + tanh(u)) = x / (1 + exp(-2u)), u = sqrt(2/pi) (x + 0.044715 x^3).
      const T u = T(0.79788456080286535588) * (x + T(0.044715) * x * x * x);
      return x / (T(1) + std::exp(T(-2) * u));
    }
    case Activation::None:
      break;
  }
  return x;
}

template <typename T>
void apply_activation(T* y, int64_t rows, int64_t cols, int64_t ld, Activation act) {
  if (act == Activation::None) return;
  for (int64_t i = 0; i < rows; ++i)
    for (int64_t j = 0; j < cols; ++j) y[i * ld + j] = activate(y[i * ld + j], act);
}

template <typename T>
const ActivationKernels<T>& activation_kernel_table() {
  static const ActivationKernels<T> table{&apply_activation<T>};
  return table;
}

template float activate<float>(float, Activation);
template double activate<double>(double, Activation);
template void apply_activation<float>(float*, int64_t, int64_t, int64_t, Activation);
template void apply_activation<double>(double*, int64_t, int64_t, int64_t, Activation);
template const ActivationKernels<float>& activation_kernel_table<float>();
template const ActivationKernels<double>& activation_kernel_table<double>();

}  // namespace scalar
}  // namespace sparsegemm
