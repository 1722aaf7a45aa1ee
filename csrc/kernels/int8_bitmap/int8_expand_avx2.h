// Int8Expand for AVX2: 16 bits of the bitmap and the packed int8 values
// behind them become 16 int16 lanes (zeros where a bit is clear), ready for
// _mm256_madd_epi16, which is exact here (|q * x| <= 127 * 127; maddubs
// would saturate). The next 16 packed values are loaded into both halves of
// a ymm register; one vpshufb then moves, per int16 lane whose bit is set,
// the lane's value into the lane's high byte (zero elsewhere), and an
// arithmetic shift right by 8 sign-extends it. The shuffle control comes from
// a 256-entry table per byte of the bitmap; the upper byte's entry is offset
// by the popcount of the lower one. This keeps one shuffle-port instruction
// per 16 weights (a byte-wise pshufb + pmovsxbw would take four).
//
// With Safe = false the 16 bytes at the read position are loaded whole, which
// may read up to 15 bytes past the last value this call uses: the caller
// guarantees they lie inside the values array. With Safe = true only
// popcount(bits) bytes are read.
// Included inside an ISA namespace of a file compiled with at least -mavx2;
// the including file provides <immintrin.h>.

namespace int8_bitmap_detail {

// control[m]: for int16 lane i < 8, byte 2i + 1 (the high byte) is the
// position of lane i's value among the packed ones if bit i of m is set, else
// 0x80 (zero); byte 2i is always 0x80.
struct ShuffleTable {
  alignas(64) uint8_t control[256][16];
};
// offset[n]: n in the upper 16 bytes (the upper bitmap byte's lanes), 0 below.
// Adding it to 0x80 leaves the high bit set, so zero lanes stay zero.
struct OffsetTable {
  alignas(32) uint8_t offset[9][32];
};

constexpr ShuffleTable make_shuffle_table() {
  ShuffleTable t{};
  for (int m = 0; m < 256; ++m) {
    int k = 0;
    for (int i = 0; i < 8; ++i) {
      t.control[m][2 * i] = 0x80;
      t.control[m][2 * i + 1] = ((m >> i) & 1) ? static_cast<uint8_t>(k++) : 0x80;
    }
  }
  return t;
}

constexpr OffsetTable make_offset_table() {
  OffsetTable t{};
  for (int n = 0; n <= 8; ++n)
    for (int b = 0; b < 32; ++b) t.offset[n][b] = b < 16 ? 0 : static_cast<uint8_t>(n);
  return t;
}

inline constexpr ShuffleTable kShuffle = make_shuffle_table();
inline constexpr OffsetTable kOffset = make_offset_table();

}  // namespace int8_bitmap_detail

struct Int8Expand {
  static constexpr bool kVector = true;
  // Bytes one packed load may read from its position.
  static constexpr int64_t kPackedBytes = 16;
  using reg = __m256i;  // 16 int16 lanes (inputs) or 8 int32 lanes (sums)

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

  // 16 int16 lanes for 16 bits: lane i holds the next stored value if bit i
  // is set, else zero; p moves past the values used.
  template <bool Safe>
  static reg expand16(unsigned bits, const int8_t*& p) {
    using namespace int8_bitmap_detail;
    const unsigned lo = bits & 0xff, hi = bits >> 8;
    const int used = __builtin_popcount(bits);
    __m128i packed;
    if constexpr (Safe) {
      alignas(16) int8_t copy[16] = {};
      // A loop, not memcpy: p may be null (no values stored) when used is 0.
      for (int i = 0; i < used; ++i) copy[i] = p[i];
      packed = _mm_load_si128(reinterpret_cast<const __m128i*>(copy));
    } else {
      packed = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
    }
    const __m256i control = _mm256_add_epi8(
        _mm256_inserti128_si256(
            _mm256_castsi128_si256(
                _mm_load_si128(reinterpret_cast<const __m128i*>(kShuffle.control[lo]))),
            _mm_load_si128(reinterpret_cast<const __m128i*>(kShuffle.control[hi])), 1),
        _mm256_load_si256(
            reinterpret_cast<const __m256i*>(kOffset.offset[__builtin_popcount(lo)])));
    p += used;
    const __m256i high_bytes = _mm256_shuffle_epi8(_mm256_broadcastsi128_si256(packed), control);
    return _mm256_srai_epi16(high_bytes, 8);
  }
};
