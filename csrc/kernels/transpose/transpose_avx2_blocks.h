// 8x8 float and 4x4 double register transposes with AVX (256-bit) shuffles,
// for the avx2 and avx512 levels. Included inside an ISA namespace after
// <immintrin.h>; it must not include headers itself.

template <typename T>
struct Block;

template <>
struct Block<float> {
  static constexpr int64_t kSize = 8;
  using Next = void;
  static void transpose(const float* src, int64_t src_ld, float* dst, int64_t dst_ld) {
    __m256 r[8], t[8], s[8];
    for (int k = 0; k < 8; ++k) r[k] = _mm256_loadu_ps(src + k * src_ld);
    for (int k = 0; k < 8; k += 2) {
      t[k] = _mm256_unpacklo_ps(r[k], r[k + 1]);  // a0 b0 a1 b1 | a4 b4 a5 b5
      t[k + 1] = _mm256_unpackhi_ps(r[k], r[k + 1]);
    }
    for (int k = 0; k < 8; k += 4) {
      s[k] = _mm256_shuffle_ps(t[k], t[k + 2], 0x44);  // a0 b0 c0 d0 | a4 b4 c4 d4
      s[k + 1] = _mm256_shuffle_ps(t[k], t[k + 2], 0xEE);
      s[k + 2] = _mm256_shuffle_ps(t[k + 1], t[k + 3], 0x44);
      s[k + 3] = _mm256_shuffle_ps(t[k + 1], t[k + 3], 0xEE);
    }
    for (int k = 0; k < 4; ++k) {
      _mm256_storeu_ps(dst + k * dst_ld, _mm256_permute2f128_ps(s[k], s[k + 4], 0x20));
      _mm256_storeu_ps(dst + (k + 4) * dst_ld, _mm256_permute2f128_ps(s[k], s[k + 4], 0x31));
    }
  }
};

template <>
struct Block<double> {
  static constexpr int64_t kSize = 4;
  using Next = void;
  static void transpose(const double* src, int64_t src_ld, double* dst, int64_t dst_ld) {
    __m256d r[4];
    for (int k = 0; k < 4; ++k) r[k] = _mm256_loadu_pd(src + k * src_ld);
    const __m256d t0 = _mm256_unpacklo_pd(r[0], r[1]);  // a0 b0 | a2 b2
    const __m256d t1 = _mm256_unpackhi_pd(r[0], r[1]);  // a1 b1 | a3 b3
    const __m256d t2 = _mm256_unpacklo_pd(r[2], r[3]);
    const __m256d t3 = _mm256_unpackhi_pd(r[2], r[3]);
    _mm256_storeu_pd(dst, _mm256_permute2f128_pd(t0, t2, 0x20));
    _mm256_storeu_pd(dst + dst_ld, _mm256_permute2f128_pd(t1, t3, 0x20));
    _mm256_storeu_pd(dst + 2 * dst_ld, _mm256_permute2f128_pd(t0, t2, 0x31));
    _mm256_storeu_pd(dst + 3 * dst_ld, _mm256_permute2f128_pd(t1, t3, 0x31));
  }
};
