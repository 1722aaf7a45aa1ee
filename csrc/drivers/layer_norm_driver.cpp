#include "drivers/layer_norm_driver.h"

#include "core/isa.h"
#include "core/parallel.h"

namespace sparsegemm {

template <typename T>
void layer_norm(const LayerNormArgs<T>& args, int num_threads) {
  if (args.rows == 0 || args.cols == 0) return;
  const auto rows = layer_norm_kernels<T>(active_isa()).rows;
  const int64_t elements = args.rows * args.cols;
  // About four passes over each element in cache, a few operations each.
  const int threads = threads_for_work(threads_for_pass(num_threads, elements), 4 * elements);
  parallel_ranges(threads, args.rows, [&](int64_t begin, int64_t end) { rows(args, begin, end); });
}

template void layer_norm<float>(const LayerNormArgs<float>&, int);
template void layer_norm<double>(const LayerNormArgs<double>&, int);

}  // namespace sparsegemm
