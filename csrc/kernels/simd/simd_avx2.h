// AVX2 + FMA vectors (8 floats / 4 doubles) for the kernel templates.
// Included inside an ISA namespace of a file compiled with -mavx2 -mfma;
// the including file provides <immintrin.h>.

template <typename T>
struct Vec;

namespace avx2_detail {
// Lane i is active (all bits set) when i < active.
inline __m256i lane_mask_epi32(int64_t active) {
  const __m256i lanes = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  const int clamped = static_cast<int>(active < 0 ? 0 : active > 8 ? 8 : active);
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(clamped), lanes);
}
inline __m256i lane_mask_epi64(int64_t active) {
  const __m256i lanes = _mm256_setr_epi64x(0, 1, 2, 3);
  return _mm256_cmpgt_epi64(_mm256_set1_epi64x(active), lanes);
}
}  // namespace avx2_detail

template <>
struct Vec<float> {
  using value_type = float;
  using reg = __m256;
  using mask = __m256i;
  using ireg = __m256i;
  static constexpr int kLanes = 8;
  static constexpr int kRegisters = 16;  // ymm0-15: sizes register tiles

  static reg zero() { return _mm256_setzero_ps(); }
  static reg set1(float a) { return _mm256_set1_ps(a); }
  static reg load(const float* p) { return _mm256_loadu_ps(p); }
  static void store(float* p, reg a) { _mm256_storeu_ps(p, a); }
  static reg fmadd(reg a, reg b, reg c) { return _mm256_fmadd_ps(a, b, c); }
  static reg add(reg a, reg b) { return _mm256_add_ps(a, b); }
  static mask tail_mask(int64_t active) { return avx2_detail::lane_mask_epi32(active); }
  // Lanes i with lo <= i < hi (bounds may lie outside [0, 8]).
  static mask range_mask(int64_t lo, int64_t hi) {
    return _mm256_andnot_si256(avx2_detail::lane_mask_epi32(lo), avx2_detail::lane_mask_epi32(hi));
  }
  static reg maskz_load(mask m, const float* p) { return _mm256_maskload_ps(p, m); }
  static void mask_store(float* p, mask m, reg a) { _mm256_maskstore_ps(p, m, a); }
  static ireg load_indices(const int32_t* p) {
    return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
  }
  static ireg load_indices(const uint16_t* p) {
    return _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
  }
  static ireg scale_indices(ireg i, int32_t s) {
    return _mm256_mullo_epi32(i, _mm256_set1_epi32(s));
  }
  // bfloat16 bit patterns, one per 32-bit lane (as load_indices widens them), as floats.
  static reg from_bf16_bits(ireg i) { return _mm256_castsi256_ps(_mm256_slli_epi32(i, 16)); }
  static reg gather(ireg i, const float* base) { return _mm256_i32gather_ps(base, i, 4); }
  static reg maskz_gather(mask m, ireg i, const float* base) {
    return _mm256_mask_i32gather_ps(_mm256_setzero_ps(), base, i, _mm256_castsi256_ps(m), 4);
  }
  static float reduce_add(reg a) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
  }
  static void prefetch(const void* p) { _mm_prefetch(static_cast<const char*>(p), _MM_HINT_T0); }
};

template <>
struct Vec<double> {
  using value_type = double;
  using reg = __m256d;
  using mask = __m256i;  // 64-bit lanes, for loads and stores
  using ireg = __m128i;
  static constexpr int kLanes = 4;
  static constexpr int kRegisters = 16;  // ymm0-15: sizes register tiles

  static reg zero() { return _mm256_setzero_pd(); }
  static reg set1(double a) { return _mm256_set1_pd(a); }
  static reg load(const double* p) { return _mm256_loadu_pd(p); }
  static void store(double* p, reg a) { _mm256_storeu_pd(p, a); }
  static reg fmadd(reg a, reg b, reg c) { return _mm256_fmadd_pd(a, b, c); }
  static reg add(reg a, reg b) { return _mm256_add_pd(a, b); }
  static mask tail_mask(int64_t active) { return avx2_detail::lane_mask_epi64(active); }
  // Lanes i with lo <= i < hi (bounds may lie outside [0, 4]).
  static mask range_mask(int64_t lo, int64_t hi) {
    return _mm256_andnot_si256(avx2_detail::lane_mask_epi64(lo), avx2_detail::lane_mask_epi64(hi));
  }
  static reg maskz_load(mask m, const double* p) { return _mm256_maskload_pd(p, m); }
  static void mask_store(double* p, mask m, reg a) { _mm256_maskstore_pd(p, m, a); }
  static ireg load_indices(const int32_t* p) {
    return _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
  }
  static ireg load_indices(const uint16_t* p) {
    return _mm_cvtepu16_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p)));
  }
  static ireg scale_indices(ireg i, int32_t s) { return _mm_mullo_epi32(i, _mm_set1_epi32(s)); }
  static reg gather(ireg i, const double* base) { return _mm256_i32gather_pd(base, i, 8); }
  static reg maskz_gather(mask m, ireg i, const double* base) {
    return _mm256_mask_i32gather_pd(_mm256_setzero_pd(), base, i, _mm256_castsi256_pd(m), 8);
  }
  static double reduce_add(reg a) {
    __m128d s = _mm_add_pd(_mm256_castpd256_pd128(a), _mm256_extractf128_pd(a, 1));
    s = _mm_add_sd(s, _mm_unpackhi_pd(s, s));
    return _mm_cvtsd_f64(s);
  }
  static void prefetch(const void* p) { _mm_prefetch(static_cast<const char*>(p), _MM_HINT_T0); }
};
