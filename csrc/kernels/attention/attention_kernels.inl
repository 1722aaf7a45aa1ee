// Float32 attention written once against an Ops trait (Vec<float> plus mul,
// sub, max, reduce_max, round_nearest, scale_pow2, select_lt), which the
// including ISA file defines first. Included inside an ISA namespace; it must
// not include headers.

// Score tiles: kAttentionQueryBlock queries x kKeyVectors vectors of keys, so
// each step loads kKeyVectors vectors of k^T and broadcasts one q entry per
// query (16 accumulators on AVX-512, 8 on AVX2). Keys are padded to whole vectors.
constexpr int kKeyVectors = Vec<float>::kRegisters >= 32 ? 4 : 2;
constexpr int64_t kKeyBlock = Vec<float>::kLanes;
// Output tiles: kAttentionQueryBlock queries x kValueVectors vectors of v's row.
constexpr int kValueVectors = 2;
constexpr int kQueries = static_cast<int>(kAttentionQueryBlock);

// exp(x) for x <= 0, and exactly 0 below -87 (e^-87 is near float's smallest
// normal), which covers -inf: 2^(x log2 e) = 2^n 2^f, n = round(x log2 e),
// |f| <= 1/2, 2^f from a degree-6 polynomial (relative error below 2e-7).
template <typename Ops>
SPARSEGEMM_ATTENTION_INLINE typename Ops::reg exp_nonpositive(typename Ops::reg x) {
  using R = typename Ops::reg;
  // max(-87, x) returns x when x is NaN, which then stays NaN.
  const R t = Ops::mul(Ops::max(Ops::set1(-87.0f), x), Ops::set1(1.44269504088896341f));
  const R n = Ops::round_nearest(t);
  const R f = Ops::sub(t, n);
  R p = Ops::set1(1.535336188319500e-4f);
  p = Ops::fmadd(p, f, Ops::set1(1.339887440266574e-3f));
  p = Ops::fmadd(p, f, Ops::set1(9.618437357674640e-3f));
  p = Ops::fmadd(p, f, Ops::set1(5.550332471162809e-2f));
  p = Ops::fmadd(p, f, Ops::set1(2.402264791363012e-1f));
  p = Ops::fmadd(p, f, Ops::set1(6.931472028550421e-1f));
  p = Ops::fmadd(p, f, Ops::set1(1.0f));
  return Ops::select_lt(x, Ops::set1(-87.0f), Ops::zero(), Ops::scale_pow2(p, n));
}

// Through this level's register-block transpose: an element at a time, the
// strided reads took a tenth of MiniLM's attention (8 x 12 heads of 128 x 32).
inline void pack_keys(const AttentionHead& h, float* keys_t) {
  const int64_t padded = padded_keys(h.kv_len, kKeyBlock);
  transpose_kernel_table<float>().tile(h.k, h.kv_len, h.head_dim, h.k_row_stride, keys_t, padded);
  for (int64_t d = 0; d < h.head_dim; ++d)
    for (int64_t j = h.kv_len; j < padded; ++j) keys_t[d * padded + j] = 0;
}

// scores[a * padded + j0 + ...] for NV vectors of keys from j0.
template <typename Ops, int NV>
SPARSEGEMM_ATTENTION_INLINE void score_tile(const AttentionHead& h,
                                            const float* const (&q)[kQueries], const float* keys_t,
                                            float* scores, int64_t j0, int64_t padded) {
  using R = typename Ops::reg;
  constexpr int64_t L = Ops::kLanes;
  R acc[kQueries][NV];
  for (auto& row : acc)
    for (R& r : row) r = Ops::zero();
  for (int64_t d = 0; d < h.head_dim; ++d) {
    const float* keys = keys_t + d * padded + j0;
    R k[NV];
    for (int c = 0; c < NV; ++c) k[c] = Ops::load(keys + c * L);
    for (int a = 0; a < kQueries; ++a) {
      const R qa = Ops::set1(q[a][d]);
      for (int c = 0; c < NV; ++c) acc[a][c] = Ops::fmadd(qa, k[c], acc[a][c]);
    }
  }
  const R scale = Ops::set1(h.scale);
  for (int a = 0; a < kQueries; ++a)
    for (int c = 0; c < NV; ++c)
      Ops::store(scores + a * padded + j0 + c * L, Ops::mul(acc[a][c], scale));
}

// scores[a * padded + j] = scale * q_a . k_j for the block's queries (rows past
// `count` repeat the last query, so the tile needs no branches): tiles of
// kKeyVectors vectors, then single vectors up to `padded` (a multiple of the
// lanes), so 32 keys on AVX-512 compute no padding.
template <typename Ops>
void block_scores(const AttentionHead& h, const float* keys_t, float* scores, int64_t first,
                  int64_t count, int64_t padded) {
  constexpr int64_t L = Ops::kLanes;
  const float* q[kQueries];
  for (int a = 0; a < kQueries; ++a)
    q[a] = h.q + (first + (a < count ? a : count - 1)) * h.q_row_stride;
  int64_t j0 = 0;
  for (; j0 + kKeyVectors * L <= padded; j0 += kKeyVectors * L)
    score_tile<Ops, kKeyVectors>(h, q, keys_t, scores, j0, padded);
  for (; j0 < padded; j0 += L) score_tile<Ops, 1>(h, q, keys_t, scores, j0, padded);
}

