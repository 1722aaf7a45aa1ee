// Attention, portable level: one query at a time, std::exp.
#include <cmath>
#include <cstdint>
#include <limits>

#include "kernels/attention/attention_kernels.h"

namespace sparsegemm {
namespace scalar {
namespace {

void pack_keys(const AttentionHead& h, float* keys_t) {
  for (int64_t j = 0; j < h.kv_len; ++j)
    for (int64_t d = 0; d < h.head_dim; ++d) keys_t[d * h.kv_len + j] = h.k[j * h.k_row_stride + d];
}

void attend(const AttentionHead& h, const float* keys_t, float* scores, int64_t q_begin,
            int64_t q_end) {
  const int64_t n = h.kv_len, dims = h.head_dim;
  for (int64_t i = q_begin; i < q_end; ++i) {
    const float* q = h.q + i * h.q_row_stride;
    const float* mask = h.mask != nullptr ? h.mask + i * h.mask_row_stride : nullptr;
    float* out = h.out + i * h.out_row_stride;
    float max = -std::numeric_limits<float>::infinity();
    for (int64_t j = 0; j < n; ++j) {
      float s = 0;
      for (int64_t d = 0; d < dims; ++d) s += q[d] * keys_t[d * n + j];
      s *= h.scale;
      if (mask != nullptr) s += mask[j];
      scores[j] = s;
      max = s > max ? s : max;
    }
    if (max == -std::numeric_limits<float>::infinity()) {  // max skips NaN
      bool any_nan = false;
      for (int64_t j = 0; j < n; ++j) any_nan = any_nan || scores[j] != scores[j];
      // Every key masked: zeros, as torch gives. NaN scores: NaN, as ever.
      const float fill = any_nan ? std::numeric_limits<float>::quiet_NaN() : 0.0f;
      for (int64_t d = 0; d < dims; ++d) out[d] = fill;
      continue;
    }
    float sum = 0;
    for (int64_t j = 0; j < n; ++j) sum += scores[j] = std::exp(scores[j] - max);
    const float inv = 1.0f / sum;
    for (int64_t d = 0; d < dims; ++d) out[d] = 0;
    for (int64_t j = 0; j < n; ++j) {
      const float p = scores[j] * inv;
      const float* v = h.v + j * h.v_row_stride;
      for (int64_t d = 0; d < dims; ++d) out[d] += p * v[d];
    }
  }
}

}  // namespace

const AttentionKernels& attention_kernel_table() {
  static const AttentionKernels table{1, &pack_keys, &attend};
  return table;
}

}  // namespace scalar
}  // namespace sparsegemm
