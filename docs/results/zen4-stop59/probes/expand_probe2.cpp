// int8: vpexpandb load + vpdpbusd against vpcompressb(x) + plain load + vpdpbusd, per 64-column word.
// bf16: vpexpandw (pdep mask) load against compress x (float) + widen 16 bf16 + fma, per 16 columns.
#include <immintrin.h>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <vector>
template <int MODE>
__attribute__((noipa)) int walk8(const uint64_t* bits, const int8_t* vals, const uint8_t* x, int64_t words) {
  __m512i acc[4] = {_mm512_setzero_si512(), _mm512_setzero_si512(), _mm512_setzero_si512(), _mm512_setzero_si512()};
  const int8_t* vp = vals;
  for (int64_t w = 0; w < words; w += 4) {
#pragma GCC unroll 4
    for (int j = 0; j < 4; ++j) {
      const __mmask64 k = _load_mask64((__mmask64*)(bits + w + j));
      const __m512i xw = _mm512_loadu_si512(x + (w + j) * 64);
      if constexpr (MODE == 0) {
        acc[j] = _mm512_dpbusd_epi32(acc[j], xw, _mm512_maskz_expandloadu_epi8(k, vp));
      } else {
        acc[j] = _mm512_dpbusd_epi32(acc[j], _mm512_maskz_compress_epi8(k, xw), _mm512_loadu_si512(vp));
      }
      vp += __builtin_popcountll(bits[w + j]);
    }
  }
  __m512i s = _mm512_add_epi32(_mm512_add_epi32(acc[0], acc[1]), _mm512_add_epi32(acc[2], acc[3]));
  return _mm512_reduce_add_epi32(s);
}
template <int MODE>
__attribute__((noipa)) float walkbf(const uint16_t* bits, const uint16_t* vals, const float* x, int64_t chunks) {
  __m512 acc[4] = {_mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps()};
  const uint16_t* vp = vals;
  for (int64_t c = 0; c < chunks; c += 4) {
#pragma GCC unroll 4
    for (int j = 0; j < 4; ++j) {
      unsigned b = bits[c + j];
      asm("" : "+r"(b));
      const __m512 xs = _mm512_loadu_ps(x + (c + j) * 16);
      if constexpr (MODE == 0) {
        const __mmask32 m = (__mmask32)_pdep_u32(b, 0xaaaaaaaau);
        const __m512 w = _mm512_castsi512_ps(_mm512_maskz_expandloadu_epi16(m, vp));
        acc[j] = _mm512_mask3_fmadd_ps(w, xs, acc[j], (__mmask16)b);
      } else {
        const __m512 w = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i*)vp)), 16));
        acc[j] = _mm512_fmadd_ps(w, _mm512_maskz_compress_ps((__mmask16)b, xs), acc[j]);
      }
      vp += __builtin_popcount(b);
    }
  }
  return _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(acc[0], acc[1]), _mm512_add_ps(acc[2], acc[3])));
}
int main(int argc, char** argv) {
  const double d = argc > 1 ? atof(argv[1]) : 0.3;
  const int64_t cols = 4096;
  std::mt19937_64 rng(1);
  std::uniform_real_distribution<> U(0, 1);
  std::vector<uint64_t> bits(cols / 64);
  for (auto& w : bits) for (int i = 0; i < 64; ++i) if (U(rng) < d) w |= 1ull << i;
  std::vector<int8_t> v8(cols + 64, 1);
  std::vector<uint16_t> vb(cols + 64, 0x3f80);
  std::vector<uint8_t> x8(cols, 2);
  std::vector<float> xf(cols, 1.0f);
  auto bench = [&](auto f, const char* name, double per) {
    double best = 1e30; double sink = 0;
    for (int rep = 0; rep < 20; ++rep) {
      auto t0 = std::chrono::steady_clock::now();
      for (int i = 0; i < 5000; ++i) sink += f();
      double ns = std::chrono::duration<double, std::nano>(std::chrono::steady_clock::now() - t0).count() / 5000;
      best = std::min(best, ns);
    }
    printf("%-28s %.3f ns per %g columns  (sink %g)\n", name, best / per, cols / per, sink);
  };
  bench([&] { return walk8<0>(bits.data(), v8.data(), x8.data(), cols / 64); }, "int8 expand load", cols / 64);
  bench([&] { return walk8<1>(bits.data(), v8.data(), x8.data(), cols / 64); }, "int8 compress x", cols / 64);
  bench([&] { return walkbf<0>((const uint16_t*)bits.data(), vb.data(), xf.data(), cols / 16); }, "bf16 word expand load", cols / 16);
  bench([&] { return walkbf<1>((const uint16_t*)bits.data(), vb.data(), xf.data(), cols / 16); }, "bf16 compress x", cols / 16);
}
