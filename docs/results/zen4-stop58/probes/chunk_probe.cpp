// The CSR panel kernel's loop in column chunks, standalone: 64 columns of b
// (x^T packed K x 64), values and indices in chunk order, a row's segment
// adding into its 64 outputs as spmm_row_panel does. Prints ns per stored
// weight for each chunk width, one core. Build and run:
//   g++ -O3 -mavx512f -mavx512vl -mavx512bw -mavx512dq -DBLOCK=100000 chunk_probe.cpp
//   ./a.out K N density      (e.g. 384 1152 0.3: MiniLM's q, k, v stacked)
// -DAHEAD=n also prefetches each segment's entries n ahead; BLOCK rows per
// chunk pass (the library's chunk-order blocks).
#include <immintrin.h>
#include <cstdio>
#include <cstdint>
#include <vector>
#include <random>
#include <chrono>
#include <algorithm>
static double now(){return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();}
template <bool Acc>
__attribute__((noinline)) void seg(const uint16_t* cols, const float* vals, int64_t n, const float* x, float* c) {
  __m512 a0=_mm512_setzero_ps(),a1=a0,a2=a0,a3=a0,b0=a0,b1=a0,b2=a0,b3=a0;
  if (Acc) { a0=_mm512_loadu_ps(c); a1=_mm512_loadu_ps(c+16); a2=_mm512_loadu_ps(c+32); a3=_mm512_loadu_ps(c+48); }
#ifdef AHEAD
  { const char* p=(const char*)(cols+AHEAD); const char* e=(const char*)(cols+AHEAD+n);
    for (; p<e; p+=64) __builtin_prefetch(p,0,3);
    p=(const char*)(vals+AHEAD); e=(const char*)(vals+AHEAD+n);
    for (; p<e; p+=64) __builtin_prefetch(p,0,3); }
#endif
  int64_t j=0;
  for (; j+2<=n; j+=2) {
    const float* r=x+int64_t(cols[j])*64; __m512 w=_mm512_set1_ps(vals[j]);
    a0=_mm512_fmadd_ps(w,_mm512_load_ps(r),a0); a1=_mm512_fmadd_ps(w,_mm512_load_ps(r+16),a1);
    a2=_mm512_fmadd_ps(w,_mm512_load_ps(r+32),a2); a3=_mm512_fmadd_ps(w,_mm512_load_ps(r+48),a3);
    const float* q=x+int64_t(cols[j+1])*64; __m512 z=_mm512_set1_ps(vals[j+1]);
    b0=_mm512_fmadd_ps(z,_mm512_load_ps(q),b0); b1=_mm512_fmadd_ps(z,_mm512_load_ps(q+16),b1);
    b2=_mm512_fmadd_ps(z,_mm512_load_ps(q+32),b2); b3=_mm512_fmadd_ps(z,_mm512_load_ps(q+48),b3);
  }
  if (j<n) { const float* r=x+int64_t(cols[j])*64; __m512 w=_mm512_set1_ps(vals[j]);
    a0=_mm512_fmadd_ps(w,_mm512_load_ps(r),a0); a1=_mm512_fmadd_ps(w,_mm512_load_ps(r+16),a1);
    a2=_mm512_fmadd_ps(w,_mm512_load_ps(r+32),a2); a3=_mm512_fmadd_ps(w,_mm512_load_ps(r+48),a3); }
  _mm512_storeu_ps(c,_mm512_add_ps(a0,b0)); _mm512_storeu_ps(c+16,_mm512_add_ps(a1,b1));
  _mm512_storeu_ps(c+32,_mm512_add_ps(a2,b2)); _mm512_storeu_ps(c+48,_mm512_add_ps(a3,b3));
}
int main(int argc, char** argv){
  const int K = argc>1? atoi(argv[1]):384, N = argc>2? atoi(argv[2]):1152; const double dens = argc>3? atof(argv[3]):0.3;
  std::mt19937 g(1); std::uniform_real_distribution<float> U(0,1);
  std::vector<std::vector<uint16_t>> rc(N); std::vector<std::vector<float>> rv(N);
  size_t nnz=0;
  for (int r=0;r<N;++r) for(int k=0;k<K;++k) if(U(g)<dens){rc[r].push_back(k); rv[r].push_back(U(g));++nnz;}
  float* x=(float*)aligned_alloc(64, size_t(K)*64*4); for (int i=0;i<K*64;++i) x[i]=U(g);
  std::vector<float> c(size_t(N)*64);
  for (int width : {16, 24, 32, 48, 64, 96, 128, 192, 384}) {
    if (width > K) continue;
    int chunks=(K+width-1)/width;
    // chunk order arrays
    std::vector<uint16_t> cols; std::vector<float> vals; std::vector<int64_t> start((size_t)N*chunks+1);
    size_t p=0;
    for (int k=0;k<chunks;++k) for(int r=0;r<N;++r){ start[(size_t)k*N+r]=p;
      for(size_t e=0;e<rc[r].size();++e) if(rc[r][e]/width==k){cols.push_back(rc[r][e]); vals.push_back(rv[r][e]);++p;} }
    start[(size_t)chunks*N]=p;
    double best=1e9;
    for (int rep=0;rep<7;++rep){
      double s=now();
      for (int it=0; it<20; ++it)
       for (int rb=0; rb<N; rb+=BLOCK)
        for (int k=0;k<chunks;++k) for(int r=rb;r<std::min(N,rb+BLOCK);++r){ size_t b=start[(size_t)k*N+r], e=start[(size_t)k*N+r+1];
          if(k==0) seg<false>(cols.data()+b, vals.data()+b, e-b, x, c.data()+(size_t)r*64);
          else seg<true>(cols.data()+b, vals.data()+b, e-b, x, c.data()+(size_t)r*64);}
      best=std::min(best,(now()-s)/20);
    }
    printf("K %d N %d dens %.2f width %3d: %.3f ns/weight (%.1f GF/s one core)\n",K,N,dens,width,best/nnz*1e9, 2.0*64*nnz/best/1e9);
  }
}
