// Prototype: code specialised to one sparse weight's pattern (x86-64, AVX-512).
// out[n][i] = sum_k W[i][k] x[n][k]; x^T packed in tiles of 16 batch rows.
// Generated code holds a block of KB rows of the x^T tile in zmm8..31 and
// multiplies the stored weights in as broadcast memory operands, no indices.
#include <immintrin.h>
#include <omp.h>
#include <sys/mman.h>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <vector>
#include <algorithm>

namespace {
struct Emitter {
  std::vector<uint8_t> code;
  void b(uint8_t v) { code.push_back(v); }
  void d32(int32_t v) { for (int i = 0; i < 4; ++i) b(uint8_t(uint32_t(v) >> (8 * i))); }
  void evex(int reg, int vreg, int base, int mmm, int pp, int W, bool bcast) {
    const int v = vreg < 0 ? 0 : vreg;
    b(0x62);
    b(uint8_t((((~reg >> 3) & 1) << 7) | (1 << 6) | (((~base >> 3) & 1) << 5) | (((~reg >> 4) & 1) << 4) | mmm));
    b(uint8_t((W << 7) | (((~v) & 0xF) << 3) | (1 << 2) | pp));
    b(uint8_t((2 << 5) | ((bcast ? 1 : 0) << 4) | (((~v >> 4) & 1) << 3)));
  }
  // vfmadd231ps zmm[acc], zmm[x], [base + disp8*4]{1to16}
  void fma_bcast(int acc, int x, int base, int disp8) {
    evex(acc, x, base, 2, 1, 0, true);
    b(0xB8);
    b(uint8_t((1 << 6) | ((acc & 7) << 3) | (base & 7)));
    b(uint8_t(int8_t(disp8)));
  }
  void movups(bool store, int reg, int base, int32_t disp) {
    evex(reg, -1, base, 1, 0, 0, false);
    b(store ? 0x11 : 0x10);
    b(uint8_t((2 << 6) | ((reg & 7) << 3) | (base & 7)));
    d32(disp);
  }
  void add_imm(int gpr, int32_t imm) {  // add r64, imm32 (gpr < 8)
    b(0x48); b(0x81); b(uint8_t(0xC0 | gpr)); d32(imm);
  }
};
constexpr int RDX = 2, RSI = 6, RDI = 7;
}  // namespace

struct Kernel {
  void* fn = nullptr;
  size_t size = 0;
  std::vector<float> values;
  int64_t row0 = 0, rows = 0;
};

struct Handle {
  int64_t M = 0, K = 0, KB = 24, G = 8;
  std::vector<Kernel> parts;
  size_t code_bytes = 0;
};

