// CSR kernels written once against Vec<T> (kernels/simd/). This file is
// included inside an ISA namespace by csr_<isa>.cpp after the matching
// simd_<isa>.h; it must not include headers itself.
//
// Panel kernel: vectorised along the dense operand's columns. For each stored
// a[r, k] it broadcasts the value and multiplies it into a register tile of NV
// vectors from row k of b; two accumulator sets (even and odd nonzeros) keep
// enough FMAs in flight to hide their latency. Every nonzero costs NV loads of
// b at random rows, so the kernel is bound by cache bandwidth: NV is chosen so
// the panel of b (a.cols x NV vectors) stays in L2.
// Gather kernel: for few dense vectors, vectorised along the stored entries of
// a row, gathering x at the column indices, then reduced horizontally.

// Half of a typical per-core L2 (1-2 MiB on current x86): room for the panel
// of b, with the rest left to the stream of a's indices and values.
constexpr int64_t kPanelCacheBytes = 512 * 1024;
// Rows are processed in blocks of about this many stored entries (8-12 MiB with
// indices) so a block of a stays in the last-level cache across column panels.
constexpr int64_t kRowBlockNnz = 1 << 20;

template <typename T, int NV>
inline void spmm_row_panel(const index_t* cols, const T* vals, int64_t nnz, const T* b, int64_t ldb,
                           T bias, T* c) {
  using V = Vec<T>;
  constexpr int L = V::kLanes;
  typename V::reg even[NV], odd[NV];
  for (int v = 0; v < NV; ++v) {
    even[v] = V::set1(bias);
    odd[v] = V::zero();
  }
  int64_t j = 0;
  for (; j + 1 < nnz; j += 2) {
    const T* b0 = b + static_cast<int64_t>(cols[j]) * ldb;
    const T* b1 = b + static_cast<int64_t>(cols[j + 1]) * ldb;
    const typename V::reg w0 = V::set1(vals[j]);
    const typename V::reg w1 = V::set1(vals[j + 1]);
    for (int v = 0; v < NV; ++v) even[v] = V::fmadd(w0, V::load(b0 + v * L), even[v]);
    for (int v = 0; v < NV; ++v) odd[v] = V::fmadd(w1, V::load(b1 + v * L), odd[v]);
  }
  if (j < nnz) {
    const T* b0 = b + static_cast<int64_t>(cols[j]) * ldb;
    const typename V::reg w0 = V::set1(vals[j]);
    for (int v = 0; v < NV; ++v) even[v] = V::fmadd(w0, V::load(b0 + v * L), even[v]);
  }
  for (int v = 0; v < NV; ++v) V::store(c + v * L, V::add(even[v], odd[v]));
}

// The last partial vector of columns: `active` < kLanes of them.
template <typename T>
inline void spmm_row_tail(const index_t* cols, const T* vals, int64_t nnz, const T* b, int64_t ldb,
                          T bias, T* c, int64_t active) {
  using V = Vec<T>;
  const typename V::mask m = V::tail_mask(active);
  typename V::reg even = V::set1(bias), odd = V::zero();
  int64_t j = 0;
  for (; j + 1 < nnz; j += 2) {
    even = V::fmadd(V::set1(vals[j]), V::maskz_load(m, b + static_cast<int64_t>(cols[j]) * ldb), even);
    odd = V::fmadd(V::set1(vals[j + 1]), V::maskz_load(m, b + static_cast<int64_t>(cols[j + 1]) * ldb),
                   odd);
  }
  if (j < nnz)
    even = V::fmadd(V::set1(vals[j]), V::maskz_load(m, b + static_cast<int64_t>(cols[j]) * ldb), even);
  V::mask_store(c, m, V::add(even, odd));
}

template <typename T, int NV>
void spmm_rows_nv(const CsrView<T>& a, int64_t row_begin, int64_t row_end, const T* b, int64_t ldb,
                  int64_t n, const T* bias, T* c, int64_t ldc) {
  constexpr int L = Vec<T>::kLanes;
  constexpr int64_t kPanel = static_cast<int64_t>(NV) * L;
  int64_t block_begin = row_begin;
  while (block_begin < row_end) {
    int64_t block_end = block_begin + 1;
    while (block_end < row_end && a.indptr[block_end + 1] - a.indptr[block_begin] <= kRowBlockNnz)
      ++block_end;
    int64_t col = 0;
    for (; col + kPanel <= n; col += kPanel)
      for (int64_t r = block_begin; r < block_end; ++r) {
        const int64_t s = a.indptr[r];
        spmm_row_panel<T, NV>(a.indices + s, a.values + s, a.indptr[r + 1] - s, b + col, ldb,
                              bias ? bias[r] : T(0), c + r * ldc + col);
      }
    for (; col + L <= n; col += L)
      for (int64_t r = block_begin; r < block_end; ++r) {
        const int64_t s = a.indptr[r];
        spmm_row_panel<T, 1>(a.indices + s, a.values + s, a.indptr[r + 1] - s, b + col, ldb,
                             bias ? bias[r] : T(0), c + r * ldc + col);
      }
    if (col < n)
      for (int64_t r = block_begin; r < block_end; ++r) {
        const int64_t s = a.indptr[r];
        spmm_row_tail<T>(a.indices + s, a.values + s, a.indptr[r + 1] - s, b + col, ldb,
                         bias ? bias[r] : T(0), c + r * ldc + col, n - col);
      }
    block_begin = block_end;
  }
}

