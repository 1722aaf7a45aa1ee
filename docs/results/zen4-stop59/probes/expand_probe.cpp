#include <immintrin.h>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <vector>
#include <random>
#include <chrono>
// One row-walk over N columns, mask chunks from bits, values packed. 4 interleaved segments.
constexpr int Q = 4;
template <int MODE>
__attribute__((noinline)) float walk(const uint16_t* bits, const float* vals, const int64_t* seg_off,
                                     const float* x, int64_t chunks_per_seg) {
  __m512 acc[Q][2];
  const float* vp[Q];
  for (int q = 0; q < Q; ++q) { acc[q][0] = acc[q][1] = _mm512_setzero_ps(); vp[q] = vals + seg_off[q]; }
  for (int64_t c = 0; c < chunks_per_seg; c += 2) {
#pragma GCC unroll 2
    for (int s = 0; s < 2; ++s)
#pragma GCC unroll 4
    for (int q = 0; q < Q; ++q) {
      const int64_t ci = q * chunks_per_seg + c + s;
      unsigned b = bits[ci];
      asm("" : "+r"(b));
      const __mmask16 k = (__mmask16)b;
      const float* xp = x + ci * 16;
      if constexpr (MODE == 0) {
        acc[q][s] = _mm512_mask3_fmadd_ps(_mm512_maskz_expandloadu_ps(k, vp[q]), _mm512_loadu_ps(xp), acc[q][s], k);
      } else if constexpr (MODE == 1) {
        __m512 v = _mm512_loadu_ps(vp[q]);
        acc[q][s] = _mm512_mask3_fmadd_ps(_mm512_maskz_expand_ps(k, v), _mm512_loadu_ps(xp), acc[q][s], k);
      } else if constexpr (MODE == 2) {
        // ymm expand loads, two per chunk
        __m256 lo = _mm256_maskz_expandloadu_ps((__mmask8)b, vp[q]);
        __m256 hi = _mm256_maskz_expandloadu_ps((__mmask8)(b >> 8), vp[q] + __builtin_popcount(b & 0xff));
        __m512 v = _mm512_insertf32x8(_mm512_castps256_ps512(lo), hi, 1);
        acc[q][s] = _mm512_fmadd_ps(v, _mm512_loadu_ps(xp), acc[q][s]);
      } else if constexpr (MODE == 3) {
        // no expand: plain load (wrong math, bound)
        acc[q][s] = _mm512_fmadd_ps(_mm512_loadu_ps(vp[q]), _mm512_loadu_ps(xp), acc[q][s]);
      } else if constexpr (MODE == 4) {
        // compress x, masked-load values
        __m512 xc = _mm512_maskz_compress_ps(k, _mm512_loadu_ps(xp));
        __m512 v = _mm512_loadu_ps(vp[q]);
        acc[q][s] = _mm512_fmadd_ps(v, xc, acc[q][s]);
      } else if constexpr (MODE == 5) {
        // ymm: two ymm expand (register form) + two ymm fma
        __m256 v0 = _mm256_loadu_ps(vp[q]);
        unsigned p0 = __builtin_popcount(b & 0xff);
        __m256 v1 = _mm256_loadu_ps(vp[q] + p0);
        __m256 e0 = _mm256_maskz_expand_ps((__mmask8)b, v0);
        __m256 e1 = _mm256_maskz_expand_ps((__mmask8)(b >> 8), v1);
        __m512 v = _mm512_insertf32x8(_mm512_castps256_ps512(e0), e1, 1);
        acc[q][s] = _mm512_fmadd_ps(v, _mm512_loadu_ps(xp), acc[q][s]);
      } else if constexpr (MODE == 6) {
        const unsigned pc = __builtin_popcount(b);
        const __mmask16 m = (__mmask16)_bzhi_u32(0xffffu, pc);
        __m512 xc = _mm512_maskz_compress_ps(k, _mm512_loadu_ps(xp));
        acc[q][s] = _mm512_mask_fmadd_ps(_mm512_loadu_ps(vp[q]), m, xc, acc[q][s]);
        // note: mask_fmadd(a, m, b, c): a = a*b+c where m else a -> wrong lanes semantics; use mask3
      } else if constexpr (MODE == 7) {
        const unsigned pc = __builtin_popcount(b);
        const __mmask16 m = (__mmask16)_bzhi_u32(0xffffu, pc);
        __m512 xc = _mm512_maskz_compress_ps(k, _mm512_loadu_ps(xp));
        acc[q][s] = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, vp[q]), xc, acc[q][s]);
      } else if constexpr (MODE == 8) {
        const unsigned pc = __builtin_popcount(b);
        const __mmask16 m = (__mmask16)_bzhi_u32(0xffffu, pc);
        __m512 xc = _mm512_maskz_compress_ps(k, _mm512_loadu_ps(xp));
        acc[q][s] = _mm512_mask3_fmadd_ps(_mm512_loadu_ps(vp[q]), xc, acc[q][s], m);
      }
      vp[q] += __builtin_popcount(b);
    }
  }
  __m512 t = _mm512_setzero_ps();
  for (int q = 0; q < Q; ++q) t = _mm512_add_ps(t, _mm512_add_ps(acc[q][0], acc[q][1]));
  return _mm512_reduce_add_ps(t);
}
int main(int argc, char** argv) {
  const double density = argc > 1 ? atof(argv[1]) : 0.3;
  const int64_t cols = argc > 2 ? atoll(argv[2]) : 2048;  // L1: 2048 cols
  const int64_t chunks = cols / 16, cps = chunks / Q;
  std::mt19937 rng(1);
  std::vector<uint16_t> bits(chunks);
  std::vector<float> vals(cols + 64, 1.0f), x(cols, 1.0f);
  int64_t nnz = 0;
  std::vector<int64_t> off(Q);
  for (int64_t c = 0; c < chunks; ++c) {
    if (c % cps == 0) off[c / cps] = nnz;
    unsigned b = 0;
    for (int i = 0; i < 16; ++i) if (std::uniform_real_distribution<>(0, 1)(rng) < density) b |= 1u << i;
    bits[c] = b; nnz += __builtin_popcount(b);
  }
  auto bench = [&](auto f, const char* name) {
    float sink = 0; double best = 1e30;
    for (int rep = 0; rep < 20; ++rep) {
      auto t0 = std::chrono::steady_clock::now();
      for (int i = 0; i < 2000; ++i) sink += f(bits.data(), vals.data(), off.data(), x.data(), cps);
      double ns = std::chrono::duration<double, std::nano>(std::chrono::steady_clock::now() - t0).count() / 2000 / chunks;
      if (ns < best) best = ns;
    }
    printf("%-22s %.3f ns/chunk  (%.2f cyc @3GHz)  %g\n", name, best, best * 3.0, sink);
  };
  bench(walk<0>, "expandload zmm");
  bench(walk<1>, "load+expand reg zmm");
  bench(walk<2>, "2x expandload ymm");
  bench(walk<3>, "plain load (bound)");
  bench(walk<4>, "compress x");
  bench(walk<5>, "2x ymm reg expand");
  bench(walk<7>, "compress x, maskz vals");
  bench(walk<8>, "compress x, mask3 fma");
}
