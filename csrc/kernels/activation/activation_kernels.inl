// Float32 activation epilogues written once against an Ops trait (kLanes,
// and the lane-wise operations used below), which the including ISA file
// defines first. Included inside an ISA namespace; it must not include headers.

// exp(x), relative error about 1e-7 (Cephes' expf polynomial). Inputs are
// clamped to [-87, 88], where 2^n stays a normal float; the activations only
// need exp to saturate towards 0 or a large value there.
template <typename Ops>
typename Ops::reg vector_exp(typename Ops::reg x) {
  using R = typename Ops::reg;
  x = Ops::min(Ops::max(x, Ops::set1(-87.0f)), Ops::set1(88.0f));
  const R n = Ops::round(Ops::mul(x, Ops::set1(1.44269504088896341f)));
  R r = Ops::fnmadd(n, Ops::set1(0.693359375f), x);  // ln 2 in two parts, for an exact r
  r = Ops::fnmadd(n, Ops::set1(-2.12194440e-4f), r);
  R p = Ops::set1(1.9875691500e-4f);
  p = Ops::fmadd(p, r, Ops::set1(1.3981999507e-3f));
  p = Ops::fmadd(p, r, Ops::set1(8.3334519073e-3f));
  p = Ops::fmadd(p, r, Ops::set1(4.1665795894e-2f));
  p = Ops::fmadd(p, r, Ops::set1(1.6666665459e-1f));
  p = Ops::fmadd(p, r, Ops::set1(5.0000001201e-1f));
  p = Ops::fmadd(p, Ops::mul(r, r), Ops::add(r, Ops::set1(1.0f)));
  return Ops::mul(p, Ops::pow2(n));
}

// 1 / d for d >= 1: the hardware estimate refined by one Newton step (relative
// error about 1e-7), cheaper than a division.
template <typename Ops>
typename Ops::reg reciprocal(typename Ops::reg d) {
  const typename Ops::reg r = Ops::rcp(d);
  return Ops::mul(r, Ops::fnmadd(d, r, Ops::set1(2.0f)));
}

// GELU, erf form: 0.5 x erfc(-x / sqrt 2). erfc(|z|) comes from Abramowitz
// and Stegun 7.1.26; for x >= 0, 1 + erf(z) = 2 - erfc(z).
template <typename Ops>
typename Ops::reg vector_gelu(typename Ops::reg x) {
  using R = typename Ops::reg;
  // |z| capped at 10, where erfc is below float's range anyway: keeps 1 / (1 + p z)
  // finite for infinite x (a NaN x stays NaN through half_x below).
  const R z = Ops::min(Ops::mul(Ops::abs(x), Ops::set1(0.70710678118654752f)), Ops::set1(10.0f));
  const R t = reciprocal<Ops>(Ops::fmadd(z, Ops::set1(0.3275911f), Ops::set1(1.0f)));
  R poly = Ops::set1(1.061405429f);
  poly = Ops::fmadd(poly, t, Ops::set1(-1.453152027f));
  poly = Ops::fmadd(poly, t, Ops::set1(1.421413741f));
  poly = Ops::fmadd(poly, t, Ops::set1(-0.284496736f));
  poly = Ops::fmadd(poly, t, Ops::set1(0.254829592f));
  // erfc is exactly 0 at the cap, as std::erfc is in float: x = -inf then gives
  // -inf * 0 = NaN, as torch's GELU does, and very negative x gives -0.
  const R erfc_abs = Ops::select_lt(
      z, Ops::set1(10.0f), Ops::mul(Ops::mul(poly, t), vector_exp<Ops>(Ops::mul(Ops::neg(z), z))),
      Ops::zero());
  const R half_x = Ops::mul(x, Ops::set1(0.5f));
  const R factor = Ops::select_nonneg(x, Ops::sub(Ops::set1(2.0f), erfc_abs), erfc_abs);
  return Ops::mul(half_x, factor);
}

// GELU, tanh form: 0.5 x (1 + tanh(u)) = x / (1 + exp(-2u)).
template <typename Ops>
typename Ops::reg vector_gelu_tanh(typename Ops::reg x) {
  using R = typename Ops::reg;
  const R x3 = Ops::mul(Ops::mul(x, x), x);
  const R u = Ops::mul(Ops::fmadd(x3, Ops::set1(0.044715f), x), Ops::set1(0.7978845608028654f));
  const R minus_2u = Ops::mul(u, Ops::set1(-2.0f));
  // exp overflows to +inf past 88, where vector_exp saturates: then x = -inf gives
  // -inf / inf = NaN, as torch's GELU does, and very negative x gives -0.
  const R e = Ops::select_lt(minus_2u, Ops::set1(88.0f), vector_exp<Ops>(minus_2u),
                             Ops::set1(std::numeric_limits<float>::infinity()));
  return Ops::div(x, Ops::add(e, Ops::set1(1.0f)));  // exact x where e underflows
}

template <typename Ops, typename Fn>
void apply_rows(float* y, int64_t rows, int64_t cols, int64_t ld, Fn fn) {
  constexpr int64_t L = Ops::kLanes;
  for (int64_t i = 0; i < rows; ++i) {
    float* row = y + i * ld;
    int64_t j = 0;
    for (; j + L <= cols; j += L) Ops::store(row + j, fn(Ops::load(row + j)));
    if (j < cols) {  // masked lanes compute on zeros and are not stored
      const typename Ops::mask tail = Ops::tail_mask(cols - j);
      Ops::mask_store(row + j, tail, fn(Ops::maskz_load(tail, row + j)));
    }
  }
}

inline void apply_activation_float(float* y, int64_t rows, int64_t cols, int64_t ld,
                                   Activation act) {
  using R = typename FloatOps::reg;
  switch (act) {
    case Activation::Relu:
      return apply_rows<FloatOps>(y, rows, cols, ld,
                                  [](R x) { return FloatOps::max(FloatOps::zero(), x); });
    case Activation::Gelu:
      return apply_rows<FloatOps>(y, rows, cols, ld, [](R x) { return vector_gelu<FloatOps>(x); });
    case Activation::GeluTanh:
      return apply_rows<FloatOps>(y, rows, cols, ld,
                                  [](R x) { return vector_gelu_tanh<FloatOps>(x); });
    case Activation::None:
      break;
  }
}

template <typename T>
const ActivationKernels<T>& activation_kernel_table();

template <>
const ActivationKernels<float>& activation_kernel_table<float>() {
  static const ActivationKernels<float> table{&apply_activation_float};
  return table;
}

template <>
const ActivationKernels<double>& activation_kernel_table<double>() {
  static const ActivationKernels<double> table{&scalar::apply_activation<double>};
  return table;
}
