// Probe (stop 56): the chunked CSR panel loop against rows taken in pairs (columns
// both rows store share one load of x). g++ -O2 -std=c++17 -mavx512f -mavx512vl -mfma
// csr_rows_paired.cpp -o probe && ./probe DENSITY CHUNK CHUNK 1 [COLS]
#include <immintrin.h>
#include <cstdio>
#include <cstdint>
#include <vector>
#include <random>
#include <chrono>
#include <algorithm>
#include <cstring>
using namespace std;
static double now(){return chrono::duration<double>(chrono::steady_clock::now().time_since_epoch()).count();}
int N=3072,K=4096; const int P=64;
struct Csr{vector<int64_t> ptr; vector<uint16_t> idx; vector<float> val;};
// baseline: chunked, chunk order: for chunk, for row: segment
struct Chunked{int chunkw, nch; vector<int64_t> seg; vector<int32_t> cnt; vector<uint16_t> idx; vector<float> val;};
static inline void seg_kernel(const uint16_t* cols,const float* vals,int64_t nnz,const float* b,float* c,bool first,float bias){
  __m512 a0,a1,a2,a3,e0=_mm512_setzero_ps(),e1=e0,e2=e0,e3=e0;
  if(first){a0=a1=a2=a3=_mm512_set1_ps(bias);} else {a0=_mm512_loadu_ps(c);a1=_mm512_loadu_ps(c+16);a2=_mm512_loadu_ps(c+32);a3=_mm512_loadu_ps(c+48);}
  int64_t j=0;
  for(;j+2<=nnz;j+=2){const float* r=b+(int64_t)cols[j]*64; __m512 w=_mm512_set1_ps(vals[j]);
    a0=_mm512_fmadd_ps(w,_mm512_loadu_ps(r),a0);a1=_mm512_fmadd_ps(w,_mm512_loadu_ps(r+16),a1);a2=_mm512_fmadd_ps(w,_mm512_loadu_ps(r+32),a2);a3=_mm512_fmadd_ps(w,_mm512_loadu_ps(r+48),a3);
    r=b+(int64_t)cols[j+1]*64; w=_mm512_set1_ps(vals[j+1]);
    e0=_mm512_fmadd_ps(w,_mm512_loadu_ps(r),e0);e1=_mm512_fmadd_ps(w,_mm512_loadu_ps(r+16),e1);e2=_mm512_fmadd_ps(w,_mm512_loadu_ps(r+32),e2);e3=_mm512_fmadd_ps(w,_mm512_loadu_ps(r+48),e3);}
  for(;j<nnz;++j){const float* r=b+(int64_t)cols[j]*64; __m512 w=_mm512_set1_ps(vals[j]);
    a0=_mm512_fmadd_ps(w,_mm512_loadu_ps(r),a0);a1=_mm512_fmadd_ps(w,_mm512_loadu_ps(r+16),a1);a2=_mm512_fmadd_ps(w,_mm512_loadu_ps(r+32),a2);a3=_mm512_fmadd_ps(w,_mm512_loadu_ps(r+48),a3);}
  _mm512_storeu_ps(c,_mm512_add_ps(a0,e0));_mm512_storeu_ps(c+16,_mm512_add_ps(a1,e1));_mm512_storeu_ps(c+32,_mm512_add_ps(a2,e2));_mm512_storeu_ps(c+48,_mm512_add_ps(a3,e3));
}
// grouped 4-row tiles
struct Grouped{int chunkw,nch; vector<int64_t> tstart; /* per (chunk,tile): offsets into ks and vals */ vector<int64_t> vstart; vector<uint16_t> counts; vector<uint16_t> ks; vector<float> vals;};
template<int M> static inline void group_run(const uint16_t* ks,const float* vals,int n,const float* b,__m512 (&acc)[4][4]){
  constexpr int p=__builtin_popcount(M);
  for(int i=0;i<n;++i){const float* r=b+(int64_t)ks[i]*64;
    __m512 x0=_mm512_loadu_ps(r),x1=_mm512_loadu_ps(r+16),x2=_mm512_loadu_ps(r+32),x3=_mm512_loadu_ps(r+48);
    int q=0;
#define ROW(R) if constexpr((M>>R)&1){__m512 w=_mm512_set1_ps(vals[q++]);acc[R][0]=_mm512_fmadd_ps(w,x0,acc[R][0]);acc[R][1]=_mm512_fmadd_ps(w,x1,acc[R][1]);acc[R][2]=_mm512_fmadd_ps(w,x2,acc[R][2]);acc[R][3]=_mm512_fmadd_ps(w,x3,acc[R][3]);}
    ROW(0) ROW(1) ROW(2) ROW(3)
    vals+=p;}
}
template<int M> static inline void group_run1(const uint16_t* ks,const float* vals,int n,const float* b,__m512 (&acc)[4][4]){
  // single-row group with a second accumulator set
  constexpr int R= M==1?0:M==2?1:M==4?2:3;
  __m512 t0=_mm512_setzero_ps(),t1=t0,t2=t0,t3=t0; int i=0;
  for(;i+2<=n;i+=2){const float* r=b+(int64_t)ks[i]*64; __m512 w=_mm512_set1_ps(vals[i]);
    acc[R][0]=_mm512_fmadd_ps(w,_mm512_loadu_ps(r),acc[R][0]);acc[R][1]=_mm512_fmadd_ps(w,_mm512_loadu_ps(r+16),acc[R][1]);acc[R][2]=_mm512_fmadd_ps(w,_mm512_loadu_ps(r+32),acc[R][2]);acc[R][3]=_mm512_fmadd_ps(w,_mm512_loadu_ps(r+48),acc[R][3]);
    r=b+(int64_t)ks[i+1]*64; w=_mm512_set1_ps(vals[i+1]);
    t0=_mm512_fmadd_ps(w,_mm512_loadu_ps(r),t0);t1=_mm512_fmadd_ps(w,_mm512_loadu_ps(r+16),t1);t2=_mm512_fmadd_ps(w,_mm512_loadu_ps(r+32),t2);t3=_mm512_fmadd_ps(w,_mm512_loadu_ps(r+48),t3);}
  if(i<n){const float* r=b+(int64_t)ks[i]*64; __m512 w=_mm512_set1_ps(vals[i]);
    acc[R][0]=_mm512_fmadd_ps(w,_mm512_loadu_ps(r),acc[R][0]);acc[R][1]=_mm512_fmadd_ps(w,_mm512_loadu_ps(r+16),acc[R][1]);acc[R][2]=_mm512_fmadd_ps(w,_mm512_loadu_ps(r+32),acc[R][2]);acc[R][3]=_mm512_fmadd_ps(w,_mm512_loadu_ps(r+48),acc[R][3]);}
  acc[R][0]=_mm512_add_ps(acc[R][0],t0);acc[R][1]=_mm512_add_ps(acc[R][1],t1);acc[R][2]=_mm512_add_ps(acc[R][2],t2);acc[R][3]=_mm512_add_ps(acc[R][3],t3);
}

