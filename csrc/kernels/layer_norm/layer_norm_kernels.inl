// Residual add + LayerNorm written once against Vec<T> (kernels/simd/). Included
// inside an ISA namespace after the matching simd_<isa>.h; it must not include
// headers itself.

// Vectors per step of the reductions: independent partial sums that keep
// enough adds in flight to cover their latency.
constexpr int kLayerNormSums = 4;

// Calls step(offset, u) for every whole vector of a row of n, u = its partial sum
// (0 to kLayerNormSums - 1, a constant so the sums stay in registers); returns the
// offset of the partial vector that remains (n when none does).
template <typename T, typename Step>
inline int64_t for_whole_vectors(int64_t n, const Step& step) {
  constexpr int64_t L = Vec<T>::kLanes;
  int64_t j = 0;
  for (; j + kLayerNormSums * L <= n; j += kLayerNormSums * L) {
    step(j, std::integral_constant<int, 0>{});
    step(j + L, std::integral_constant<int, 1>{});
    step(j + 2 * L, std::integral_constant<int, 2>{});
    step(j + 3 * L, std::integral_constant<int, 3>{});
  }
  for (; j + L <= n; j += L) step(j, std::integral_constant<int, 0>{});
  return j;
}

template <typename T>
inline T reduce_sums(const typename Vec<T>::reg (&sums)[kLayerNormSums]) {
  using V = Vec<T>;
  return V::reduce_add(V::add(V::add(sums[0], sums[1]), V::add(sums[2], sums[3])));
}

template <typename T, bool HasResidual, bool HasGamma, bool HasBeta>
void layer_norm_rows_impl(const LayerNormArgs<T>& a, int64_t row_begin, int64_t row_end) {
  using V = Vec<T>;
  using R = typename V::reg;
  const int64_t n = a.cols;
  // The pass-3 transform of the vector s at offset j: (s - mean) * inv_std, then
  // gamma and beta, which load reads there (whole or masked; a null one is never
  // offset). Subtracting first keeps a large mean from cancelling precision away.
  const auto normalise = [&](R s, R minus_mean, R scale, int64_t j, auto load) {
    const R d = V::add(s, minus_mean);
    if constexpr (HasGamma && HasBeta)
      return V::fmadd(V::fmadd(d, scale, V::zero()), load(a.gamma + j), load(a.beta + j));
    else if constexpr (HasGamma)
      return V::fmadd(V::fmadd(d, scale, V::zero()), load(a.gamma + j), V::zero());
    else if constexpr (HasBeta)
      return V::fmadd(d, scale, load(a.beta + j));
    else
      return V::fmadd(d, scale, V::zero());
  };
  for (int64_t i = row_begin; i < row_end; ++i) {
    const T* x = a.x + i * a.x_row_stride;
    const T* residual = HasResidual ? a.residual + i * a.residual_row_stride : nullptr;
    T* out = a.out + i * a.out_row_stride;
    // Pass 1: s = x + residual into out, and its sum.
    R sums[kLayerNormSums] = {V::zero(), V::zero(), V::zero(), V::zero()};
    const int64_t tail = for_whole_vectors<T>(n, [&](int64_t j, auto u) {
      R s = V::load(x + j);
      if constexpr (HasResidual) s = V::add(s, V::load(residual + j));
      V::store(out + j, s);
      sums[u] = V::add(sums[u], s);
    });
    const typename V::mask m = V::tail_mask(n - tail);
    if (tail < n) {  // masked-off lanes load 0 and add nothing
      R s = V::maskz_load(m, x + tail);
      if constexpr (HasResidual) s = V::add(s, V::maskz_load(m, residual + tail));
      V::mask_store(out + tail, m, s);
      sums[0] = V::add(sums[0], s);
    }
    const T mean = reduce_sums<T>(sums) / static_cast<T>(n);
    // Pass 2: the variance about the mean, from the row now in L1.
    const R minus_mean = V::set1(-mean);
    R squares[kLayerNormSums] = {V::zero(), V::zero(), V::zero(), V::zero()};
    for_whole_vectors<T>(n, [&](int64_t j, auto u) {
      const R d = V::add(V::load(out + j), minus_mean);
      squares[u] = V::fmadd(d, d, squares[u]);
    });
    T tail_squares = T(0);  // lane by lane: a masked-off lane would add mean^2
    for (int64_t j = tail; j < n; ++j) tail_squares += (out[j] - mean) * (out[j] - mean);
    const T variance = (reduce_sums<T>(squares) + tail_squares) / static_cast<T>(n);
    const T inv_std = T(1) / std::sqrt(variance + a.eps);
    // Pass 3: (s - mean) * inv_std * gamma + beta.
    const R scale = V::set1(inv_std);
    const auto whole = [](const T* p) { return V::load(p); };
    for_whole_vectors<T>(n, [&](int64_t j, auto) {
      V::store(out + j, normalise(V::load(out + j), minus_mean, scale, j, whole));
    });
    if (tail < n) {
      const auto partial = [m](const T* p) { return V::maskz_load(m, p); };
      V::mask_store(out + tail, m,
                    normalise(V::maskz_load(m, out + tail), minus_mean, scale, tail, partial));
    }
  }
}

template <typename T>
void layer_norm_rows(const LayerNormArgs<T>& a, int64_t row_begin, int64_t row_end) {
  const bool residual = a.residual != nullptr, gamma = a.gamma != nullptr, beta = a.beta != nullptr;
  if (residual && gamma && beta)
    layer_norm_rows_impl<T, true, true, true>(a, row_begin, row_end);
  else if (gamma && beta)
    layer_norm_rows_impl<T, false, true, true>(a, row_begin, row_end);
  else if (residual && gamma)
    layer_norm_rows_impl<T, true, true, false>(a, row_begin, row_end);
  else if (residual && beta)
    layer_norm_rows_impl<T, true, false, true>(a, row_begin, row_end);
  else if (residual)
    layer_norm_rows_impl<T, true, false, false>(a, row_begin, row_end);
  else if (gamma)
    layer_norm_rows_impl<T, false, true, false>(a, row_begin, row_end);
  else if (beta)
    layer_norm_rows_impl<T, false, false, true>(a, row_begin, row_end);
  else
    layer_norm_rows_impl<T, false, false, false>(a, row_begin, row_end);
}

template <typename T>
const LayerNormKernels<T>& layer_norm_kernel_table() {
  static const LayerNormKernels<T> table{&layer_norm_rows<T>};
  return table;
}

template const LayerNormKernels<float>& layer_norm_kernel_table<float>();
template const LayerNormKernels<double>& layer_norm_kernel_table<double>();