// Adds the mask, then replaces the row by exp(s - max); returns 1 / sum, or 0
// when every key is masked (the row is then zeros, and so is the output, as
// in torch). A NaN score makes the sum, and so the output row, NaN.
template <typename Ops>
float softmax_row(float* row, const float* mask, int64_t kv_len, int64_t padded) {
  using R = typename Ops::reg;
  constexpr int64_t L = Ops::kLanes;
  constexpr float kMinusInf = -__builtin_inff();
  if (mask != nullptr) {
    int64_t j = 0;
    for (; j + L <= kv_len; j += L)
      Ops::store(row + j, Ops::add(Ops::load(row + j), Ops::load(mask + j)));
    for (; j < kv_len; ++j) row[j] += mask[j];
  }
  for (int64_t j = kv_len; j < padded; ++j) row[j] = kMinusInf;  // the zero-padded keys
  R max = Ops::set1(kMinusInf);
  for (int64_t j = 0; j < padded; j += L) max = Ops::max(Ops::load(row + j), max);
  const float row_max = Ops::reduce_max(max);
  if (!(row_max > kMinusInf)) {  // max skips NaN: every key masked, or NaN scores
    for (int64_t j = 0; j < kv_len; ++j)
      if (row[j] != row[j]) return __builtin_nanf("");  // NaN in, NaN out
    for (int64_t j = 0; j < padded; ++j) row[j] = 0;
    return 0;
  }
  const R shift = Ops::set1(row_max);
  R sum0 = Ops::zero(), sum1 = Ops::zero();
  int64_t j = 0;
  for (; j + 2 * L <= padded; j += 2 * L) {
    const R e0 = exp_nonpositive<Ops>(Ops::sub(Ops::load(row + j), shift));
    const R e1 = exp_nonpositive<Ops>(Ops::sub(Ops::load(row + j + L), shift));
    Ops::store(row + j, e0);
    Ops::store(row + j + L, e1);
    sum0 = Ops::add(sum0, e0);
    sum1 = Ops::add(sum1, e1);
  }
  for (; j < padded; j += L) {
    const R e = exp_nonpositive<Ops>(Ops::sub(Ops::load(row + j), shift));
    Ops::store(row + j, e);
    sum0 = Ops::add(sum0, e);
  }
  return 1.0f / Ops::reduce_add(Ops::add(sum0, sum1));
}

// out_a[d0 .. d0 + kValueVectors L) = inv_a sum_j p_a[j] v_j[...], with the
// last vector of the row masked to `dims`.
template <typename Ops>
void block_values(const AttentionHead& h, const float* scores, const float* inv, int64_t first,
                  int64_t count, int64_t padded) {
  using R = typename Ops::reg;
  constexpr int64_t L = Ops::kLanes;
  const int64_t dims = h.head_dim;
  for (int64_t d0 = 0; d0 < dims; d0 += kValueVectors * L) {
    typename Ops::mask lanes[kValueVectors];
    for (int c = 0; c < kValueVectors; ++c) lanes[c] = Ops::range_mask(0, dims - d0 - c * L);
    const bool full = d0 + kValueVectors * L <= dims;
    R acc[kQueries][kValueVectors];
    for (auto& row : acc)
      for (R& r : row) r = Ops::zero();
    for (int64_t j = 0; j < h.kv_len; ++j) {
      const float* v_row = h.v + j * h.v_row_stride + d0;
      R v[kValueVectors];
      for (int c = 0; c < kValueVectors; ++c)
        v[c] = full ? Ops::load(v_row + c * L) : Ops::maskz_load(lanes[c], v_row + c * L);
      for (int a = 0; a < kQueries; ++a) {
        const R p = Ops::set1(scores[a * padded + j]);
        for (int c = 0; c < kValueVectors; ++c) acc[a][c] = Ops::fmadd(p, v[c], acc[a][c]);
      }
    }
    for (int a = 0; a < count; ++a) {
      float* out = h.out + (first + a) * h.out_row_stride + d0;
      const R scale = Ops::set1(inv[a]);
      for (int c = 0; c < kValueVectors; ++c) {
        if (full)
          Ops::store(out + c * L, Ops::mul(acc[a][c], scale));
        else
          Ops::mask_store(out + c * L, lanes[c], Ops::mul(acc[a][c], scale));
      }
    }
  }
}

template <typename Ops>
void attend(const AttentionHead& h, const float* keys_t, float* scores, int64_t q_begin,
            int64_t q_end) {
  const int64_t padded = padded_keys(h.kv_len, kKeyBlock);
  for (int64_t first = q_begin; first < q_end; first += kQueries) {
    const int64_t count = q_end - first < kQueries ? q_end - first : kQueries;
    block_scores<Ops>(h, keys_t, scores, first, count, padded);
    float inv[kQueries] = {};
    for (int64_t a = 0; a < count; ++a) {
      const float* mask = h.mask != nullptr ? h.mask + (first + a) * h.mask_row_stride : nullptr;
      inv[a] = softmax_row<Ops>(scores + a * padded, mask, h.kv_len, padded);
    }
    // Rows past count hold the last query's scores, finite and unused.
    block_values<Ops>(h, scores, inv, first, count, padded);
  }
}

inline const AttentionKernels& make_attention_kernel_table() {
  static const AttentionKernels table{kKeyBlock, &pack_keys, &attend<AttentionOps>};
  return table;
}
