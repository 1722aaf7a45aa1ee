// Drivers for the bitmap products: they choose a kernel for the operand
// shapes, split rows across threads by stored entries, and own the scratch
// buffers. Operands are assumed valid (shapes checked by the caller; the
// BitmapMatrix was validated when built).
#pragma once

#include <cstdint>

#include "core/activation.h"
#include "core/bitmap_matrix.h"

namespace sparsegemm {

// As for CSR (drivers/csr_driver.h), `values` (a.nnz() entries) replaces the stored
// values when not null. V is the stored value type; b, bias and c (x, bias and
// y) have its compute type compute_t<V> (float for bfloat16 values).
//
// Every number of dense vectors runs a few-vector kernel: one vector the
// batch-1 kernel, several the small-batch kernel (a tile of the bitmap
// expanded once per 16 vectors), unless a vector holds Inf or NaN, where the
// batch-1 kernel runs once per vector so that unstored entries never multiply
// them (as with CSR).

// c = a @ b (+ bias[:, None]).
// b is a.cols() x n with element (k, j) at b[k * b_rstride + j * b_cstride];
// c is a.rows() x n, C order with row stride ldc. bias has a.rows() entries or is null.
// num_threads <= 0 means default_num_threads().
template <typename V, typename T = compute_t<V>>
void bitmap_matmul(const BitmapMatrix<V>& a, const T* b, int64_t b_rstride, int64_t b_cstride,
                   int64_t n, const T* bias, T* c, int64_t ldc, int num_threads,
                   const V* values = nullptr);

// The nn.Linear product: y = x @ w.T (+ bias).
// x is batch x w.cols() with row stride ldx (rows contiguous); y is batch x w.rows(),
// row stride ldy. bias has w.rows() entries or is null.
template <typename V, typename T = compute_t<V>>
void bitmap_linear(const BitmapMatrix<V>& w, const T* x, int64_t ldx, int64_t batch, const T* bias,
                   T* y, int64_t ldy, int num_threads, const V* values = nullptr,
                   Activation act = Activation::None);

}  // namespace sparsegemm
