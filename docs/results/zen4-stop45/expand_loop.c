#include <immintrin.h>
#include <stdio.h>
#include <stdlib.h>
#include <stdint.h>
#include <string.h>
#include <time.h>
static double now(){struct timespec t;clock_gettime(CLOCK_MONOTONIC,&t);return t.tv_sec+t.tv_nsec*1e-9;}
#define COLS 8192
#define WORDS (COLS/64)
#define Q 4
uint64_t bits[WORDS]; float vals[COLS+64]; float x[COLS];
static inline __attribute__((always_inline)) float runA(const int variant){
  // 4 segments interleaved, like gemv_row_split
  const int run = WORDS / Q;
  const float* vp[Q]; vp[0]=vals;
  for(int q=1;q<Q;q++){vp[q]=vp[q-1]; for(int w=(q-1)*run; w<q*run; w++) vp[q]+=__builtin_popcountll(bits[w]);}
  __m512 acc[Q][2]; for(int q=0;q<Q;q++) acc[q][0]=acc[q][1]=_mm512_setzero_ps();
  for(int w=0; w<run; w++){
    #pragma GCC unroll 4
    for(int s=0;s<4;s++){
      #pragma GCC unroll 4
      for(int q=0;q<Q;q++){
        int word=q*run+w;
        uint16_t c; memcpy(&c, (const char*)(bits+word)+2*s, 2); unsigned b=c; __asm__("":"+r"(b));
        __mmask16 k=(__mmask16)b;
        __m512 xs=_mm512_loadu_ps(x+word*64+s*16);
        __m512 v;
        if(variant==0) v=_mm512_maskz_expandloadu_ps(k, vp[q]);
        else if(variant==1) v=_mm512_loadu_ps(vp[q]);
        else v=_mm512_maskz_expand_ps(k, _mm512_loadu_ps(vp[q]));
        if(variant==6) { v=_mm512_maskz_expandloadu_ps(k, vp[q]); __m512 xz=_mm512_maskz_mov_ps(k, xs); acc[q][s&1]=_mm512_fmadd_ps(v,xz,acc[q][s&1]); }
        else if(variant==4) { v=_mm512_maskz_expandloadu_ps(k, vp[q]); __m512 xz=_mm512_maskz_loadu_ps(k, x+word*64+s*16); acc[q][s&1]=_mm512_fmadd_ps(v,xz,acc[q][s&1]); }
        else if(variant==5) { v=_mm512_maskz_expandloadu_ps(k, vp[q]); acc[q][s&1]=_mm512_maskz_fmadd_ps(k,v,xs,acc[q][s&1]); }
        else if(variant==3) { v=_mm512_maskz_expandloadu_ps(k, vp[q]); acc[q][s&1]=_mm512_fmadd_ps(v,xs,acc[q][s&1]); }
        else acc[q][s&1]=_mm512_mask3_fmadd_ps(v,xs,acc[q][s&1],k);
        vp[q]+=__builtin_popcount(b);
      }
    }
  }
  __m512 t=_mm512_setzero_ps(); for(int q=0;q<Q;q++) t=_mm512_add_ps(t,_mm512_add_ps(acc[q][0],acc[q][1]));
  return _mm512_reduce_add_ps(t);
}
__attribute__((noinline)) float r0(void){return runA(0);}
__attribute__((noinline)) float r1(void){return runA(1);}
__attribute__((noinline)) float r2(void){return runA(2);}
__attribute__((noinline)) float r3(void){return runA(3);}
__attribute__((noinline)) float r4(void){return runA(4);}
__attribute__((noinline)) float r5(void){return runA(5);}
__attribute__((noinline)) float r6(void){return runA(6);}
float (*fns[])(void)={r0,r1,r2,r3,r4,r5,r6};
int main(int argc,char**argv){
  double dens=atof(argv[1]); srand(1);
  for(int w=0;w<WORDS;w++){uint64_t b=0; for(int i=0;i<64;i++) if(rand()<dens*RAND_MAX) b|=1ull<<i; bits[w]=b;}
  for(int i=0;i<COLS+64;i++) vals[i]=1; for(int i=0;i<COLS;i++) x[i]=1;
  const char* names[]={"expandload mem","plain load (no expand)","load+expand reg","expandload + unmasked fma","maskz x load + unmasked fma","maskz fma (wrong)","maskz mov x + unmasked fma"};
  for(int v=0;v<7;v++){
    float s=0; double best=1e9;
    for(int rep=0;rep<50;rep++){ double t0=now(); for(int i=0;i<100;i++) s+=fns[v](); double t=now()-t0; if(t<best)best=t; }
    double chunks=100.0*WORDS*4;
    printf("density %.2f %-28s %.3f ns/chunk  %.2f cycles/chunk (s=%g)\n", dens, names[v], best/chunks*1e9, best/chunks*1e9/0.273, s);
  }
}
