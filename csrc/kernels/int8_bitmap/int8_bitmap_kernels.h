// Int8 bitmap x int8 vectors: exact int32 products, the per-ISA function
// table and how to get it (semantics in core/int8_bitmap_matrix.h).
//
// Each ISA's kernels live in their own file (int8_bitmap_scalar.cpp,
// int8_bitmap_avx2.cpp, int8_bitmap_avx512.cpp), compiled with that ISA's
// flags. The scalar and AVX2 ones are written once in int8_bitmap_kernels.inl
// against Int8Expand (int8_expand_<isa>.h), which turns 16 bits of the bitmap
// and the packed int8 values behind them into 16 int16 lanes; they read the
// vectors widened to int16, for madd_epi16. The avx512 level has its own
// kernels (int8_bitmap_avx512vnni.cpp) for CPUs with VBMI2 and VNNI: one
// expand load per 64 weights and vpdpbusd, reading the vectors as bytes x + 128.
// Without those extensions it runs the AVX2 kernels (int8_bitmap_avx512.cpp).
// The functions are single-threaded and never allocate:
// drivers/int8_bitmap_driver.cpp splits rows across threads and owns the
// scratch buffers.
#pragma once

#include <cstdint>

#include "core/bitmap_matrix.h"
#include "core/int8_bitmap_matrix.h"
#include "core/isa.h"