static void build(Kernel& kern, const int64_t* indptr, const int32_t* indices, const float* vals,
                  int64_t r0, int64_t r1, int64_t K, int KB, int G) {
  Emitter e;
  std::vector<float>& out_vals = kern.values;
  int64_t base_idx = 128;  // rdx = values + 128
  std::vector<int64_t> cur(r1 - r0);
  for (int64_t r = r0; r < r1; ++r) cur[r - r0] = indptr[r];
  for (int64_t k0 = 0; k0 < K; k0 += KB) {
    const int kb = int(std::min<int64_t>(KB, K - k0));
    for (int j = 0; j < kb; ++j) e.movups(false, G + j, RDI, int32_t((k0 + j) * 64));
    for (int64_t g0 = r0; g0 < r1; g0 += G) {
      const int g = int(std::min<int64_t>(G, r1 - g0));
      int64_t lo[32], hi[32];
      bool any = false;
      for (int t = 0; t < g; ++t) {
        const int64_t r = g0 + t;
        lo[t] = cur[r - r0];
        int64_t h = lo[t];
        while (h < indptr[r + 1] && indices[h] < k0 + kb) ++h;
        hi[t] = h;
        cur[r - r0] = h;
        any |= h > lo[t];
      }
      if (!any) continue;
      for (int t = 0; t < g; ++t)
        if (hi[t] > lo[t]) e.movups(false, t, RSI, int32_t((g0 + t - r0) * 64));
      bool more = true;
      int64_t pos[32];
      for (int t = 0; t < g; ++t) pos[t] = lo[t];
      while (more) {
        more = false;
        for (int t = 0; t < g; ++t) {
          if (pos[t] >= hi[t]) continue;
          const int64_t vidx = int64_t(out_vals.size());
          if (vidx - base_idx > 127) { e.add_imm(RDX, 1024); base_idx += 256; }
          out_vals.push_back(vals[pos[t]]);
          e.fma_bcast(t, G + (indices[pos[t]] - int(k0)), RDX, int(vidx - base_idx));
          ++pos[t];
          more = true;
        }
      }
      for (int t = 0; t < g; ++t)
        if (hi[t] > lo[t]) e.movups(true, t, RSI, int32_t((g0 + t - r0) * 64));
    }
  }
  e.b(0xC5); e.b(0xF8); e.b(0x77);  // vzeroupper
  e.b(0xC3);
  out_vals.resize(out_vals.size() + 256);
  kern.size = e.code.size();
  void* mem = mmap(nullptr, kern.size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  std::memcpy(mem, e.code.data(), kern.size);
  mprotect(mem, kern.size, PROT_READ | PROT_EXEC);
  kern.fn = mem;
  kern.row0 = r0;
  kern.rows = r1 - r0;
}

extern "C" {
void* jit_create(int64_t M, int64_t K, const int64_t* indptr, const int32_t* indices,
                 const float* vals, int parts, int KB, int G) {
  Handle* h = new Handle;
  h->M = M; h->K = K; h->KB = KB; h->G = G;
  const int64_t nnz = indptr[M];
  int64_t r = 0;
  for (int p = 0; p < parts; ++p) {
    int64_t r1 = r;
    const int64_t target = nnz * (p + 1) / parts;
    while (r1 < M && indptr[r1] < target) ++r1;
    if (p == parts - 1) r1 = M;
    Kernel kern;
    build(kern, indptr, indices, vals, r, r1, K, KB, G);
    h->code_bytes += kern.size;
    h->parts.push_back(std::move(kern));
    r = r1;
  }
  return h;
}
size_t jit_code_bytes(void* hp) { return static_cast<Handle*>(hp)->code_bytes; }
void jit_dump(void* hp, const char* path) {
  Handle* h = static_cast<Handle*>(hp);
  FILE* f = fopen(path, "wb");
  fwrite(h->parts[0].fn, 1, std::min<size_t>(h->parts[0].size, 4096), f);
  fclose(f);
}
// x: N x K row-major; out: N x M row-major. Scratch per thread.
void jit_run(void* hp, const float* x, int64_t N, float* out, int threads) {
  Handle* h = static_cast<Handle*>(hp);
  const int64_t K = h->K, M = h->M;
  const int64_t tiles = (N + 15) / 16;
  static std::vector<float> xt;  // tiles x K x 16
  xt.resize(size_t(tiles * K * 16));
  std::vector<float> otile(size_t(M * 16 * tiles));
#pragma omp parallel num_threads(threads)
  {
    const int tid = omp_get_thread_num();
#pragma omp for schedule(static)
    for (int64_t t = 0; t < tiles; ++t)
      for (int64_t k = 0; k < K; ++k)
        for (int j = 0; j < 16; ++j) {
          const int64_t n = t * 16 + j;
          xt[size_t((t * K + k) * 16 + j)] = n < N ? x[n * K + k] : 0.f;
        }
    // implicit barrier
    const Kernel& kern = h->parts[size_t(tid)];
    using Fn = void (*)(const float*, float*, const float*);
    Fn fn = reinterpret_cast<Fn>(kern.fn);
    for (int64_t t = 0; t < tiles; ++t) {
      float* ot = otile.data() + (t * M + kern.row0) * 16;
      std::memset(ot, 0, size_t(kern.rows * 16 * 4));
      fn(xt.data() + t * K * 16, ot, kern.values.data() + 128);
    }
#pragma omp barrier
#pragma omp for schedule(static)
    for (int64_t n = 0; n < N; ++n) {
      const int64_t t = n / 16, j = n % 16;
      for (int64_t i = 0; i < M; ++i) out[n * M + i] = otile[size_t((t * M + i) * 16 + j)];
    }
  }
}
}
