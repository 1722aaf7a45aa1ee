#include "core/large_array.h"

#include <cstdlib>
#include <new>

#if defined(__linux__)
#include <sys/mman.h>
#endif

#include "core/isa.h"

namespace sparsegemm {

namespace {

constexpr std::size_t kHugePageBytes = std::size_t{2} << 20;
constexpr std::size_t kCacheLine = 64;

std::size_t round_up(std::size_t bytes, std::size_t unit) {
  return (bytes + unit - 1) / unit * unit;
}

}  // namespace

void* allocate_large(std::size_t bytes) {
  const bool huge = bytes >= kHugePageBytes && huge_pages_enabled();
  const std::size_t alignment = huge ? kHugePageBytes : kCacheLine;
  const std::size_t rounded = round_up(bytes == 0 ? 1 : bytes, alignment);
  void* data = std::aligned_alloc(alignment, rounded);
  if (data == nullptr) throw std::bad_alloc();
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  // Advice only: where THP is off, or the kernel has none to give, it is ignored.
  if (huge) madvise(data, rounded, MADV_HUGEPAGE);
#endif
  return data;
}

void deallocate_large(void* data) noexcept { std::free(data); }

}  // namespace sparsegemm
