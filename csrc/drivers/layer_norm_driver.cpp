#include "drivers/layer_norm_driver.h"

#include <algorithm>

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
  const int64_t parts = std::min<int64_t>(args.rows, threads);
  parallel_for(threads, parts, [&](int64_t part) {
    rows(args, args.rows * part / parts, args.rows * (part + 1) / parts);
  });
}

template void layer_norm<float>(const LayerNormArgs<float>&, int);
template void layer_norm<double>(const LayerNormArgs<double>&, int);

}  // namespace sparsegemm
