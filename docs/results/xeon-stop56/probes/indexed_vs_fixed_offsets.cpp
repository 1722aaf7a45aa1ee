// Probe (stop 56): the CSR panel loop's index loads against x rows at fixed offsets.
// g++ -O2 -std=c++17 -mavx512f indexed_vs_fixed_offsets.cpp -o probe && ./probe
#include <immintrin.h>
#include <cstdio>
#include <cstdint>
#include <vector>
#include <chrono>
#include <random>
#include <algorithm>
static double now(){return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();}
alignas(64) float xT[128*64];
__attribute__((noinline)) void indexed(const uint16_t* cols,const float* vals,int n,float* c){
  __m512 a0=_mm512_setzero_ps(),a1=a0,a2=a0,a3=a0,e0=a0,e1=a0,e2=a0,e3=a0;
  for(int j=0;j<n;j+=2){const float* r=xT+(int64_t)cols[j]*64; __m512 w=_mm512_set1_ps(vals[j]);
    a0=_mm512_fmadd_ps(w,_mm512_load_ps(r),a0);a1=_mm512_fmadd_ps(w,_mm512_load_ps(r+16),a1);a2=_mm512_fmadd_ps(w,_mm512_load_ps(r+32),a2);a3=_mm512_fmadd_ps(w,_mm512_load_ps(r+48),a3);
    r=xT+(int64_t)cols[j+1]*64; w=_mm512_set1_ps(vals[j+1]);
    e0=_mm512_fmadd_ps(w,_mm512_load_ps(r),e0);e1=_mm512_fmadd_ps(w,_mm512_load_ps(r+16),e1);e2=_mm512_fmadd_ps(w,_mm512_load_ps(r+32),e2);e3=_mm512_fmadd_ps(w,_mm512_load_ps(r+48),e3);}
  _mm512_store_ps(c,_mm512_add_ps(a0,e0));_mm512_store_ps(c+16,_mm512_add_ps(a1,e1));_mm512_store_ps(c+32,_mm512_add_ps(a2,e2));_mm512_store_ps(c+48,_mm512_add_ps(a3,e3));
}
// affine: entries j use x rows (3*j) % 128 fixed at compile time via unrolled constant offsets
template<int J> static inline void step(const float* vals,__m512& a0,__m512& a1,__m512& a2,__m512& a3){
  constexpr int k=(J*37)%128; const float* r=xT+k*64; __m512 w=_mm512_set1_ps(vals[J]);
  a0=_mm512_fmadd_ps(w,_mm512_load_ps(r),a0);a1=_mm512_fmadd_ps(w,_mm512_load_ps(r+16),a1);a2=_mm512_fmadd_ps(w,_mm512_load_ps(r+32),a2);a3=_mm512_fmadd_ps(w,_mm512_load_ps(r+48),a3);}
template<int... J> static inline void steps(std::integer_sequence<int,J...>,const float* vals,__m512* a,__m512* e){
  ((J%2==0 ? step<J>(vals,a[0],a[1],a[2],a[3]) : step<J>(vals,e[0],e[1],e[2],e[3])),...);}
__attribute__((noinline)) void affine(const float* vals,float* c){
  __m512 a[4],e[4]; for(int i=0;i<4;++i){a[i]=_mm512_setzero_ps();e[i]=a[i];}
  steps(std::make_integer_sequence<int,64>{},vals,a,e);
  for(int i=0;i<4;++i) _mm512_store_ps(c+16*i,_mm512_add_ps(a[i],e[i]));
}
int main(){
  std::vector<uint16_t> cols(64); std::vector<float> vals(64,0.01f); for(int j=0;j<64;++j) cols[j]=(j*37)%128;
  alignas(64) float c[64];
  for(int rep=0;rep<3;++rep){
    long N=2000000; double t=now(); for(long i=0;i<N;++i){indexed(cols.data(),vals.data(),64,c); __asm__ volatile(""::"r"(c):"memory");} double ti=now()-t;
    t=now(); for(long i=0;i<N;++i){affine(vals.data(),c); __asm__ volatile(""::"r"(c):"memory");} double ta=now()-t;
    printf("indexed %.3f ns/weight, affine (JIT-like) %.3f ns/weight\n", ti/N/64*1e9, ta/N/64*1e9);
  }
}
