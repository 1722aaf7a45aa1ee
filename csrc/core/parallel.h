// The one place OpenMP is used. Every region names its thread count
// (num_threads) instead of relying on a process-wide setting, so we neither
// fight with nor disturb PyTorch's or numpy's own thread pools.
#pragma once

#include <algorithm>
#include <cstdint>
#include <vector>

namespace sparsegemm {

// The thread count used when a caller passes num_threads <= 0.
int default_num_threads();
// Threads worth starting for `work` multiply-adds: at most `requested` (<= 0
// means default_num_threads()), and fewer when each would get too little work
// to pay for waking it.
int threads_for_work(int requested, int64_t work);
// Threads for one pass over `elements` values in memory (a copy, an activation):
// one below 64k elements, where waking another costs more than it does; else
// num_threads.
inline int threads_for_pass(int num_threads, int64_t elements) {
  return elements < (int64_t{1} << 16) ? 1 : num_threads;
}
// Name of the OpenMP runtime this library was built against.
const char* openmp_runtime_name();

// Runs body(part) for part in [0, parts) on up to num_threads threads; one
// part per thread. body must not throw.
template <typename Body>
void parallel_for(int num_threads, int64_t parts, const Body& body) {
  if (num_threads <= 1 || parts <= 1) {
    for (int64_t p = 0; p < parts; ++p) body(p);
    return;
  }
#pragma omp parallel for num_threads(num_threads) schedule(static, 1)
  for (int64_t p = 0; p < parts; ++p) body(p);
}

// This thread's index in the innermost team, and that team's size (0 and 1
// outside a team).
int team_thread_index();
int team_size();
// Waits until every thread of the innermost team has reached it (no-op outside a team).
void team_barrier();

// Runs body(thread, team) once on each thread of a team of up to num_threads
// threads: team is the number the runtime started (it may start fewer), thread
// this one's index in [0, team). body may call team_barrier(), which every
// thread of the team must reach equally often; work split by team size stays
// correct whatever size the team gets. body must not throw.
template <typename Body>
void parallel_team(int num_threads, const Body& body) {
  if (num_threads <= 1) {
    body(0, 1);
    return;
  }
#pragma omp parallel num_threads(num_threads)
  body(team_thread_index(), team_size());
}

// Runs body(begin, end) over [0, count) cut into min(count, num_threads)
// contiguous ranges of nearly equal length, one per thread: for passes whose
// items (rows, tiles) all cost about the same.
template <typename Body>
void parallel_ranges(int num_threads, int64_t count, const Body& body) {
  const int64_t parts = std::min<int64_t>(count, std::max(num_threads, 1));
  parallel_for(num_threads, parts,
               [&](int64_t part) { body(count * part / parts, count * (part + 1) / parts); });
}

// Splits rows [0, rows) into `parts` contiguous ranges of about equal cost,
// where row r costs (indptr[r + 1] - indptr[r]) + row_cost. Returns parts + 1
// boundaries. Balancing by stored entries keeps skewed matrices from idling a
// core.
std::vector<int64_t> split_rows_by_cost(const int64_t* indptr, int64_t rows, int64_t parts,
                                        int64_t row_cost);

}  // namespace sparsegemm
