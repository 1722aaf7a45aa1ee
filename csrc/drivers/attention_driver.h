// Scaled dot-product attention over a batch of heads, on up to num_threads
// threads (kernels/attention for the method).
#pragma once

#include <cstdint>

#include "drivers/csr_driver.h"

namespace sparsegemm {

// Strides in elements of one operand's batch, head and row dimensions; its
// last dimension is contiguous. A stride of 0 broadcasts.
struct AttentionStrides {
  int64_t batch = 0;
  int64_t head = 0;
  int64_t row = 0;
};

// out[b, h, i, :] = softmax(q[b, h, i, :] . k[b, h, j, :] * scale + mask[b, h, i, j]) v[b, h, j,
// :], with q and out of q_len rows, k, v and each mask row of kv_len entries.
struct AttentionArgs {
  const float* q = nullptr;
  const float* k = nullptr;
  const float* v = nullptr;
  float* out = nullptr;
  const float* mask = nullptr;  // additive; null for none
  AttentionStrides q_strides, k_strides, v_strides, out_strides, mask_strides;
  int64_t batch = 0, heads = 0, q_len = 0, kv_len = 0, head_dim = 0;
  float scale = 1;
};

void attention(const AttentionArgs& args, int num_threads);

// Self-attention between two CSR projections in one call:
//   qkv = x @ in_proj.T + b   (x: batch * length rows; qkv rows are q | k | v, each
//                              in_proj.rows() / 3 wide)
//   ctx = attention(q, k, v)  (per sequence of `length` rows, `heads` heads)
//   y   = ctx @ out_proj.T + b
// The three products run back to back with qkv and ctx in scratch. As three
// calls from Python, the interpreter's work between them ran on caches the
// products had just filled: 80-200 us a gap on a BERT-base layer, against 30 us
// warm (Xeon, 2 threads). Needs in_proj.rows() == 3 * out_proj.cols() and
// out_proj.cols() divisible by heads.
void csr_self_attention(const CsrPairWeight<float>& in_proj, const CsrPairWeight<float>& out_proj,
                        const float* x, int64_t ldx, int64_t batch, int64_t length, int64_t heads,
                        float scale, float* y, int64_t ldy, int num_threads);

}  // namespace sparsegemm