namespace sparsegemm {

// Columns the vector kernels read at a time from each vector: the drivers pad
// every vector to a multiple of this (with zeros) so no kernel needs a tail.
constexpr int64_t kInt8VectorPadding = 64;

// acc(v, r) = sum over stored k of q[r, k] * x(v, k)   for v < nvec, r in [row_begin, row_end)
// with x(v, k) = x[v * x_vstride + k], int8 values held as X, for k below
// a.cols rounded up to kInt8VectorPadding (zeros past a.cols), and
// acc(v, r) = acc[v * acc_vstride + r]. Exact: the caller keeps a.cols <= kMaxInt8Cols.
template <typename X>
using Int8KernelFn = void (*)(const BitmapView<int8_t>& a, int64_t row_begin, int64_t row_end,
                              const X* x, int64_t x_vstride, int64_t nvec, int32_t* acc,
                              int64_t acc_vstride);

// The VNNI kernels' form: vpdpbusd takes one operand unsigned, so x holds
// x + 128 as unsigned bytes (the driver flips the sign bits once per call;
// padding is 128), and row_sums[r] is the sum of row r's stored values
// (Int8BitmapMatrix::row_sums), which gives back the sum over x.
using Int8ByteKernelFn = void (*)(const BitmapView<int8_t>& a, const int32_t* row_sums,
                                  int64_t row_begin, int64_t row_end, const uint8_t* x,
                                  int64_t x_vstride, int64_t nvec, int32_t* acc,
                                  int64_t acc_vstride);

// The small-batch kernels over column quads (4 consecutive columns) read
// the vectors transposed, kQuadVectors at once: for chunk c of kQuadVectors
// vectors and quad q of the padded columns,
// x4[((c * quads + q) * kQuadVectors + v) * 4 + j] = x(16c + v, 4q + j) + 128
// as an unsigned byte (128 for a vector past nvec), quads = words_per_row * 16.
// In every form, only the int8 range [-127, 127] of x is allowed.
constexpr int kQuadVectors = 16;
// The AMX kernel: every column quad, from the bitmap.
using Int8QuadKernelFn = void (*)(const BitmapView<int8_t>& a, const int32_t* row_sums,
                                  int64_t row_begin, int64_t row_end, const uint8_t* x4,
                                  int64_t nvec, int32_t* acc, int64_t acc_vstride);
// The VNNI kernel for sparse rows: only the quads that hold a stored value,
// read from the matrix's quad plan (core/int8_bitmap_matrix.h).
using Int8QuadPlanKernelFn = void (*)(const Int8QuadPlan& plan, const int32_t* row_sums,
                                      int64_t row_begin, int64_t row_end, const uint8_t* x4,
                                      int64_t nvec, int32_t* acc, int64_t acc_vstride);

// The batch-1 VNNI kernel for very sparse rows: gemv_rows_bytes's product,
// read through the matrix's index plan (core/int8_bitmap_matrix.h) and
// values instead of the bitmap.
using ColumnPlanKernelFn = void (*)(const ColumnIndexPlan& plan, const BitmapView<int8_t>& a,
                                    const int32_t* row_sums, int64_t row_begin, int64_t row_end,
                                    const uint8_t* x, int64_t x_vstride, int64_t nvec, int32_t* acc,
                                    int64_t acc_vstride);

// The biased bytes of one vector for the VNNI kernels: xq[k] = 128 +
// clamp(round_half_even(x[k] * inverse_sx), -127, 127), k < cols (the
// driver's portable loop, written out where GCC vectorizes that loop poorly).
using Int8QuantizeFn = void (*)(const float* x, int64_t cols, float inverse_sx, uint8_t* xq);

// The biased vectors xs (batch x stride bytes, stride >= padded_cols, a
// multiple of 64) as the quad and tile kernels read them: for each group of
// kQuadVectors vectors, for each column quad, the group's 4 bytes of that
// quad, vector by vector (0x80808080, a biased zero, past the batch).
using Int8InterleaveFn = void (*)(const uint8_t* xs, int64_t stride, int64_t batch,
                                  int64_t padded_cols, uint8_t* x4);

// gemv_rows multiplies each row with one vector at a time; small_batch_rows
// expands a tile of rows x 256 columns once and multiplies it with up to 16
// vectors. All kernels give the same integers; the driver picks by batch
// and density (drivers/int8_bitmap_driver.cpp). A table holds exactly one
// pair: over vectors widened to int16 or over biased bytes, the latter with
// an optional quad kernel.
struct Int8BitmapKernels {
  Int8KernelFn<int16_t> gemv_rows = nullptr;
  Int8KernelFn<int16_t> small_batch_rows = nullptr;
  Int8ByteKernelFn gemv_rows_bytes = nullptr;
  Int8ByteKernelFn small_batch_rows_bytes = nullptr;
  // Optional: faster than small_batch_rows_bytes on sparse rows (see the driver).
  Int8QuadPlanKernelFn small_batch_rows_quads = nullptr;
  // Optional, where use_amx(): the tile-multiply kernel, over the quad layout,
  // for any density (int8_bitmap_amx.cpp).
  Int8QuadKernelFn small_batch_rows_amx = nullptr;
  // Optional: faster than gemv_rows_bytes on very sparse rows (see the driver).
  ColumnPlanKernelFn gemv_rows_indexed = nullptr;
  // Optional: the quantization of x for the kernels over biased bytes, and
  // its interleaving for the quad and tile kernels (else the driver's loops).
  Int8QuantizeFn quantize_biased = nullptr;
  Int8InterleaveFn interleave_quads = nullptr;

  bool reads_biased_bytes() const { return gemv_rows_bytes != nullptr; }
};

// The kernels for one ISA. The caller must check isa_supported(isa).
const Int8BitmapKernels& int8_bitmap_kernels(Isa isa);

namespace scalar {
const Int8BitmapKernels& int8_bitmap_kernel_table();
}
namespace avx2 {
const Int8BitmapKernels& int8_bitmap_kernel_table();
}
namespace avx512 {
const Int8BitmapKernels& int8_bitmap_kernel_table();
// The VBMI2 + VNNI kernels; the caller must check use_avx512_extensions().
const Int8BitmapKernels& int8_bitmap_vnni_kernel_table();
}  // namespace avx512
namespace amx {
void small_batch_rows_amx(const BitmapView<int8_t>& a, const int32_t* row_sums, int64_t row_begin,
                          int64_t row_end, const uint8_t* x4, int64_t nvec, int32_t* acc,
                          int64_t acc_vstride);
}

}  // namespace sparsegemm
