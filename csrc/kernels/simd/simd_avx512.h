// AVX-512 vectors (16 floats / 8 doubles) for the kernel templates.
// Included inside an ISA namespace of a file compiled with -mavx512f and
// friends; the including file provides <immintrin.h>.

template <typename T>
struct Vec;

namespace avx512_detail {
// Bit i set for lo <= i < hi, i < Lanes.
template <typename Mask, int Lanes>
inline Mask range_mask(int64_t lo, int64_t hi) {
  const auto clamp = [](int64_t v) {
    return static_cast<unsigned>(v < 0 ? 0 : v > Lanes ? Lanes : v);
  };
  const uint32_t below_hi = (1u << clamp(hi)) - 1u, below_lo = (1u << clamp(lo)) - 1u;
  return static_cast<Mask>(below_hi & ~below_lo);
}
}  // namespace avx512_detail

template <>
struct Vec<float> {
  using value_type = float;
  using reg = __m512;
  using mask = __mmask16;
  using ireg = __m512i;
  static constexpr int kLanes = 16;
  static constexpr int kRegisters = 32;  // zmm0-31: sizes register tiles

  static reg zero() { return _mm512_setzero_ps(); }
  static reg set1(float a) { return _mm512_set1_ps(a); }
  static reg load(const float* p) { return _mm512_loadu_ps(p); }
  static void store(float* p, reg a) { _mm512_storeu_ps(p, a); }
  static reg fmadd(reg a, reg b, reg c) { return _mm512_fmadd_ps(a, b, c); }
  static reg add(reg a, reg b) { return _mm512_add_ps(a, b); }
  static mask tail_mask(int64_t active) {
    return active >= 16 ? mask(0xFFFF) : static_cast<mask>((1u << active) - 1u);
  }
  // Lanes i with lo <= i < hi (bounds may lie outside [0, 16]).
  static mask range_mask(int64_t lo, int64_t hi) {
    return avx512_detail::range_mask<mask, 16>(lo, hi);
  }
  static reg maskz_load(mask m, const float* p) { return _mm512_maskz_loadu_ps(m, p); }
  static void mask_store(float* p, mask m, reg a) { _mm512_mask_storeu_ps(p, m, a); }
  static ireg load_indices(const int32_t* p) { return _mm512_loadu_si512(p); }
  static ireg load_indices(const uint16_t* p) {
    return _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
  }
  static ireg scale_indices(ireg i, int32_t s) {
    return _mm512_mullo_epi32(i, _mm512_set1_epi32(s));
  }
  // bfloat16 bit patterns, one per 32-bit lane (as load_indices widens them), as floats.
  static reg from_bf16_bits(ireg i) { return _mm512_castsi512_ps(_mm512_slli_epi32(i, 16)); }
  static reg gather(ireg i, const float* base) { return _mm512_i32gather_ps(i, base, 4); }
  static reg maskz_gather(mask m, ireg i, const float* base) {
    return _mm512_mask_i32gather_ps(_mm512_setzero_ps(), m, i, base, 4);
  }
  static float reduce_add(reg a) { return _mm512_reduce_add_ps(a); }
  static void prefetch(const void* p) { _mm_prefetch(static_cast<const char*>(p), _MM_HINT_T0); }
};

template <>
struct Vec<double> {
  using value_type = double;
  using reg = __m512d;
  using mask = __mmask8;
  using ireg = __m256i;
  static constexpr int kLanes = 8;
  static constexpr int kRegisters = 32;  // zmm0-31: sizes register tiles

  static reg zero() { return _mm512_setzero_pd(); }
  static reg set1(double a) { return _mm512_set1_pd(a); }
  static reg load(const double* p) { return _mm512_loadu_pd(p); }
  static void store(double* p, reg a) { _mm512_storeu_pd(p, a); }
  static reg fmadd(reg a, reg b, reg c) { return _mm512_fmadd_pd(a, b, c); }
  static reg add(reg a, reg b) { return _mm512_add_pd(a, b); }
  static mask tail_mask(int64_t active) {
    return active >= 8 ? mask(0xFF) : static_cast<mask>((1u << active) - 1u);
  }
  // Lanes i with lo <= i < hi (bounds may lie outside [0, 8]).
  static mask range_mask(int64_t lo, int64_t hi) {
    return avx512_detail::range_mask<mask, 8>(lo, hi);
  }
  static reg maskz_load(mask m, const double* p) { return _mm512_maskz_loadu_pd(m, p); }
  static void mask_store(double* p, mask m, reg a) { _mm512_mask_storeu_pd(p, m, a); }
  static ireg load_indices(const int32_t* p) {
    return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
  }
  static ireg load_indices(const uint16_t* p) {
    return _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
  }
  static ireg scale_indices(ireg i, int32_t s) {
    return _mm256_mullo_epi32(i, _mm256_set1_epi32(s));
  }
  static reg gather(ireg i, const double* base) { return _mm512_i32gather_pd(i, base, 8); }
  static reg maskz_gather(mask m, ireg i, const double* base) {
    return _mm512_mask_i32gather_pd(_mm512_setzero_pd(), m, i, base, 8);
  }
  static double reduce_add(reg a) { return _mm512_reduce_add_pd(a); }
  static void prefetch(const void* p) { _mm_prefetch(static_cast<const char*>(p), _MM_HINT_T0); }
};
