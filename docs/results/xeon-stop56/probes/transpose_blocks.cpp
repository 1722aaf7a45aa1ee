// Probe (stop 56): emitting a 128-row tile of y^T into y with 8x8 (AVX) and 16x16
// (AVX-512) register transposes. g++ -O2 -mavx512f -mavx2 -mfma transpose_blocks.cpp && ./a.out 128 3072
#include <immintrin.h>
#include <cstdio>
#include <cstdint>
#include <vector>
#include <chrono>
#include <cstring>
#include <cstdlib>
static double now(){return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();}
static inline void t8(const float* src, int64_t sld, float* dst, int64_t dld){
  __m256 r[8], t[8], s[8];
  for (int k = 0; k < 8; ++k) r[k] = _mm256_loadu_ps(src + k * sld);
  for (int k = 0; k < 8; k += 2) { t[k] = _mm256_unpacklo_ps(r[k], r[k + 1]); t[k + 1] = _mm256_unpackhi_ps(r[k], r[k + 1]); }
  for (int k = 0; k < 8; k += 4) { s[k] = _mm256_shuffle_ps(t[k], t[k + 2], 0x44); s[k + 1] = _mm256_shuffle_ps(t[k], t[k + 2], 0xEE); s[k + 2] = _mm256_shuffle_ps(t[k + 1], t[k + 3], 0x44); s[k + 3] = _mm256_shuffle_ps(t[k + 1], t[k + 3], 0xEE); }
  for (int k = 0; k < 4; ++k) { _mm256_storeu_ps(dst + k * dld, _mm256_permute2f128_ps(s[k], s[k + 4], 0x20)); _mm256_storeu_ps(dst + (k + 4) * dld, _mm256_permute2f128_ps(s[k], s[k + 4], 0x31)); }
}
static inline void t16(const float* src, int64_t sld, float* dst, int64_t dld){
  __m512 r[16], t[16];
  for (int k = 0; k < 16; ++k) r[k] = _mm512_loadu_ps(src + k * sld);
  for (int k = 0; k < 16; k += 2) { t[k] = _mm512_unpacklo_ps(r[k], r[k+1]); t[k+1] = _mm512_unpackhi_ps(r[k], r[k+1]); }
  for (int k = 0; k < 16; k += 4) { r[k] = _mm512_shuffle_ps(t[k], t[k+2], 0x44); r[k+1] = _mm512_shuffle_ps(t[k], t[k+2], 0xEE); r[k+2] = _mm512_shuffle_ps(t[k+1], t[k+3], 0x44); r[k+3] = _mm512_shuffle_ps(t[k+1], t[k+3], 0xEE); }
  for (int q = 0; q < 4; ++q) {  // 4x4 transpose of 128-bit lanes of r[q], r[4+q], r[8+q], r[12+q]
    __m512 ab0 = _mm512_shuffle_f32x4(r[q], r[4+q], 0x44), ab1 = _mm512_shuffle_f32x4(r[q], r[4+q], 0xEE);
    __m512 cd0 = _mm512_shuffle_f32x4(r[8+q], r[12+q], 0x44), cd1 = _mm512_shuffle_f32x4(r[8+q], r[12+q], 0xEE);
    _mm512_storeu_ps(dst + q * dld, _mm512_shuffle_f32x4(ab0, cd0, 0x88));
    _mm512_storeu_ps(dst + (4 + q) * dld, _mm512_shuffle_f32x4(ab0, cd0, 0xDD));
    _mm512_storeu_ps(dst + (8 + q) * dld, _mm512_shuffle_f32x4(ab1, cd1, 0x88));
    _mm512_storeu_ps(dst + (12 + q) * dld, _mm512_shuffle_f32x4(ab1, cd1, 0xDD));
  }
}
int main(int argc, char** argv){
  int64_t R=atoi(argv[1]), B=64, N=atoi(argv[2]);  // tile R rows x 64 -> y (B x N) at column r0
  float* tile=(float*)aligned_alloc(64, R*64*4); float* y=(float*)aligned_alloc(64, B*N*4);
  for(int64_t i=0;i<R*64;++i) tile[i]=i;
  // check t16
  float s[256], d[256]; for(int i=0;i<256;++i) s[i]=i; t16(s,16,d,16); int bad=0; for(int i=0;i<16;++i) for(int j=0;j<16;++j) if(d[j*16+i]!=s[i*16+j]) bad++; printf("t16 bad %d\n",bad);
  for(int rep=0;rep<3;++rep){
    double b8=1e9,b16=1e9;
    for(int it=0;it<20;++it){
      double t=now();
      for(int64_t r0=0;r0<N;r0+=R) for(int64_t i=0;i<R;i+=8) for(int64_t j=0;j<64;j+=8) t8(tile+i*64+j,64,y+j*N+r0+i,N);
      b8=std::min(b8,now()-t); t=now();
      for(int64_t r0=0;r0<N;r0+=R) for(int64_t i=0;i<R;i+=16) for(int64_t j=0;j<64;j+=16) t16(tile+i*64+j,64,y+j*N+r0+i,N);
      b16=std::min(b16,now()-t);
    }
    printf("N %ld: 8x8 %.1f us (%.2f ns/elem)  16x16 %.1f us (%.2f ns/elem)\n",N,b8*1e6,b8/(B*N)*1e9,b16*1e6,b16/(B*N)*1e9);
  }
}
