#include "drivers/attention_driver.h"

#include <algorithm>

#include "core/isa.h"
#include "core/parallel.h"
#include "drivers/buffer.h"
#include "kernels/attention/attention_kernels.h"

namespace sparsegemm {

namespace {
// Queries per task: small enough to spread a few heads over the threads, large
// enough that packing the head's keys (once per thread and head) is a few
// percent of the task.
constexpr int64_t kQueriesPerTask = 32;

AttentionHead head_operands(const AttentionArgs& a, int64_t b, int64_t h) {
  const auto at = [&](auto* base, const AttentionStrides& s) {
    return base + b * s.batch + h * s.head;
  };
  AttentionHead head{};
  head.q = at(a.q, a.q_strides);
  head.q_row_stride = a.q_strides.row;
  head.k = at(a.k, a.k_strides);
  head.k_row_stride = a.k_strides.row;
  head.v = at(a.v, a.v_strides);
  head.v_row_stride = a.v_strides.row;
  head.out = at(a.out, a.out_strides);
  head.out_row_stride = a.out_strides.row;
  head.mask = a.mask != nullptr ? at(a.mask, a.mask_strides) : nullptr;
  head.mask_row_stride = a.mask_strides.row;
  head.kv_len = a.kv_len;
  head.head_dim = a.head_dim;
  head.scale = a.scale;
  return head;
}
}  // namespace

void attention(const AttentionArgs& args, int num_threads) {
  const int64_t heads = args.batch * args.heads;
  if (heads == 0 || args.q_len == 0 || args.head_dim == 0) return;
  if (args.kv_len == 0) {  // no keys: every query is fully masked, so zeros (as torch)
    for (int64_t bh = 0; bh < heads; ++bh) {
      const AttentionHead head = head_operands(args, bh / args.heads, bh % args.heads);
      for (int64_t i = 0; i < args.q_len; ++i)
        std::fill_n(head.out + i * head.out_row_stride, args.head_dim, 0.0f);
    }
    return;
  }
  const AttentionKernels& kernels = attention_kernels(active_isa());
  const int64_t padded = padded_keys(args.kv_len, kernels.key_block);
  const int64_t chunks = (args.q_len + kQueriesPerTask - 1) / kQueriesPerTask;
  const int64_t tasks = heads * chunks;
  const int threads =
      threads_for_work(num_threads, heads * args.q_len * args.kv_len * args.head_dim * 2);
  const int64_t parts = std::min<int64_t>(tasks, threads);
  // Per part: the head's keys transposed, then one block of scores.
  const int64_t part_floats = padded * args.head_dim + kAttentionQueryBlock * padded;
  ScratchBuffer<float> scratch(static_cast<size_t>(parts * part_floats));
  float* scratch_base = scratch.data();
  parallel_for(threads, parts, [&](int64_t part) {
    float* keys_t = scratch_base + part * part_floats;
    float* scores = keys_t + padded * args.head_dim;
    int64_t packed_head = -1;
    // Contiguous task ranges, so a part packs each of its heads once.
    for (int64_t task = tasks * part / parts; task < tasks * (part + 1) / parts; ++task) {
      const int64_t bh = task / chunks, chunk = task % chunks;
      const AttentionHead head = head_operands(args, bh / args.heads, bh % args.heads);
      if (bh != packed_head) {
        kernels.pack_keys(head, keys_t);
        packed_head = bh;
      }
      const int64_t begin = chunk * kQueriesPerTask;
      kernels.attend(head, keys_t, scores, begin, std::min(args.q_len, begin + kQueriesPerTask));
    }
  });
}

void csr_self_attention(const CsrPairWeight<float>& in_proj, const CsrPairWeight<float>& out_proj,
                        const float* x, int64_t ldx, int64_t batch, int64_t length, int64_t heads,
                        float scale, float* y, int64_t ldy, int num_threads) {
  const int64_t rows = batch * length, embed = out_proj.matrix.cols();
  if (rows == 0) return;
  ScratchBuffer<float> qkv(static_cast<size_t>(rows * 3 * embed));
  csr_linear<float>(in_proj.matrix, x, ldx, rows, in_proj.bias, qkv.data(), 3 * embed, num_threads,
                    in_proj.values, Activation::None, in_proj.chunk_values,
                    in_proj.chunk_values_layout);
  ScratchBuffer<float> context(static_cast<size_t>(rows * embed));
  AttentionArgs args;
  args.q = qkv.data();
  args.k = qkv.data() + embed;
  args.v = qkv.data() + 2 * embed;
  const int64_t head_dim = embed / heads;
  args.q_strides = args.k_strides = args.v_strides = {length * 3 * embed, head_dim, 3 * embed};
  args.out = context.data();
  args.out_strides = {length * embed, head_dim, embed};
  args.batch = batch;
  args.heads = heads;
  args.q_len = args.kv_len = length;
  args.head_dim = head_dim;
  args.scale = scale;
  attention(args, num_threads);
  csr_linear<float>(out_proj.matrix, context.data(), embed, rows, out_proj.bias, y, ldy,
                    num_threads, out_proj.values, Activation::None, out_proj.chunk_values,
                    out_proj.chunk_values_layout);
}

}  // namespace sparsegemm
