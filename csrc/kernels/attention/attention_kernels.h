// Scaled dot-product attention, softmax(q k^T * scale + mask) v, for one head
// and a range of its queries: the per-ISA function table and how to get it.
//
// Encoder attention at a few hundred tokens and head sizes of 32-128 is small
// matrix work, where torch's CPU flash kernel spends much of its time outside
// the multiply-adds. Here one thread takes a head's keys transposed once into
// scratch, computes a block of queries' scores into an L1-sized buffer, applies
// the mask and the softmax there and multiplies by v, so the scores never go to
// memory. float32 only; the SIMD levels take exp from a polynomial (relative
// error below 2e-7) and the scalar level from std::exp.
#pragma once

#include <cstdint>

#include "core/isa.h"

namespace sparsegemm {

// One (batch, head) pair's operands. Rows are strided, the last dimension is
// contiguous. The mask is additive (0 or -inf for a boolean one), one row of
// kv_len entries per query; mask_row_stride 0 uses one row for all queries.
struct AttentionHead {
  const float* q;
  int64_t q_row_stride;
  const float* k;
  int64_t k_row_stride;
  const float* v;
  int64_t v_row_stride;
  float* out;
  int64_t out_row_stride;
  const float* mask;  // may be null
  int64_t mask_row_stride;
  int64_t kv_len;
  int64_t head_dim;
  float scale;
};

struct AttentionKernels {
  // The multiple of keys the score rows are padded to.
  int64_t key_block;
  // keys_t[d * padded + j] = k[j][d], zero for kv_len <= j < padded (padded =
  // kv_len rounded up to key_block).
  void (*pack_keys)(const AttentionHead& head, float* keys_t);
  // Writes out rows [q_begin, q_end). scores holds kQueryBlock * padded floats.
  void (*attend)(const AttentionHead& head, const float* keys_t, float* scores, int64_t q_begin,
                 int64_t q_end);
};

// Queries per block of scores (every level).
constexpr int64_t kAttentionQueryBlock = 4;

inline int64_t padded_keys(int64_t kv_len, int64_t key_block) {
  return (kv_len + key_block - 1) / key_block * key_block;
}

// The kernels for one ISA. The caller must check isa_supported(isa).
const AttentionKernels& attention_kernels(Isa isa);

namespace scalar {
const AttentionKernels& attention_kernel_table();
}
namespace avx2 {
const AttentionKernels& attention_kernel_table();
}
namespace avx512 {
const AttentionKernels& attention_kernel_table();
}

}  // namespace sparsegemm
