// Int8Expand for AVX2: 16 bits of the bitmap and the packed int8 values
// behind them become 16 int16 lanes (zeros where a bit is clear), ready for
// _mm256_madd_epi16. Per byte of the bitmap, a 256-entry table gives the
// pshufb control that moves the next popcount(byte) packed values into the
// lanes whose bit is set (0x80, i.e. zero, elsewhere); two such bytes are
// joined and sign-extended to int16. madd_epi16 on int16 is exact here
// (|q * x| <= 127 * 127); maddubs would saturate.
//
// With Safe = false the 8 bytes at the read position are loaded whole, which
// may read up to 7 bytes past the last value this call uses: the caller
// guarantees they lie inside the values array. With Safe = true only
// popcount(bits) bytes are read.
// Included inside an ISA namespace of a file compiled with at least -mavx2;
// the including file provides <immintrin.h>.

namespace int8_bitmap_detail {

struct ShuffleTable {
  alignas(64) uint8_t control[256][8];
};

constexpr ShuffleTable make_shuffle_table() {
  ShuffleTable t{};
  for (int m = 0; m < 256; ++m) {
    int k = 0;
    for (int i = 0; i < 8; ++i) t.control[m][i] = ((m >> i) & 1) ? static_cast<uint8_t>(k++) : 0x80;
  }
  return t;
}

inline constexpr ShuffleTable kShuffle = make_shuffle_table();

}  // namespace int8_bitmap_detail

struct Int8Expand {
  static constexpr bool kVector = true;
  // Bytes one packed load may read from its position.
  static constexpr int64_t kPackedBytes = 8;
  using reg = __m256i;  // 16 int16 lanes (inputs) or 8 int32 lanes (sums)
  static constexpr int kLanes16 = 16;

  static reg zero() { return _mm256_setzero_si256(); }
  static reg load(const int16_t* p) {
    return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
  }
  static void store(int16_t* p, reg a) { _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), a); }
  static void prefetch(const int8_t* p) {
    _mm_prefetch(reinterpret_cast<const char*>(p), _MM_HINT_T0);
  }
  // acc + pairwise sums of w * x (int16 x int16 -> int32, exact).
  static reg madd_add(reg w, reg x, reg acc) {
    return _mm256_add_epi32(acc, _mm256_madd_epi16(w, x));
  }
  static int32_t reduce_add(reg a) {
    __m128i s = _mm_add_epi32(_mm256_castsi256_si128(a), _mm256_extracti128_si256(a, 1));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, _MM_SHUFFLE(1, 0, 3, 2)));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, _MM_SHUFFLE(2, 3, 0, 1)));
    return _mm_cvtsi128_si32(s);
  }

  // 8 int8 lanes: lane i holds the next stored value if bit i is set, else
  // zero; p moves past the values used.
  template <bool Safe>
  static __m128i expand8(unsigned bits, const int8_t*& p) {
    const int used = __builtin_popcount(bits);
    __m128i packed;
    if constexpr (Safe) {
      uint64_t word = 0;
      __builtin_memcpy(&word, p, static_cast<size_t>(used));
      packed = _mm_cvtsi64_si128(static_cast<long long>(word));
    } else {
      packed = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(p));
    }
    const __m128i control = _mm_loadl_epi64(
        reinterpret_cast<const __m128i*>(int8_bitmap_detail::kShuffle.control[bits]));
    p += used;
    return _mm_shuffle_epi8(packed, control);
  }
  // 16 int16 lanes for 16 bits (the low byte gives lanes 0-7).
  template <bool Safe>
  static reg expand16(unsigned bits, const int8_t*& p) {
    const __m128i lo = expand8<Safe>(bits & 0xff, p);
    const __m128i hi = expand8<Safe>(bits >> 8, p);
    return _mm256_cvtepi8_epi16(_mm_unpacklo_epi64(lo, hi));
  }
};
