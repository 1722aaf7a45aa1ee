// Float32 activation epilogues written once against an Ops trait (kLanes,
// and the lane-wise operations used below), which the including ISA file
// defines first. Included inside an ISA namespace; it must not include headers.

// exp(x), relative error about 1e-7 (Cephes' expf polynomial). Inputs are
// clamped to [-87, 88], where 2^n stays a normal float; the activations only
// need exp to saturate towards 0 or a large value there.
template <typename Ops>
SPARSEGEMM_ALWAYS_INLINE typename Ops::reg vector_exp(typename Ops::reg x) {
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

// GELU, erf form: x Phi(x), with Phi(x) = 0.5 + s P(s^2) / Q(s^2) for s = x
// clamped to [-kGeluClamp, kGeluClamp], a rational fit of degree (5, 5) in s^2
// (absolute error of Phi below 5e-9 in float64; tools/fit_gelu.py). Below
// -kGeluClamp, Phi(x) < 6e-8 and is taken as 0. About 20 vector operations and
// no exp: on Zen 3 (AVX2, one thread, 1024 x 1536) 865 us against 1802 us for
// the exp and Abramowitz-Stegun erfc it replaced. Float32 rounding in P and Q
// leaves an absolute error in GELU of up to about 1e-6, largest for 4 < |x| <
// 5.3 (tests check every float there).
constexpr float kGeluClamp = 5.3f;
template <typename Ops>
SPARSEGEMM_ALWAYS_INLINE typename Ops::reg vector_gelu(typename Ops::reg x) {
  using R = typename Ops::reg;
  const R s = Ops::min(Ops::max(x, Ops::set1(-kGeluClamp)), Ops::set1(kGeluClamp));
  const R t = Ops::mul(s, s);
  R p = Ops::set1(2.405036525487958e-08f);
  p = Ops::fmadd(p, t, Ops::set1(6.379064870998263e-06f));
  p = Ops::fmadd(p, t, Ops::set1(0.00016033410793170333f));
  p = Ops::fmadd(p, t, Ops::set1(0.004627991002053022f));
  p = Ops::fmadd(p, t, Ops::set1(0.0329357385635376f));
  p = Ops::fmadd(p, t, Ops::set1(0.3989422619342804f));
  R q = Ops::set1(1.2371705224722973e-06f);
  q = Ops::fmadd(q, t, Ops::set1(7.135223131626844e-05f));
  q = Ops::fmadd(q, t, Ops::set1(0.001836569281294942f));
  q = Ops::fmadd(q, t, Ops::set1(0.028138797730207443f));
  q = Ops::fmadd(q, t, Ops::set1(0.24922387301921844f));
  q = Ops::fmadd(q, t, Ops::set1(1.0f));
  const R phi = Ops::fmadd(s, Ops::div(p, q), Ops::set1(0.5f));
  // Phi is exactly 0 below the clamp (and for NaN, which the product keeps): x =
  // -inf then gives -inf * 0 = NaN, as torch's GELU does, and very negative x -0.
  return Ops::mul(x, Ops::select_lt(Ops::set1(-kGeluClamp), x, phi, Ops::zero()));
}

// GELU, tanh form: 0.5 x (1 + tanh(u)) = x / (1 + exp(-2u)).
template <typename Ops>
SPARSEGEMM_ALWAYS_INLINE typename Ops::reg vector_gelu_tanh(typename Ops::reg x) {
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

// Four vectors per step: the GELU forms are long dependency chains (about 60
// instructions), and four independent ones keep the FP pipes busy where one
// left them mostly waiting. A y whose rows are contiguous is one long row, so a
// narrow block (the transpose's 8-column tiles) still gets four at a time.
// On Zen 3 (AVX2, one thread, 1024 x 1536) the exp-based GELU ran 1.3x faster.
template <typename Ops, typename Fn>
void apply_rows(float* y, int64_t rows, int64_t cols, int64_t ld, Fn fn) {
  constexpr int64_t L = Ops::kLanes;
  if (ld == cols && rows > 1) {
    cols *= rows;
    rows = 1;
  }
  for (int64_t i = 0; i < rows; ++i) {
    float* row = y + i * ld;
    int64_t j = 0;
    for (; j + 4 * L <= cols; j += 4 * L) {
      const typename Ops::reg a = fn(Ops::load(row + j)), b = fn(Ops::load(row + j + L)),
                              c = fn(Ops::load(row + j + 2 * L)),
                              d = fn(Ops::load(row + j + 3 * L));
      Ops::store(row + j, a);
      Ops::store(row + j + L, b);
      Ops::store(row + j + 2 * L, c);
      Ops::store(row + j + 3 * L, d);
    }
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
