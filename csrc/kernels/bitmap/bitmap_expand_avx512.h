// BitExpand<T> for AVX-512: L bits of the bitmap (L = 16 floats or 8
// doubles) are the mask of an expand load, which reads exactly
// popcount(bits) packed values and places them in the lanes whose bit is set
// (zeros elsewhere). It never reads past the last value it places, so Safe
// (see bitmap_expand_avx2.h) changes nothing here.
// Included inside an ISA namespace after simd_avx512.h; the including file
// provides <immintrin.h>.

template <typename T>
struct BitExpand;

template <>
struct BitExpand<float> {
  template <bool Safe>
  static __m512 load(unsigned bits, const float* p) {
    return _mm512_maskz_expandloadu_ps(static_cast<__mmask16>(bits), p);
  }
  // acc + expanded * x in lanes whose bit is set; other lanes keep acc.
  template <bool Safe>
  static __m512 fmadd(unsigned bits, const float* p, __m512 x, __m512 acc) {
    const __mmask16 k = static_cast<__mmask16>(bits);
    return _mm512_mask3_fmadd_ps(_mm512_maskz_expandloadu_ps(k, p), x, acc, k);
  }
  // The same sum the other way round (the compress walk, core/isa.h): the
  // lanes of x whose bit is set move to the front, zeros behind them, to meet
  // the next 16 packed values (a plain load; see chunk_fmadd).
  static constexpr bool kCompressWalk = true;
  static __m512 compress(unsigned bits, __m512 x) {
    return _mm512_maskz_compress_ps(static_cast<__mmask16>(bits), x);
  }
};

template <>
struct BitExpand<double> {
  template <bool Safe>
  static __m512d load(unsigned bits, const double* p) {
    return _mm512_maskz_expandloadu_pd(static_cast<__mmask8>(bits), p);
  }
  template <bool Safe>
  static __m512d fmadd(unsigned bits, const double* p, __m512d x, __m512d acc) {
    const __mmask8 k = static_cast<__mmask8>(bits);
    return _mm512_mask3_fmadd_pd(_mm512_maskz_expandloadu_pd(k, p), x, acc, k);
  }
  static constexpr bool kCompressWalk = true;
  static __m512d compress(unsigned bits, __m512d x) {
    return _mm512_maskz_compress_pd(static_cast<__mmask8>(bits), x);
  }
};

#if defined(__AVX512VBMI2__) && defined(__BMI2__)
// bfloat16 values, where the CPU has VBMI2 (bitmap_avx512ext.cpp): one word
// expand load places value k straight into the upper half of lane i's float
// (k = set bits below bit i). Its mask has bit 2i + 1 set for each bit i of
// the chunk (pdep), so the lower halves and every clear lane are zero and
// lane i is exactly the widened value. No table, and one vector instruction
// per 16 values, where widening after the expand would take two more.
template <>
struct BitExpand<bfloat16_t> {
  static __mmask32 upper_halves(unsigned bits) {
    return static_cast<__mmask32>(_pdep_u32(bits, 0xaaaaaaaau));
  }
  template <bool Safe>
  static __m512 load(unsigned bits, const bfloat16_t* p) {
    return _mm512_castsi512_ps(_mm512_maskz_expandloadu_epi16(upper_halves(bits), p));
  }
  template <bool Safe>
  static __m512 fmadd(unsigned bits, const bfloat16_t* p, __m512 x, __m512 acc) {
    return _mm512_mask3_fmadd_ps(load<Safe>(bits, p), x, acc, static_cast<__mmask16>(bits));
  }
};
#endif
