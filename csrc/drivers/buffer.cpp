#include "drivers/buffer.h"

#include <algorithm>
#include <cstdlib>
#include <new>
#include <vector>

namespace sparsegemm::scratch {

namespace {

// At most this many blocks and bytes stay cached per thread; a larger call's
// buffers are freed as before.
constexpr size_t kMaxCachedBlocks = 4;
constexpr size_t kMaxCachedBytes = size_t{64} << 20;

struct Block {
  void* data;
  size_t bytes;
};

struct Cache {
  std::vector<Block> blocks;
  size_t total = 0;
  ~Cache() {
    for (const Block& b : blocks) std::free(b.data);
  }
};

Cache& thread_cache() {
  thread_local Cache cache;
  return cache;
}

}  // namespace

void* acquire(size_t bytes) {
  Cache& cache = thread_cache();
  // The smallest cached block that is large enough.
  auto best = cache.blocks.end();
  for (auto it = cache.blocks.begin(); it != cache.blocks.end(); ++it)
    if (it->bytes >= bytes && (best == cache.blocks.end() || it->bytes < best->bytes)) best = it;
  if (best != cache.blocks.end()) {
    void* data = best->data;
    cache.total -= best->bytes;
    cache.blocks.erase(best);
    return data;
  }
  void* data = std::aligned_alloc(64, bytes);
  if (data == nullptr) throw std::bad_alloc();
  return data;
}

void release(void* block, size_t bytes) {
  Cache& cache = thread_cache();
  if (bytes > kMaxCachedBytes) {
    std::free(block);
    return;
  }
  cache.blocks.push_back({block, bytes});
  cache.total += bytes;
  // Over the limits: free the smallest blocks first (the large ones are the
  // costly ones to fault in again).
  while (cache.blocks.size() > kMaxCachedBlocks || cache.total > kMaxCachedBytes) {
    auto smallest =
        std::min_element(cache.blocks.begin(), cache.blocks.end(),
                         [](const Block& a, const Block& b) { return a.bytes < b.bytes; });
    std::free(smallest->data);
    cache.total -= smallest->bytes;
    cache.blocks.erase(smallest);
  }
}

}  // namespace sparsegemm::scratch
