#include "drivers/activation_driver.h"

#include "core/isa.h"
#include "core/parallel.h"
#include "kernels/activation/activation_kernels.h"

namespace sparsegemm {

template <typename T>
void apply_activation(T* y, int64_t rows, int64_t cols, int64_t ld, Activation act,
                      int num_threads) {
  if (act == Activation::None || rows == 0 || cols == 0) return;
  const auto apply = activation_kernels<T>(active_isa()).apply;
  const int threads = threads_for_work(threads_for_pass(num_threads, rows * cols), rows * cols);
  parallel_ranges(threads, rows, [&](int64_t begin, int64_t end) {
    apply(y + begin * ld, end - begin, cols, ld, act);
  });
}

template void apply_activation<float>(float*, int64_t, int64_t, int64_t, Activation, int);
template void apply_activation<double>(double*, int64_t, int64_t, int64_t, Activation, int);

}  // namespace sparsegemm
