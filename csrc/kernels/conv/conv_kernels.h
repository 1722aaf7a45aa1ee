// Direct sparse convolution kernels: the per-ISA function table and how to get it.
//
// The weight is a CSR matrix with one row per output channel and columns
// (ci, kh, kw) flattened as weight.reshape(Cout, Cin * KH * KW). The driver
// (drivers/conv_driver.cpp) turns each stored entry into a ConvTap: where in the input
// it reads for output (0, 0). The kernels, written once in conv_kernels.inl
// against the Vec<T> traits and compiled per ISA (conv_scalar.cpp,
// conv_avx2.cpp, conv_avx512.cpp), then accumulate
//   out[co, y, x] = bias[co] + sum_taps w * in[tap.offset + y * stride_h * in_rstride + x]
// vectorised along output x, skipping input rows and columns outside the image
// (zero padding) with masked loads. They are single-threaded and never allocate.
#pragma once

#include <cstdint>

#include "core/isa.h"

namespace sparsegemm {

// One stored weight entry, as the input element it reads for output (y, x):
//   row = tap.row + y * stride_h        (skipped unless 0 <= row < in_h)
//   col = tap.col + x                   (skipped unless 0 <= col < tap.width)
//   element in[tap.offset + y * stride_h * in_rstride + x]
// where tap.offset = plane + tap.row * in_rstride + tap.col already includes
// the input channel's plane. (The driver runs these kernels at stride 1
// only, so x steps by one element.)
struct ConvTap {
  int64_t offset;
  int32_t row;
  int32_t col;
  int32_t width;
};

// Everything a kernel reads, owned by the driver.
template <typename T>
struct ConvPlan {
  const int64_t* indptr = nullptr;  // out_channels + 1 entries: the weight's row pointers
  const ConvTap* taps = nullptr;    // one per stored entry, in storage order
  const T* values = nullptr;        // one per stored entry
  int64_t in_h = 0;                 // input rows
  int64_t in_rstride = 0;           // elements between input rows
  int64_t stride_h = 1;
  int64_t out_h = 0, out_w = 0;
  int64_t out_cstride = 0,
          out_rstride = 0;  // output element (co, y, x) at co*cstride + y*rstride + x
};

template <typename T>
struct ConvKernels {
  // One image, output channels [co_begin, co_end): every output row y, then
  // every channel, so the input rows a row of outputs reads stay in cache
  // across channels. `in` is the image's input (plan offsets are relative to
  // it), `out` its output; bias has out_channels entries or is null.
  void (*conv_channels)(const ConvPlan<T>& plan, int64_t co_begin, int64_t co_end, const T* in,
                        const T* bias, T* out);
};

// The kernels for one ISA. The caller must check isa_supported(isa).
template <typename T>
const ConvKernels<T>& conv_kernels(Isa isa);

namespace scalar {
template <typename T>
const ConvKernels<T>& conv_kernel_table();
}
namespace avx2 {
template <typename T>
const ConvKernels<T>& conv_kernel_table();
}
namespace avx512 {
template <typename T>
const ConvKernels<T>& conv_kernel_table();
}

}  // namespace sparsegemm
