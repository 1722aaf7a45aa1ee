// Stored values of a sparse matrix read in its kernels' compute type: float
// and double as they are, bfloat16 widened as loaded (a 16-bit shift), so a
// bfloat16 matrix streams half the value bytes of a float one. Included inside
// an ISA namespace by the kernel templates (csr_kernels.inl, bsr_kernels.inl)
// after the matching simd_<isa>.h; it must not include headers itself.

// Stored value j widened to the compute type (bfloat16 by a 16-bit shift).
template <typename W>
inline compute_t<W> stored_value(const W* vals, int64_t j) {
  return StoredValue<W>::widen(vals[j]);
}

// A vector of stored values from p, widened to the compute type.
template <typename W>
inline typename Vec<compute_t<W>>::reg load_stored(const W* p) {
  using V = Vec<compute_t<W>>;
  if constexpr (std::is_same_v<W, compute_t<W>>)
    return V::load(p);
  else
    return V::from_bf16_bits(V::load_indices(reinterpret_cast<const uint16_t*>(p)));
}

// The first `active` stored values from p (fewer than a vector), the other lanes zero.
template <typename W>
inline typename Vec<compute_t<W>>::reg load_stored_tail(const W* p, int64_t active) {
  using V = Vec<compute_t<W>>;
  if constexpr (std::is_same_v<W, compute_t<W>>) {
    return V::maskz_load(V::tail_mask(active), p);
  } else {
    W padded[V::kLanes] = {};
    for (int64_t t = 0; t < active; ++t) padded[t] = p[t];
    return load_stored(padded);
  }
}

// n stored values from p into out, widened (out: n compute-type values).
template <typename W>
inline void widen_stored(const W* p, int64_t n, compute_t<W>* out) {
  using V = Vec<compute_t<W>>;
  int64_t i = 0;
  for (; i + V::kLanes <= n; i += V::kLanes) V::store(out + i, load_stored(p + i));
  for (; i < n; ++i) out[i] = stored_value(p, i);
}
