// BitExpand<V> for AVX2: L bits of the bitmap (L = 8 floats or bfloat16s, 4
// doubles) and the packed values behind them become one vector. AVX2 has no expand
// instruction, so a table indexed by the bits gives, for each lane, the
// position of its value among the packed ones (vpermps/vpermd indices); the
// table entry's sign bit marks the lanes whose bit is set, which blendv reads.
//
// With Safe = false the next L packed values are read with a plain unaligned
// load, which may read up to L - 1 values past the last one this call uses:
// the caller guarantees they lie inside the values array. With Safe = true
// only popcount(bits) values are read (a masked load; a copy for bfloat16).
// Included inside an ISA namespace after simd_avx2.h; the including file
// provides <immintrin.h> and <cstring>.

namespace bitmap_detail {

struct ExpandTableF32 {
  alignas(32) int32_t lanes[256][8];
};
struct ExpandTableF64 {
  alignas(32) int32_t lanes[16][8];  // pairs of 32-bit indices per 64-bit lane
};

constexpr int32_t with_sign(int32_t v) {
  return static_cast<int32_t>(static_cast<uint32_t>(v) | 0x80000000u);
}

constexpr ExpandTableF32 make_expand_table_f32() {
  ExpandTableF32 t{};
  for (int m = 0; m < 256; ++m) {
    int k = 0;
    for (int i = 0; i < 8; ++i) t.lanes[m][i] = ((m >> i) & 1) ? with_sign(k++) : 0;
  }
  return t;
}

constexpr ExpandTableF64 make_expand_table_f64() {
  ExpandTableF64 t{};
  for (int m = 0; m < 16; ++m) {
    int k = 0;
    for (int i = 0; i < 4; ++i) {
      if ((m >> i) & 1) {
        t.lanes[m][2 * i] = 2 * k;
        t.lanes[m][2 * i + 1] = with_sign(2 * k + 1);  // blendv_pd reads bit 63
        ++k;
      } else {
        t.lanes[m][2 * i] = 0;
        t.lanes[m][2 * i + 1] = 0;
      }
    }
  }
  return t;
}

// Byte shuffles for bfloat16 values (see BitExpand<bfloat16_t>).
struct ExpandTableBF16 {
  alignas(32) uint8_t bytes[256][32];
};

constexpr ExpandTableBF16 make_expand_table_bf16() {
  constexpr uint8_t kZero = 0x80;  // pshufb writes zero for an index with bit 7 set
  ExpandTableBF16 t{};
  for (int m = 0; m < 256; ++m) {
    int k = 0;
    for (int i = 0; i < 8; ++i) {
      const bool set = (m >> i) & 1;
      t.bytes[m][4 * i] = t.bytes[m][4 * i + 1] = kZero;  // the float's low mantissa bits
      t.bytes[m][4 * i + 2] = set ? static_cast<uint8_t>(2 * k) : kZero;
      t.bytes[m][4 * i + 3] = set ? static_cast<uint8_t>(2 * k + 1) : kZero;
      k += set;
    }
  }
  return t;
}

inline constexpr ExpandTableF32 kExpandF32 = make_expand_table_f32();
inline constexpr ExpandTableBF16 kExpandBF16 = make_expand_table_bf16();
inline constexpr ExpandTableF64 kExpandF64 = make_expand_table_f64();

}  // namespace bitmap_detail

template <typename T>
struct BitExpand;

template <>
struct BitExpand<float> {
  static __m256i index(unsigned bits) {
    return _mm256_load_si256(
        reinterpret_cast<const __m256i*>(bitmap_detail::kExpandF32.lanes[bits]));
  }
  template <bool Safe>
  static __m256 packed(unsigned bits, const float* p) {
    if constexpr (Safe)
      return _mm256_maskload_ps(p, avx2_detail::lane_mask_epi32(__builtin_popcount(bits)));
    else
      return _mm256_loadu_ps(p);
  }
  // Lane i holds the next stored value if bit i is set, else zero.
  template <bool Safe>
  static __m256 load(unsigned bits, const float* p) {
    const __m256i idx = index(bits);
    const __m256 v = _mm256_permutevar8x32_ps(packed<Safe>(bits, p), idx);
    return _mm256_blendv_ps(_mm256_setzero_ps(), v, _mm256_castsi256_ps(idx));
  }
  // acc + expanded * x in lanes whose bit is set; other lanes keep acc (so an
  // unstored entry never multiplies x).
  template <bool Safe>
  static __m256 fmadd(unsigned bits, const float* p, __m256 x, __m256 acc) {
    const __m256i idx = index(bits);
    const __m256 v = _mm256_permutevar8x32_ps(packed<Safe>(bits, p), idx);
    return _mm256_blendv_ps(acc, _mm256_fmadd_ps(v, x, acc), _mm256_castsi256_ps(idx));
  }
};

