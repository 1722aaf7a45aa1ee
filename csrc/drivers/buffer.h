// Uninitialised, 64-byte aligned scratch memory for the drivers.
#pragma once

#include <cstddef>
#include <cstdint>
#include <new>

namespace sparsegemm {

namespace scratch {
// A 64-byte aligned block of at least `bytes`, from this thread's cache of
// released blocks when one is large enough. Throws std::bad_alloc.
void* acquire(size_t bytes);
// Hands a block from acquire() back: kept for the next call on this thread
// (up to a few blocks and kMaxCachedBytes in all), freed otherwise.
void release(void* block, size_t bytes);
}  // namespace scratch

// Scratch arrays live for one product call, and the packed operands of a
// linear layer are megabytes: allocated fresh, each call would mmap new
// pages and fault them in one by one (measured: half of a 1024 x 384 layer's
// time in the kernel's page-fault handler). Blocks are therefore recycled
// per thread.
template <typename T>
class ScratchBuffer {
 public:
  explicit ScratchBuffer(size_t count) {
    if (count == 0) return;
    if (count > (SIZE_MAX - 63) / sizeof(T)) throw std::bad_alloc();
    bytes_ = (count * sizeof(T) + 63) / 64 * 64;
    data_ = static_cast<T*>(scratch::acquire(bytes_));
  }
  ~ScratchBuffer() {
    if (data_ != nullptr) scratch::release(data_, bytes_);
  }
  ScratchBuffer(const ScratchBuffer&) = delete;
  ScratchBuffer& operator=(const ScratchBuffer&) = delete;
  T* data() { return data_; }

 private:
  T* data_ = nullptr;
  size_t bytes_ = 0;
};

}  // namespace sparsegemm
