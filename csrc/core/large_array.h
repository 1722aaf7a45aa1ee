// Storage for the arrays a matrix streams from memory on every product (its
// values, bitmap words, column plans): a std::vector whose allocations of at
// least kHugePageBytes are aligned to a 2 MiB page and advised onto
// transparent huge pages (madvise MADV_HUGEPAGE; where THP is "madvise",
// as here and on many distributions, nothing else gets them). numpy advises
// its large arrays the same way, so a dense contender's weights already had
// them. A batch-1 product reads its weights once per call, cold, and 4 KiB
// pages cost that stream a page walk every 4 KiB.
// SPARSEGEMM_HUGE_PAGES=off (or 0) keeps plain allocations.
#pragma once

#include <cstddef>
#include <vector>

namespace sparsegemm {

// bytes of memory aligned to at least 64 bytes (2 MiB for a huge-page
// allocation); throws std::bad_alloc. Free with deallocate_large.
void* allocate_large(std::size_t bytes);
void deallocate_large(void* data) noexcept;

template <typename T>
struct LargeArrayAllocator {
  using value_type = T;
  LargeArrayAllocator() noexcept = default;
  template <typename U>
  LargeArrayAllocator(const LargeArrayAllocator<U>&) noexcept {}  // NOLINT(runtime/explicit)
  T* allocate(std::size_t n) { return static_cast<T*>(allocate_large(n * sizeof(T))); }
  void deallocate(T* data, std::size_t) noexcept { deallocate_large(data); }
  friend bool operator==(const LargeArrayAllocator&, const LargeArrayAllocator&) { return true; }
  friend bool operator!=(const LargeArrayAllocator&, const LargeArrayAllocator&) { return false; }
};

template <typename T>
using LargeArray = std::vector<T, LargeArrayAllocator<T>>;

}  // namespace sparsegemm
