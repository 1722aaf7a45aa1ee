// Drivers for the BSR products: they choose a kernel for the operand shapes,
// split block rows across threads by stored blocks, and own the scratch
// buffers. Operands are assumed valid (shapes checked by the caller; the
// BsrMatrix was validated when built).
#pragma once

#include <cstdint>

#include "core/activation.h"
#include "core/bsr_matrix.h"

namespace sparsegemm {

// As for CSR (drivers/csr_driver.h), `values` (a.values_size() entries, padding
// included) replaces the stored values when not null.

// c = a @ b (+ bias[:, None]).
// b is a.cols() x n with element (k, j) at b[k * b_rstride + j * b_cstride];
// c is a.rows() x n, C order with row stride ldc. bias has a.rows() entries or is null.
// num_threads <= 0 means default_num_threads().
// V is the stored value type; b, bias and c (x, bias and y) have its compute
// type (float for bfloat16 values).
template <typename V, typename T = compute_t<V>>
void bsr_matmul(const BsrMatrix<V>& a, const T* b, int64_t b_rstride, int64_t b_cstride, int64_t n,
                const T* bias, T* c, int64_t ldc, int num_threads, const V* values = nullptr);

// The nn.Linear product: y = x @ w.T (+ bias).
// x is batch x w.cols() with row stride ldx (rows contiguous); y is batch x w.rows(),
// row stride ldy. bias has w.rows() entries or is null.
template <typename V, typename T = compute_t<V>>
void bsr_linear(const BsrMatrix<V>& w, const T* x, int64_t ldx, int64_t batch, const T* bias, T* y,
                int64_t ldy, int num_threads, const V* values = nullptr,
                Activation act = Activation::None);

// Up to this many dense vectors use the few-vector kernel; more use the panel kernel.
constexpr int64_t kBsrFewVectorsMax = 4;

}  // namespace sparsegemm