// bfloat16 values: one byte shuffle both expands and widens them. The 8
// packed values (16 bytes) are broadcast to both 128-bit halves, and a
// table entry per bitmap byte moves value k's two bytes into the upper half
// of lane i's float (k = set bits below bit i), zeroing every other byte, so
// a lane whose bit is clear is exactly +0.0. The entry read as 8 int32 has
// its sign bit set in exactly the clear lanes (0x80808080), which blendv reads.
// One shuffle per 8 values, where widening first (vpmovzxwd, a shift, then
// the float table's vpermps and blend) takes two shuffles and a shift.
template <>
struct BitExpand<bfloat16_t> {
  static __m256i shuffle(unsigned bits) {
    return _mm256_load_si256(
        reinterpret_cast<const __m256i*>(bitmap_detail::kExpandBF16.bytes[bits]));
  }
  template <bool Safe>
  static __m256i packed(unsigned bits, const bfloat16_t* p) {
    if constexpr (Safe) {
      // AVX2 has no 16-bit masked load: copy only the values this chunk uses.
      alignas(16) uint16_t used[8] = {};
      const int count = __builtin_popcount(bits);
      if (count > 0) std::memcpy(used, p, count * sizeof(bfloat16_t));  // p may be null if none
      return _mm256_broadcastsi128_si256(_mm_load_si128(reinterpret_cast<const __m128i*>(used)));
    } else {
      return _mm256_broadcastsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
    }
  }
  template <bool Safe>
  static __m256 load(unsigned bits, const bfloat16_t* p) {
    return _mm256_castsi256_ps(_mm256_shuffle_epi8(packed<Safe>(bits, p), shuffle(bits)));
  }
  // acc + expanded * x in lanes whose bit is set; other lanes keep acc.
  template <bool Safe>
  static __m256 fmadd(unsigned bits, const bfloat16_t* p, __m256 x, __m256 acc) {
    const __m256i table = shuffle(bits);
    const __m256 v = _mm256_castsi256_ps(_mm256_shuffle_epi8(packed<Safe>(bits, p), table));
    return _mm256_blendv_ps(_mm256_fmadd_ps(v, x, acc), acc, _mm256_castsi256_ps(table));
  }
};

template <>
struct BitExpand<double> {
  static __m256i index(unsigned bits) {
    return _mm256_load_si256(
        reinterpret_cast<const __m256i*>(bitmap_detail::kExpandF64.lanes[bits]));
  }
  template <bool Safe>
  static __m256d packed(unsigned bits, const double* p) {
    if constexpr (Safe)
      return _mm256_maskload_pd(p, avx2_detail::lane_mask_epi64(__builtin_popcount(bits)));
    else
      return _mm256_loadu_pd(p);
  }
  static __m256d permute(__m256d v, __m256i idx) {
    return _mm256_castps_pd(_mm256_permutevar8x32_ps(_mm256_castpd_ps(v), idx));
  }
  template <bool Safe>
  static __m256d load(unsigned bits, const double* p) {
    const __m256i idx = index(bits);
    return _mm256_blendv_pd(_mm256_setzero_pd(), permute(packed<Safe>(bits, p), idx),
                            _mm256_castsi256_pd(idx));
  }
  template <bool Safe>
  static __m256d fmadd(unsigned bits, const double* p, __m256d x, __m256d acc) {
    const __m256i idx = index(bits);
    const __m256d v = permute(packed<Safe>(bits, p), idx);
    return _mm256_blendv_pd(acc, _mm256_fmadd_pd(v, x, acc), _mm256_castsi256_pd(idx));
  }
};
