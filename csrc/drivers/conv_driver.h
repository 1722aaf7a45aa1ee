// Driver for the sparse convolution: validates the geometry and runs either
// w @ im2col(x) one panel of output pixels at a time (CSR panel kernel), or
// the direct kernel, whose driver turns the weight's stored entries into taps,
// splits (image, output channel range) work across threads and owns the
// scratch buffers.
#pragma once

#include <cstdint>

#include "core/activation.h"
#include "core/csr_matrix.h"

namespace sparsegemm {

// A 2-d convolution with zero padding (groups = 1), as torch.nn.functional.conv2d:
//   out[n, co, y, x] = bias[co] + sum_{ci, kh, kw} w[co, ci, kh, kw] *
//       in[n, ci, y * stride_h + kh * dilation_h - pad_h, x * stride_w + kw * dilation_w - pad_w]
// with input elements outside the image taken as zero.
struct Conv2dGeometry {
  int64_t in_channels = 0, in_h = 0, in_w = 0;
  int64_t kernel_h = 1, kernel_w = 1;
  int64_t stride_h = 1, stride_w = 1;
  int64_t pad_h = 0, pad_w = 0;
  int64_t dilation_h = 1, dilation_w = 1;

  int64_t out_h() const {
    return (in_h + 2 * pad_h - dilation_h * (kernel_h - 1) - 1) / stride_h + 1;
  }
  int64_t out_w() const {
    return (in_w + 2 * pad_w - dilation_w * (kernel_w - 1) - 1) / stride_w + 1;
  }
};

// Throws std::invalid_argument naming the defect: non-positive sizes, strides
// or dilations, negative padding, a kernel larger than the padded input, sizes
// the kernels' 32-bit tap fields cannot hold, or a weight that is not
// out_channels x (in_channels * kernel_h * kernel_w).
void validate_conv2d_geometry(const Conv2dGeometry& geometry, int64_t weight_cols);

// out = conv2d(x, w) (+ bias) for a sparse weight w, Cout x (Cin * KH * KW),
// its columns flattened as weight.reshape(Cout, Cin * KH * KW).
// x is batch x Cin x H x W with element (n, c, h, w) at
// x[n * x_nstride + c * x_cstride + h * x_rstride + w] (rows contiguous);
// out is batch x Cout x out_h x out_w, C order. bias has Cout entries or is
// null; values (w.nnz() entries) replaces w's stored values when not null.
// Any stride is supported. Most geometries run as w @ im2col(x), one panel
// of output pixels at a time through the CSR panel kernel; wide stride-1
// outputs at high sparsity run the direct kernel (kernels/conv/).
// num_threads <= 0 means default_num_threads(). `act` is applied to the
// output (bias included): as each panel's outputs are written, while they are
// in cache, or in a pass after the direct kernel. Validates the geometry.
template <typename T>
void csr_conv2d(const CsrMatrix<T>& w, const Conv2dGeometry& geometry, const T* x, int64_t batch,
                int64_t x_nstride, int64_t x_cstride, int64_t x_rstride, const T* bias, T* out,
                int num_threads, const T* values = nullptr, Activation act = Activation::None);

}  // namespace sparsegemm
