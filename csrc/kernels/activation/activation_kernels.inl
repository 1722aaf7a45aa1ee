// Float32 activation epilogues written once against an Ops trait (kLanes,
// and the lane-wise operations used below), which the including ISA file
// defines first. Included inside an ISA namespace; it must not include headers.

// Both GELU forms are x F(v) for a CDF F of an argument v(x) (tools/fit_gelu.py):
// F is evaluated as 0.5 + s P(s^2) / Q(s^2) for s = v clamped to [-clamp,
// clamp], a rational fit (coefficients from the highest degree down, Q(0) = 1),
// and taken as 0 below -clamp, where F is under 6e-8. No exp and about 20
// vector operations: on Zen 3 (AVX2, one thread, 128 x 3072, fresh input each
// call) the erf form took 229 us against 640 us with exp and the
// Abramowitz-Stegun erfc it replaced, the tanh form 275 us against 335 us with
// exp and a division. Float32 rounding in P and Q leaves an absolute error in
// GELU of up to about 1e-6, largest for 4 < |x| < 5.5 (tests check every float
// there).
template <typename Ops, size_t N>
SPARSEGEMM_ALWAYS_INLINE typename Ops::reg horner(typename Ops::reg t, const float (&c)[N]) {
  typename Ops::reg acc = Ops::set1(c[0]);
  for (size_t i = 1; i < N; ++i) acc = Ops::fmadd(acc, t, Ops::set1(c[i]));
  return acc;
}

template <typename Ops, size_t NP, size_t NQ>
SPARSEGEMM_ALWAYS_INLINE typename Ops::reg x_times_cdf(typename Ops::reg x, typename Ops::reg v,
                                                       float clamp, const float (&p)[NP],
                                                       const float (&q)[NQ]) {
  using R = typename Ops::reg;
  const R s = Ops::min(Ops::max(v, Ops::set1(-clamp)), Ops::set1(clamp));
  const R t = Ops::mul(s, s);
  const R cdf = Ops::fmadd(s, Ops::div(horner<Ops>(t, p), horner<Ops>(t, q)), Ops::set1(0.5f));
  // F is exactly 0 below the clamp and for a NaN v, which the product keeps: x =
  // -inf then gives -inf * 0 = NaN, as torch's GELU does, and very negative x -0.
  return Ops::mul(x, Ops::select_lt(Ops::set1(-clamp), v, cdf, Ops::zero()));
}

// Erf form: F = Phi, the normal CDF, v = x; degree (5, 5), |error of Phi| < 5e-9.
constexpr float kGeluErfClamp = 5.3f;
constexpr float kGeluErfP[] = {2.405036525487958e-08f,  6.379064870998263e-06f,
                               0.00016033410793170333f, 0.004627991002053022f,
                               0.0329357385635376f,     0.3989422619342804f};
constexpr float kGeluErfQ[] = {1.2371705224722973e-06f, 7.135223131626844e-05f,
                               0.001836569281294942f,   0.028138797730207443f,
                               0.24922387301921844f,    1.0f};

template <typename Ops>
SPARSEGEMM_ALWAYS_INLINE typename Ops::reg vector_gelu(typename Ops::reg x) {
  return x_times_cdf<Ops>(x, x, kGeluErfClamp, kGeluErfP, kGeluErfQ);
}

// Tanh form: 0.5 (1 + tanh(u)) is the logistic function of v = 2u, u =
// sqrt(2 / pi) (x + 0.044715 x^3); degree (4, 4), |error of F| < 3e-8.
constexpr float kGeluTanhClamp = 17.0f;
constexpr float kGeluTanhP[] = {1.465824510382685e-11f, 8.51515764566102e-08f,
                                5.5746717407600954e-05f, 0.008401122875511646f, 0.25f};
constexpr float kGeluTanhQ[] = {3.3016904765759136e-09f, 5.3183880481810775e-06f,
                                0.0016344747273251414f, 0.11693781614303589f, 1.0f};

template <typename Ops>
SPARSEGEMM_ALWAYS_INLINE typename Ops::reg vector_gelu_tanh(typename Ops::reg x) {
  constexpr float kTwoSqrtTwoOverPi = 1.5957691216057308f;  // 2 sqrt(2 / pi)
  const typename Ops::reg v =
      Ops::mul(x, Ops::fmadd(Ops::mul(x, x), Ops::set1(kTwoSqrtTwoOverPi * 0.044715f),
                             Ops::set1(kTwoSqrtTwoOverPi)));
  return x_times_cdf<Ops>(x, v, kGeluTanhClamp, kGeluTanhP, kGeluTanhQ);
}

// Four vectors per step: the GELU forms are long dependency chains (about 20
// instructions), and four independent ones keep the FP pipes busy where one
// left them mostly waiting. A y whose rows are contiguous is one long row, so a
// narrow block (the transpose's 8-column tiles) still gets four at a time.
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
