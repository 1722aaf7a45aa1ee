// Uninitialised, 64-byte aligned scratch memory for the drivers.
#pragma once

#include <cstddef>
#include <cstdlib>
#include <new>

namespace sparsegemm {

template <typename T>
class ScratchBuffer {
 public:
  explicit ScratchBuffer(size_t count) {
    if (count == 0) return;
    if (count > (SIZE_MAX - 63) / sizeof(T)) throw std::bad_alloc();
    const size_t bytes = (count * sizeof(T) + 63) / 64 * 64;
    data_ = static_cast<T*>(std::aligned_alloc(64, bytes));
    if (data_ == nullptr) throw std::bad_alloc();
  }
  ~ScratchBuffer() { std::free(data_); }
  ScratchBuffer(const ScratchBuffer&) = delete;
  ScratchBuffer& operator=(const ScratchBuffer&) = delete;
  T* data() { return data_; }

 private:
  T* data_ = nullptr;
};

}  // namespace sparsegemm
