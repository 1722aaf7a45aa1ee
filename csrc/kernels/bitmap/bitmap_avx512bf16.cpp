// The batch-1 bfloat16 bitmap kernel for inputs that are bfloat16 too, on
// AVX-512 CPUs with VBMI2 and AVX512-BF16 (flags set per file in
// CMakeLists.txt; bitmap_kernels() hands it out only when
// use_avx512_extensions() and avx512_bf16_supported()).
//
// Half a 64-bit word of a row is the mask of one word expand (vpexpandw),
// which places the next popcount(half) packed values in the 16-bit lanes
// whose bit is set, zeros elsewhere. vdpbf16ps multiplies those 32 values
// with 32 entries of x (bfloat16, the driver's copy) and adds them in pairs
// to 16 float lanes. That is 32 weights per expand and per multiply, where
// the float-input kernel (bitmap_kernels.inl) widens 16 per expand and needs
// a mask move per 16: the float-input kernel is bound by those, not by memory.
//
// Each product of two bfloat16 values is exact in float, so the result
// differs from the float-input kernel's only in the order of the additions
// and in vdpbf16ps's treatment of denormals as zero. The expanded zeros are
// multiplied, so x must be finite (the driver checks), and x holds
// words_per_row * 64 entries per vector, zero past the last column.
#include <immintrin.h>
#include <cstdint>

#include "kernels/bitmap/bitmap_kernels.h"

namespace sparsegemm {
namespace avx512bf16 {

namespace {

constexpr int64_t kWordBits = 64;
// Bytes prefetched ahead of a row's values (the int8 kernel's measured best).
constexpr int64_t kValuesAhead = 4096;

// A 32-bit half of a bitmap word, read from memory on its own, so that the
// compiler loads it straight into a mask register (kmovd k, m32 uses a load
// port; moving it from a general register, or shifting a mask, would take
// the shuffle port the expands need).
typedef uint32_t __attribute__((may_alias)) bitmap_half_t;

// acc += the 64 weights of *word (values from vp on) . x[0:64], in two halves.
inline void word_dot(const uint64_t* word, const bfloat16_t*& vp, const bfloat16_t* x,
                     __m512& acc_low, __m512& acc_high) {
  const bitmap_half_t* halves = reinterpret_cast<const bitmap_half_t*>(word);
  const uint64_t bits = *word;
  const __m512i w_low = _mm512_maskz_expandloadu_epi16(_cvtu32_mask32(halves[0]), vp);
  const __m512i w_high = _mm512_maskz_expandloadu_epi16(
      _cvtu32_mask32(halves[1]), vp + __builtin_popcount(static_cast<uint32_t>(bits)));
  vp += __builtin_popcountll(bits);
  acc_low = _mm512_dpbf16_ps(acc_low, reinterpret_cast<__m512bh>(w_low),
                             reinterpret_cast<__m512bh>(_mm512_loadu_si512(x)));
  acc_high = _mm512_dpbf16_ps(acc_high, reinterpret_cast<__m512bh>(w_high),
                              reinterpret_cast<__m512bh>(_mm512_loadu_si512(x + 32)));
}

// row r . x, one row at a time (two sequential streams, as the int8 kernel),
// four accumulators for vdpbf16ps's latency.
inline float row_dot(const BitmapView<bfloat16_t>& a, int64_t r, const bfloat16_t* x) {
  const int64_t wpr = a.words_per_row;
  const uint64_t* words = a.bits + r * wpr;
  const bfloat16_t* vp = a.values + a.offsets[r];
  __m512 acc[4] = {_mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps(),
                   _mm512_setzero_ps()};
  int64_t w = 0;
  for (; w + 2 <= wpr; w += 2) {
    _mm_prefetch(reinterpret_cast<const char*>(vp) + kValuesAhead, _MM_HINT_T0);
    word_dot(words + w, vp, x + w * kWordBits, acc[0], acc[1]);
    word_dot(words + w + 1, vp, x + (w + 1) * kWordBits, acc[2], acc[3]);
  }
  if (w < wpr) word_dot(words + w, vp, x + w * kWordBits, acc[0], acc[1]);
  return _mm512_reduce_add_ps(
      _mm512_add_ps(_mm512_add_ps(acc[0], acc[1]), _mm512_add_ps(acc[2], acc[3])));
}

}  // namespace

void gemv_rows_bf16_input(const BitmapView<bfloat16_t>& a, int64_t row_begin, int64_t row_end,
                          const bfloat16_t* x, int64_t x_vstride, int64_t nvec, const float* bias,
                          float* y, int64_t y_vstride, int64_t y_rstride) {
  // Row by row, every vector: the row stays in L1 for the vectors after the first.
  for (int64_t r = row_begin; r < row_end; ++r) {
    const float b = bias ? bias[r] : 0.0f;
    for (int64_t v = 0; v < nvec; ++v)
      y[v * y_vstride + r * y_rstride] = row_dot(a, r, x + v * x_vstride) + b;
  }
}

}  // namespace avx512bf16
}  // namespace sparsegemm
