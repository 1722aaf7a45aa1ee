// Drivers for the int8 bitmap products (semantics in core/int8_bitmap_matrix.h):
// they widen (and for float input, quantize) the vectors into a padded scratch
// buffer once per call, as the kernels read them (int16 for the scalar and
// AVX2 kernels, bytes x + 128 for the VNNI ones; padding holds a zero x),
// split rows across threads by stored entries, run the integer kernel, and
// scale the int32 sums into float32. Operands are assumed valid (shapes
// checked by the caller; the matrix was validated when built, so its columns
// fit int32 accumulation).
#pragma once

#include <cstdint>

#include "core/int8_bitmap_matrix.h"

namespace sparsegemm {

// The exact integer product acc = xq @ q.T:
// acc[v * ldacc + r] = sum over stored k of q[r, k] * xq[v * ldx + k].
// xq is batch x w.cols() int8 with every entry in [-127, 127]; acc is batch x w.rows().
// num_threads <= 0 means default_num_threads().
void int8_bitmap_int_product(const Int8BitmapMatrix& w, const int8_t* xq, int64_t ldx,
                             int64_t batch, int32_t* acc, int64_t ldacc, int num_threads);

// The nn.Linear product y = x @ w.T (+ bias) with x quantized per vector:
// x is batch x w.cols() float32 with row stride ldx; y is batch x w.rows(),
// row stride ldy; bias has w.rows() entries or is null. A vector holding Inf
// or NaN gives a row of NaN.
void int8_bitmap_linear(const Int8BitmapMatrix& w, const float* x, int64_t ldx, int64_t batch,
                        const float* bias, float* y, int64_t ldy, int num_threads);

}  // namespace sparsegemm
