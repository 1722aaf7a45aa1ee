#include "core/parallel.h"

#include <algorithm>

#ifdef _OPENMP
#include <omp.h>
#endif

namespace sparsegemm {

int default_num_threads() {
#ifdef _OPENMP
  return std::max(1, omp_get_max_threads());
#else
  return 1;
#endif
}

int team_thread_index() {
#ifdef _OPENMP
  return omp_get_thread_num();
#else
  return 0;
#endif
}

int team_size() {
#ifdef _OPENMP
  return omp_get_num_threads();
#else
  return 1;
#endif
}

void team_barrier() {
#pragma omp barrier
}

// Below this many multiply-adds a second thread costs more than it saves.
constexpr int64_t kMinWorkPerThread = 1 << 15;

int threads_for_work(int requested, int64_t work) {
  const int threads = requested > 0 ? requested : default_num_threads();
  const int64_t useful = std::max<int64_t>(1, work / kMinWorkPerThread);
  return static_cast<int>(std::min<int64_t>(threads, useful));
}

const char* openmp_runtime_name() {
#if defined(_OPENMP) && defined(__GNUC__) && !defined(__clang__)
  return "libgomp (GNU OpenMP)";
#elif defined(_OPENMP)
  return "OpenMP";
#else
  return "none (built without OpenMP)";
#endif
}

std::vector<int64_t> split_rows_by_cost(const int64_t* indptr, int64_t rows, int64_t parts,
                                        int64_t row_cost) {
  parts = std::max<int64_t>(1, std::min<int64_t>(parts, std::max<int64_t>(rows, 1)));
  std::vector<int64_t> bounds(parts + 1, rows);
  bounds[0] = 0;
  const auto cost_before = [&](int64_t r) { return indptr[r] + r * row_cost; };
  const int64_t total = cost_before(rows);
  for (int64_t p = 1; p < parts; ++p) {
    const int64_t target = total / parts * p + (total % parts) * p / parts;
    // First row boundary whose cost reaches the target.
    int64_t lo = bounds[p - 1], hi = rows;
    while (lo < hi) {
      const int64_t mid = lo + (hi - lo) / 2;
      if (cost_before(mid) < target)
        lo = mid + 1;
      else
        hi = mid;
    }
    bounds[p] = lo;
  }
  return bounds;
}

}  // namespace sparsegemm