struct Paired{int chunkw,nch; vector<int64_t> start; vector<int32_t> n0,n1,nb; vector<uint16_t> idx; vector<float> val;};
#define FMA4(A,W,R) A##0=_mm512_fmadd_ps(W,_mm512_loadu_ps(R),A##0);A##1=_mm512_fmadd_ps(W,_mm512_loadu_ps(R+16),A##1);A##2=_mm512_fmadd_ps(W,_mm512_loadu_ps(R+32),A##2);A##3=_mm512_fmadd_ps(W,_mm512_loadu_ps(R+48),A##3);
static inline void only_loop(const uint16_t* cols,const float* vals,int n,const float* b,__m512& a0,__m512& a1,__m512& a2,__m512& a3){
  __m512 e0=_mm512_setzero_ps(),e1=e0,e2=e0,e3=e0; int j=0;
  for(;j+2<=n;j+=2){const float* r=b+(int64_t)cols[j]*64; __m512 w=_mm512_set1_ps(vals[j]); FMA4(a,w,r)
    r=b+(int64_t)cols[j+1]*64; w=_mm512_set1_ps(vals[j+1]); FMA4(e,w,r)}
  if(j<n){const float* r=b+(int64_t)cols[j]*64; __m512 w=_mm512_set1_ps(vals[j]); FMA4(a,w,r)}
  a0=_mm512_add_ps(a0,e0);a1=_mm512_add_ps(a1,e1);a2=_mm512_add_ps(a2,e2);a3=_mm512_add_ps(a3,e3);
}
static inline void pair_kernel(const uint16_t* cols,const float* vals,int nb,int n0,int n1,const float* b,float* c0,float* c1,bool first,float bias0,float bias1){
  __m512 a0,a1,a2,a3,b0,b1,b2,b3;
  if(first){a0=a1=a2=a3=_mm512_set1_ps(bias0);b0=b1=b2=b3=_mm512_set1_ps(bias1);} else {a0=_mm512_loadu_ps(c0);a1=_mm512_loadu_ps(c0+16);a2=_mm512_loadu_ps(c0+32);a3=_mm512_loadu_ps(c0+48);b0=_mm512_loadu_ps(c1);b1=_mm512_loadu_ps(c1+16);b2=_mm512_loadu_ps(c1+32);b3=_mm512_loadu_ps(c1+48);}
  for(int j=0;j<nb;++j){const float* r=b+(int64_t)cols[j]*64; __m512 x0=_mm512_loadu_ps(r),x1=_mm512_loadu_ps(r+16),x2=_mm512_loadu_ps(r+32),x3=_mm512_loadu_ps(r+48);
    __m512 w=_mm512_set1_ps(vals[2*j]), v=_mm512_set1_ps(vals[2*j+1]);
    a0=_mm512_fmadd_ps(w,x0,a0);a1=_mm512_fmadd_ps(w,x1,a1);a2=_mm512_fmadd_ps(w,x2,a2);a3=_mm512_fmadd_ps(w,x3,a3);
    b0=_mm512_fmadd_ps(v,x0,b0);b1=_mm512_fmadd_ps(v,x1,b1);b2=_mm512_fmadd_ps(v,x2,b2);b3=_mm512_fmadd_ps(v,x3,b3);}
  cols+=nb; vals+=2*nb;
  only_loop(cols,vals,n0,b,a0,a1,a2,a3); cols+=n0; vals+=n0;
  only_loop(cols,vals,n1,b,b0,b1,b2,b3);
  _mm512_storeu_ps(c0,a0);_mm512_storeu_ps(c0+16,a1);_mm512_storeu_ps(c0+32,a2);_mm512_storeu_ps(c0+48,a3);
  _mm512_storeu_ps(c1,b0);_mm512_storeu_ps(c1+16,b1);_mm512_storeu_ps(c1+32,b2);_mm512_storeu_ps(c1+48,b3);
}
int main(int argc,char**argv){
  double dens=argc>1?atof(argv[1]):0.3; int chunkw=argc>2?atoi(argv[2]):192; int gchunk=argc>3?atoi(argv[3]):192; int single2=argc>4?atoi(argv[4]):1; if(argc>5) K=atoi(argv[5]);
  mt19937 rng(1); uniform_real_distribution<float> U(0,1);
  vector<float> W((size_t)N*K); for(auto&w:W) w=U(rng)<dens?U(rng)-0.5f:0.f;
  vector<float> xTv((size_t)K*P+16); float* xTp=(float*)(((uintptr_t)xTv.data()+63)&~(uintptr_t)63); struct{float* p; float* data(){return p;} float& operator[](size_t i){return p[i];}} xT{xTp}; for(size_t i=0;i<(size_t)K*P;++i) xT[i]=U(rng)-0.5f;
  vector<float> bias(N,0.1f);
  int64_t nnz=0; for(float w:W) nnz+=w!=0;
  // reference
  vector<float> ref((size_t)N*P,0.f);
  for(int r=0;r<N;++r) for(int k=0;k<K;++k){float w=W[(size_t)r*K+k]; if(w!=0) for(int j=0;j<P;++j) ref[(size_t)r*P+j]+=w*xT[(size_t)k*P+j];}
  for(int r=0;r<N;++r) for(int j=0;j<P;++j) ref[(size_t)r*P+j]+=bias[r];
  // chunked build (chunk-major contiguous)
  Chunked C; C.chunkw=chunkw; C.nch=(K+chunkw-1)/chunkw;
  for(int ch=0;ch<C.nch;++ch) for(int r=0;r<N;++r){C.seg.push_back(C.idx.size()); int cnt=0; for(int k=ch*chunkw;k<min(K,(ch+1)*chunkw);++k){float w=W[(size_t)r*K+k]; if(w!=0){C.idx.push_back(k);C.val.push_back(w);cnt++;}} C.cnt.push_back(cnt);}
  // grouped build: tiles of 4 rows, chunks of gchunk columns
  Grouped G; G.chunkw=gchunk; G.nch=(K+gchunk-1)/gchunk;
  for(int ch=0;ch<G.nch;++ch) for(int t=0;t<N/4;++t){
    G.tstart.push_back(G.ks.size()); G.vstart.push_back(G.vals.size());
    for(int m=1;m<16;++m){int cnt=0; for(int k=ch*gchunk;k<min(K,(ch+1)*gchunk);++k){int mk=0; for(int q=0;q<4;++q) if(W[(size_t)(4*t+q)*K+k]!=0) mk|=1<<q; if(mk==m){G.ks.push_back(k); for(int q=0;q<4;++q) if(mk>>q&1) G.vals.push_back(W[(size_t)(4*t+q)*K+k]); cnt++;}} G.counts.push_back(cnt);} }
  vector<float> c((size_t)N*P);
  auto run_chunked=[&]{ for(int ch=0;ch<C.nch;++ch) for(int r=0;r<N;++r){size_t s=(size_t)ch*N+r; seg_kernel(&C.idx[C.seg[s]],&C.val[C.seg[s]],C.cnt[s],xT.data(),&c[(size_t)r*P],ch==0,bias[r]);} };
  auto run_grouped=[&]{ for(int ch=0;ch<G.nch;++ch) for(int t=0;t<N/4;++t){ size_t s=(size_t)ch*(N/4)+t; const uint16_t* ks=&G.ks[G.tstart[s]]; const float* vals=&G.vals[G.vstart[s]]; const uint16_t* cn=&G.counts[s*15];
      __m512 acc[4][4]; for(int q=0;q<4;++q) for(int v=0;v<4;++v) acc[q][v]= ch==0? _mm512_set1_ps(bias[4*t+q]) : _mm512_loadu_ps(&c[(size_t)(4*t+q)*P+16*v]);
#define G1(M) if(single2) group_run1<M>(ks,vals,cn[M-1],xT.data(),acc); else group_run<M>(ks,vals,cn[M-1],xT.data(),acc); ks+=cn[M-1]; vals+=cn[M-1];
#define GG(M) group_run<M>(ks,vals,cn[M-1],xT.data(),acc); ks+=cn[M-1]; vals+=cn[M-1]*__builtin_popcount(M);
      G1(1) G1(2) GG(3) G1(4) GG(5) GG(6) GG(7) G1(8) GG(9) GG(10) GG(11) GG(12) GG(13) GG(14) GG(15)
      for(int q=0;q<4;++q) for(int v=0;v<4;++v) _mm512_storeu_ps(&c[(size_t)(4*t+q)*P+16*v],acc[q][v]); } };

  Paired Q; Q.chunkw=chunkw; Q.nch=(K+chunkw-1)/chunkw;
  for(int ch=0;ch<Q.nch;++ch) for(int t=0;t<N/2;++t){ Q.start.push_back(Q.idx.size()); int nb=0,n0=0,n1=0; int k0=ch*chunkw,k1=min(K,(ch+1)*chunkw);
    vector<uint16_t> i0,i1; vector<float> v0,v1;
    for(int k=k0;k<k1;++k){float w=W[(size_t)(2*t)*K+k], v=W[(size_t)(2*t+1)*K+k]; if(w!=0&&v!=0){Q.idx.push_back(k);Q.val.push_back(w);Q.val.push_back(v);nb++;} else if(w!=0){i0.push_back(k);v0.push_back(w);} else if(v!=0){i1.push_back(k);v1.push_back(v);}}
    for(size_t q=0;q<i0.size();++q){Q.idx.push_back(i0[q]);Q.val.push_back(v0[q]);} for(size_t q=0;q<i1.size();++q){Q.idx.push_back(i1[q]);Q.val.push_back(v1[q]);}
    Q.nb.push_back(nb);Q.n0.push_back(i0.size());Q.n1.push_back(i1.size()); }
  vector<int64_t> vstartQ; { int64_t vs=0; for(size_t s=0;s<Q.start.size();++s){vstartQ.push_back(vs); vs+=2*Q.nb[s]+Q.n0[s]+Q.n1[s];} }
  auto run_paired=[&]{ for(int ch=0;ch<Q.nch;++ch) for(int t=0;t<N/2;++t){size_t s=(size_t)ch*(N/2)+t; pair_kernel(&Q.idx[Q.start[s]],&Q.val[vstartQ[s]],Q.nb[s],Q.n0[s],Q.n1[s],xT.data(),&c[(size_t)(2*t)*P],&c[(size_t)(2*t+1)*P],ch==0,bias[2*t],bias[2*t+1]);} };
  auto check=[&](const char* nm){double e=0; for(size_t i=0;i<c.size();++i) e=max(e,(double)fabs(c[i]-ref[i])); printf("%s maxerr %.2e\n",nm,e);};
  run_chunked(); check("chunked"); run_grouped(); check("grouped"); run_paired(); check("paired");
  for(int rep=0;rep<3;++rep){
    double best1=1e9,best2=1e9;
    for(int i=0;i<15;++i){double t=now(); run_chunked(); best1=min(best1,now()-t); t=now(); run_paired(); best2=min(best2,now()-t);}
    printf("dens %.2f chunked(%d) %.3f ms %.2f ns/w | paired(%d) %.3f ms %.2f ns/w  speedup %.2f\n",dens,chunkw,best1*1e3,best1/nnz*1e9,gchunk,best2*1e3,best2/nnz*1e9,best1/best2);
  }
}
