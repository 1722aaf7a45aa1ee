// Scaled dot-product attention over a batch of heads, on up to num_threads
// threads (kernels/attention for the method).
#pragma once

#include <cstdint>

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

}  // namespace sparsegemm
