#include <immintrin.h>
#include <stdio.h>
#include <stdlib.h>
#include <stdint.h>
#include <string.h>
#include <time.h>
static double now(){struct timespec t;clock_gettime(CLOCK_MONOTONIC,&t);return t.tv_sec+t.tv_nsec*1e-9;}
#define COLS 11008
#define WPR (COLS/64)
#define ROWS 64
uint64_t bits[ROWS*WPR]; int8_t vals[ROWS*COLS+64] __attribute__((aligned(64))); uint8_t x[COLS] __attribute__((aligned(64))); int64_t offs[ROWS+1];
static inline __attribute__((always_inline)) int32_t row(int r, const int variant){
  const uint64_t* words=bits+r*WPR; const int8_t* vp=vals+offs[r];
  __m512i acc[4]; for(int j=0;j<4;j++) acc[j]=_mm512_setzero_si512();
  int64_t w=0;
  for(;w+4<=WPR;w+=4){
    if(variant!=1) _mm_prefetch((const char*)(words+w)+4096,_MM_HINT_T0);
    #pragma GCC unroll 4
    for(int j=0;j<4;j++){
      if(variant!=1) _mm_prefetch((const char*)vp+4096,_MM_HINT_T0);
      __m512i xw=_mm512_loadu_si512(x+(w+j)*64);
      __m512i wt;
      if(variant==0||variant==1){ __mmask64 k=_load_mask64((__mmask64*)(words+w+j)); wt=_mm512_maskz_expandloadu_epi8(k,vp); vp+=__builtin_popcountll(words[w+j]); }
      else if(variant==2){ uint64_t wd=words[w+j]; wt=_mm512_maskz_expandloadu_epi8(_cvtu64_mask64(wd),vp); vp+=__builtin_popcountll(wd);}
      else if(variant==3){ __mmask64 k=_load_mask64((__mmask64*)(words+w+j)); wt=_mm512_maskz_expand_epi8(k,_mm512_loadu_si512(vp)); vp+=__builtin_popcountll(words[w+j]); }
      else if(variant==4){ wt=_mm512_loadu_si512(vp); vp+=__builtin_popcountll(words[w+j]); }
      else if(variant==5){ wt=_mm512_loadu_si512(vals+((vp-vals)&~63)); vp+=__builtin_popcountll(words[w+j]); }
      else { wt=_mm512_loadu_si512(vals+((vp-vals)&~63)); vp+=__builtin_popcountll(words[w+j]); xw=_mm512_set1_epi8(1); }
      acc[j]=_mm512_dpbusd_epi32(acc[j],xw,wt);
    }
  }
  __m512i s=_mm512_add_epi32(_mm512_add_epi32(acc[0],acc[1]),_mm512_add_epi32(acc[2],acc[3]));
  return _mm512_reduce_add_epi32(s);
}
static uint8_t buf[COLS+128] __attribute__((aligned(64)));
static inline __attribute__((always_inline)) int32_t row_compress(int r){
  const uint64_t* words=bits+r*WPR; const int8_t* vp=vals+offs[r];
  int64_t pos=0;
  #pragma GCC unroll 4
  for(int64_t w=0; w<WPR; w++){
    __mmask64 k=_load_mask64((__mmask64*)(words+w));
    __m512i xw=_mm512_loadu_si512(x+w*64);
    _mm512_storeu_si512(buf+pos, _mm512_maskz_compress_epi8(k,xw));
    pos+=__builtin_popcountll(words[w]);
  }
  int64_t n=offs[r+1]-offs[r];
  __m512i acc0=_mm512_setzero_si512(), acc1=acc0;
  int64_t j=0;
  for(; j+128<=n; j+=128){
    acc0=_mm512_dpbusd_epi32(acc0,_mm512_loadu_si512(buf+j),_mm512_loadu_si512(vp+j));
    acc1=_mm512_dpbusd_epi32(acc1,_mm512_loadu_si512(buf+j+64),_mm512_loadu_si512(vp+j+64));
  }
  for(; j<n; j+=64){
    __mmask64 m = n-j>=64 ? ~0ull : ((1ull<<(n-j))-1);
    acc0=_mm512_dpbusd_epi32(acc0,_mm512_maskz_loadu_epi8(m,buf+j),_mm512_maskz_loadu_epi8(m,vp+j));
  }
  return _mm512_reduce_add_epi32(_mm512_add_epi32(acc0,acc1));
}
__attribute__((noinline)) int32_t f7(void){int32_t s=0; for(int r=0;r<ROWS;r++) s+=row_compress(r); return s;}
#define F(v) __attribute__((noinline)) int32_t f##v(void){int32_t s=0; for(int r=0;r<ROWS;r++) s+=row(r,v); return s;}
F(0) F(1) F(2) F(3) F(4) F(5) F(6)
int32_t (*fns[])(void)={f0,f1,f2,f3,f4,f5,f6,f7};
int main(int argc,char**argv){
  double dens=atof(argv[1]); srand(1); offs[0]=0;
  for(int r=0;r<ROWS;r++){int64_t n=0; for(int w=0;w<WPR;w++){uint64_t b=0; for(int i=0;i<64;i++) if(rand()<dens*RAND_MAX) b|=1ull<<i; bits[r*WPR+w]=b; n+=__builtin_popcountll(b);} offs[r+1]=offs[r]+n;}
  for(int i=0;i<ROWS*COLS+64;i++) vals[i]=1; for(int i=0;i<COLS;i++) x[i]=1;
  const char* names[]={"current (mask mem, expand mem, pf)","no prefetch","mask via kmovq reg","load + expand reg","plain load (no expand)","aligned plain load","aligned plain load, no x load","compress x then dense dot"};
  for(int v=0;v<8;v++){
    int32_t s=0; double best=1e9;
    for(int rep=0;rep<200;rep++){ double t0=now(); s+=fns[v](); double t=now()-t0; if(t<best)best=t; }
    double words=(double)ROWS*WPR;
    printf("density %.2f %-36s %.3f ns/word %.2f cycles/word (%d)\n", dens, names[v], best/words*1e9, best/words*1e9/0.273, s);
  }
}