template <typename T>
void spmm_rows(const CsrView<T>& a, int64_t row_begin, int64_t row_end, const T* b, int64_t ldb,
               int64_t n, const T* bias, T* c, int64_t ldc) {
  // The widest panel whose slice of b (a.cols rows) stays in the L2 cache.
  const auto panel_bytes = [&](int vectors) {
    return static_cast<int64_t>(vectors) * Vec<T>::kLanes * static_cast<int64_t>(sizeof(T)) * a.cols;
  };
  if (panel_bytes(4) <= kPanelCacheBytes)
    spmm_rows_nv<T, 4>(a, row_begin, row_end, b, ldb, n, bias, c, ldc);
  else if (panel_bytes(2) <= kPanelCacheBytes)
    spmm_rows_nv<T, 2>(a, row_begin, row_end, b, ldb, n, bias, c, ldc);
  else
    spmm_rows_nv<T, 1>(a, row_begin, row_end, b, ldb, n, bias, c, ldc);
}

// Dot products of one sparse row with NVEC dense vectors.
template <typename T, int NVEC>
inline void gather_row(const index_t* cols, const T* vals, int64_t nnz, const T* x,
                       int64_t x_vstride, int32_t x_kstride, T* sums) {
  using V = Vec<T>;
  constexpr int L = V::kLanes;
  typename V::reg acc[NVEC];
  for (int v = 0; v < NVEC; ++v) acc[v] = V::zero();
  int64_t j = 0;
  for (; j + L <= nnz; j += L) {
    typename V::ireg idx = V::load_indices(cols + j);
    if (x_kstride != 1) idx = V::scale_indices(idx, x_kstride);
    const typename V::reg w = V::load(vals + j);
    for (int v = 0; v < NVEC; ++v) acc[v] = V::fmadd(w, V::gather(idx, x + v * x_vstride), acc[v]);
  }
  if (j < nnz) {
    const typename V::mask m = V::tail_mask(nnz - j);
    typename V::ireg idx = V::maskz_load_indices(m, cols + j);
    if (x_kstride != 1) idx = V::scale_indices(idx, x_kstride);
    const typename V::reg w = V::maskz_load(m, vals + j);
    for (int v = 0; v < NVEC; ++v)
      acc[v] = V::fmadd(w, V::maskz_gather(m, idx, x + v * x_vstride), acc[v]);
  }
  for (int v = 0; v < NVEC; ++v) sums[v] = V::reduce_add(acc[v]);
}

template <typename T>
void gather_rows(const CsrView<T>& a, int64_t row_begin, int64_t row_end, const T* x,
                 int64_t x_vstride, int64_t x_kstride, int64_t nvec, const T* bias, T* y,
                 int64_t y_vstride, int64_t y_rstride) {
  constexpr int kMaxGroup = 4;
  T sums[kMaxGroup];
  const int32_t kstride = static_cast<int32_t>(x_kstride);
  for (int64_t v0 = 0; v0 < nvec; v0 += kMaxGroup) {
    const int64_t group = nvec - v0 < kMaxGroup ? nvec - v0 : kMaxGroup;
    const T* xg = x + v0 * x_vstride;
    T* yg = y + v0 * y_vstride;
    for (int64_t r = row_begin; r < row_end; ++r) {
      const int64_t s = a.indptr[r], nnz = a.indptr[r + 1] - s;
      const index_t* cols = a.indices + s;
      const T* vals = a.values + s;
      switch (group) {
        case 1: gather_row<T, 1>(cols, vals, nnz, xg, x_vstride, kstride, sums); break;
        case 2: gather_row<T, 2>(cols, vals, nnz, xg, x_vstride, kstride, sums); break;
        case 3: gather_row<T, 3>(cols, vals, nnz, xg, x_vstride, kstride, sums); break;
        default: gather_row<T, 4>(cols, vals, nnz, xg, x_vstride, kstride, sums); break;
      }
      const T b = bias ? bias[r] : T(0);
      for (int64_t v = 0; v < group; ++v) yg[v * y_vstride + r * y_rstride] = sums[v] + b;
    }
  }
}

template <typename T>
inline T dot(const T* x, const T* y, int64_t n) {
  using V = Vec<T>;
  constexpr int L = V::kLanes;
  typename V::reg even = V::zero(), odd = V::zero();
  int64_t t = 0;
  for (; t + 2 * L <= n; t += 2 * L) {
    even = V::fmadd(V::load(x + t), V::load(y + t), even);
    odd = V::fmadd(V::load(x + t + L), V::load(y + t + L), odd);
  }
  for (; t + L <= n; t += L) even = V::fmadd(V::load(x + t), V::load(y + t), even);
  if (t < n) {
    const typename V::mask m = V::tail_mask(n - t);
    odd = V::fmadd(V::maskz_load(m, x + t), V::maskz_load(m, y + t), odd);
  }
  return V::reduce_add(V::add(even, odd));
}

template <typename T>
void sampled_dot_rows(const CsrView<T>& pattern, int64_t row_begin, int64_t row_end, const T* a,
                      int64_t lda, const T* b, int64_t ldb, int64_t n, T* out) {
  for (int64_t r = row_begin; r < row_end; ++r)
    for (int64_t j = pattern.indptr[r]; j < pattern.indptr[r + 1]; ++j)
      out[j] = dot(a + r * lda, b + static_cast<int64_t>(pattern.indices[j]) * ldb, n);
}

template <typename T>
const CsrKernels<T>& csr_kernel_table() {
  static const CsrKernels<T> table{&spmm_rows<T>, &gather_rows<T>, &sampled_dot_rows<T>};
  return table;
}

template const CsrKernels<float>& csr_kernel_table<float>();
template const CsrKernels<double>& csr_kernel_table<double>();
