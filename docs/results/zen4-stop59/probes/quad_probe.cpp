// CSR panel loop (one row at a time, weight broadcast, 4 FMAs on x^T rows from memory)
// against a row-quad loop where the union columns of 4 rows are grouped by which rows
// store them: x^T[c] loaded once into registers, then k broadcasts and 4k FMAs.
#include <immintrin.h>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <utility>
#include <vector>
constexpr int NB = 64;  // batch columns: 4 zmm
struct Csr { std::vector<int32_t> ptr; std::vector<uint16_t> col; std::vector<float> val; };
struct Quad {
  std::vector<int64_t> col_ptr, val_ptr;  // quads*16+1 each (category 0 empty)
  std::vector<uint16_t> col;
  std::vector<float> val;  // per col, k weights in row order
};
__attribute__((noinline)) void csr_rows(const Csr& a, int rows, const float* xt, float* y) {
  for (int r = 0; r < rows; ++r) {
    __m512 acc[8];
    for (auto& v : acc) v = _mm512_setzero_ps();
    int j = a.ptr[r], e = a.ptr[r + 1];
    for (; j + 2 <= e; j += 2) {
#pragma GCC unroll 2
      for (int u = 0; u < 2; ++u) {
        const float* row = xt + a.col[j + u] * NB;
        __m512 w = _mm512_set1_ps(a.val[j + u]);
#pragma GCC unroll 4
        for (int v = 0; v < 4; ++v) acc[u * 4 + v] = _mm512_fmadd_ps(w, _mm512_load_ps(row + 16 * v), acc[u * 4 + v]);
      }
    }
    for (; j < e; ++j) {
      const float* row = xt + a.col[j] * NB;
      __m512 w = _mm512_set1_ps(a.val[j]);
#pragma GCC unroll 4
      for (int v = 0; v < 4; ++v) acc[v] = _mm512_fmadd_ps(w, _mm512_load_ps(row + 16 * v), acc[v]);
    }
    for (int v = 0; v < 4; ++v) _mm512_store_ps(y + r * NB + 16 * v, _mm512_add_ps(acc[v], acc[4 + v]));
  }
}
template <int M>
__attribute__((always_inline)) inline void cat_loop(const uint16_t* col, const float* val, int64_t n,
                                                    const float* xt, __m512 (&acc)[4][4]) {
  constexpr int K = __builtin_popcount(M);
  for (int64_t i = 0; i < n; ++i) {
    const float* row = xt + col[i] * NB;
    __m512 x0 = _mm512_load_ps(row), x1 = _mm512_load_ps(row + 16), x2 = _mm512_load_ps(row + 32),
           x3 = _mm512_load_ps(row + 48);
    int k = 0;
#pragma GCC unroll 4
    for (int q = 0; q < 4; ++q) {
      if (M & (1 << q)) {
        __m512 w = _mm512_set1_ps(val[i * K + k]);
        ++k;
        acc[q][0] = _mm512_fmadd_ps(w, x0, acc[q][0]);
        acc[q][1] = _mm512_fmadd_ps(w, x1, acc[q][1]);
        acc[q][2] = _mm512_fmadd_ps(w, x2, acc[q][2]);
        acc[q][3] = _mm512_fmadd_ps(w, x3, acc[q][3]);
      }
    }
  }
}
template <int... Ms>
__attribute__((always_inline)) inline void all_cats(const Quad& a, int64_t quad, const float* xt,
                                                    __m512 (&acc)[4][4], std::integer_sequence<int, Ms...>) {
  (cat_loop<Ms + 1>(a.col.data() + a.col_ptr[quad * 16 + Ms + 1], a.val.data() + a.val_ptr[quad * 16 + Ms + 1],
                    a.col_ptr[quad * 16 + Ms + 2] - a.col_ptr[quad * 16 + Ms + 1], xt, acc), ...);
}
__attribute__((noinline)) void quad_rows(const Quad& a, int rows, const float* xt, float* y) {
  for (int64_t quad = 0; quad < rows / 4; ++quad) {
    __m512 acc[4][4];
    for (auto& r : acc) for (auto& v : r) v = _mm512_setzero_ps();
    all_cats(a, quad, xt, acc, std::make_integer_sequence<int, 15>{});
    for (int q = 0; q < 4; ++q)
      for (int v = 0; v < 4; ++v) _mm512_store_ps(y + (quad * 4 + q) * NB + 16 * v, acc[q][v]);
  }
}
int main(int argc, char** argv) {
  const double d = argc > 1 ? atof(argv[1]) : 0.3;
  const int cols = argc > 2 ? atoi(argv[2]) : 128;  // chunk columns (x^T panel cols*256 B)
  const int rows = argc > 3 ? atoi(argv[3]) : 256;
  std::mt19937 rng(1);
  std::uniform_real_distribution<float> U(0, 1);
  std::vector<std::vector<float>> W(rows, std::vector<float>(cols, 0));
  int64_t nnz = 0;
  for (auto& r : W) for (auto& w : r) if (U(rng) < d) { w = U(rng) + 0.5f; ++nnz; }
  Csr c; c.ptr.push_back(0);
  for (auto& r : W) { for (int j = 0; j < cols; ++j) if (r[j] != 0) { c.col.push_back(j); c.val.push_back(r[j]); } c.ptr.push_back(c.col.size()); }
  Quad q;
  for (int quad = 0; quad < rows / 4; ++quad) {
    for (int m = 0; m < 16; ++m) {
      q.col_ptr.push_back(q.col.size()); q.val_ptr.push_back(q.val.size());
      if (m == 0) continue;
      for (int j = 0; j < cols; ++j) {
        int mm = 0; for (int k = 0; k < 4; ++k) if (W[quad * 4 + k][j] != 0) mm |= 1 << k;
        if (mm != m) continue;
        q.col.push_back(j);
        for (int k = 0; k < 4; ++k) if (W[quad * 4 + k][j] != 0) q.val.push_back(W[quad * 4 + k][j]);
      }
    }
  }
  q.col_ptr.push_back(q.col.size()); q.val_ptr.push_back(q.val.size());
  // col_ptr indexing: quad*16 + m  (m in 0..15), need +1 sentinel per quad: rebuild as flat with next quad's m=0
  float* xt = (float*)aligned_alloc(64, cols * NB * 4);
  for (int i = 0; i < cols * NB; ++i) xt[i] = U(rng);
  float* y1 = (float*)aligned_alloc(64, rows * NB * 4);
  float* y2 = (float*)aligned_alloc(64, rows * NB * 4);
  auto time = [&](auto f) {
    double best = 1e30;
    for (int rep = 0; rep < 30; ++rep) {
      auto t0 = std::chrono::steady_clock::now();
      for (int i = 0; i < 50; ++i) f();
      double ns = std::chrono::duration<double, std::nano>(std::chrono::steady_clock::now() - t0).count() / 50;
      if (ns < best) best = ns;
    }
    return best;
  };
  double t1 = time([&] { csr_rows(c, rows, xt, y1); });
  double t2 = time([&] { quad_rows(q, rows, xt, y2); });
  double err = 0;
  for (int i = 0; i < rows * NB; ++i) err = std::max(err, (double)std::abs(y1[i] - y2[i]));
  printf("d=%.2f cols=%d rows=%d nnz=%ld: csr %.3f ns/w (%.2f cyc)  quad %.3f ns/w (%.2f cyc)  speedup %.2f  maxerr %.2g\n",
         d, cols, rows, (long)nnz, t1 / nnz, 3 * t1 / nnz, t2 / nnz, 3 * t2 / nnz, t1 / t2, err);
}
