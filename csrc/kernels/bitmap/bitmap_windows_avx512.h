// The batch-1 walk of very sparse rows by their stored columns, for AVX-512:
// each window of a row's stored weights (ColumnWindowPlan, core/bitmap_matrix.h:
// up to 16 within 256 columns) gathers its entries of x at once from the
// window's first column, by the weights' offset bytes, and multiplies them
// with its values (float, or bfloat16 widened by a shift). At 90% sparsity a
// 64-column word holds about six weights, which the bit walk decodes with
// one expand per 16 columns whatever their number.
//
// Included inside an ISA namespace, after <immintrin.h>, by bitmap_avx512.cpp
// (float values) and bitmap_avx512ext.cpp (bfloat16).

// Bytes of a row's offsets and values prefetched ahead. Xeon, cold
// 4096 x 11008 bfloat16 at 90%, 2 threads (standalone loop): 2048 0.64-0.69 ms,
// 1024 0.67-0.68, 4096 0.65-0.71, none 0.84-0.92.
constexpr int64_t kWindowAhead = 2048;

// The m-masked values of one window, as floats.
template <typename V>
struct WindowValues;

template <>
struct WindowValues<float> {
  static __m512 load(__mmask16 m, const float* p) { return _mm512_maskz_loadu_ps(m, p); }
};

template <>
struct WindowValues<bfloat16_t> {
  // Exactly: the bits go to the upper halves of the floats.
  static __m512 load(__mmask16 m, const bfloat16_t* p) {
    const __m256i bits = _mm256_maskz_loadu_epi16(m, p);
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(bits), 16));
  }
};

// acc + one window's weights times x: the window's offsets and values start
// at `offsets` and `values`, which advance past them. Lanes past the window's
// weights are masked: nothing past the row's last weight is read.
template <typename V>
inline __m512 window_dot(uint32_t window, const float* x, const uint8_t*& offsets, const V*& values,
                         __m512 acc) {
  const unsigned weights = window & ColumnWindowPlan::kCountMask;
  const __mmask16 m = _cvtu32_mask16((1u << weights) - 1);
  const __m512i lanes = _mm512_cvtepu8_epi32(_mm_maskz_loadu_epi8(m, offsets));
  const __m512 w = WindowValues<V>::load(m, values);
  const float* first = x + (window >> ColumnWindowPlan::kCountBits);
  offsets += weights;
  values += weights;
  return _mm512_fmadd_ps(w, _mm512_mask_i32gather_ps(_mm512_setzero_ps(), m, lanes, first, 4), acc);
}

// row r . x, windows alternating between two accumulators.
template <typename V>
inline float row_dot_windows(const ColumnWindowPlan& plan, const BitmapView<V>& a, int64_t r,
                             const float* x) {
  const uint32_t* windows = plan.windows.data() + plan.row_windows[r];
  const int64_t count = plan.row_windows[r + 1] - plan.row_windows[r];
  const uint8_t* offsets = plan.offsets.data() + a.offsets[r];
  const V* values = a.values + a.offsets[r];
  __m512 even = _mm512_setzero_ps(), odd = _mm512_setzero_ps();
  int64_t i = 0;
  for (; i + 2 <= count; i += 2) {
    // Two windows take about 32 offset bytes and 32 values: one line of
    // bfloat16 values, two of floats.
    _mm_prefetch(reinterpret_cast<const char*>(offsets) + kWindowAhead, _MM_HINT_T0);
    _mm_prefetch(reinterpret_cast<const char*>(values) + kWindowAhead, _MM_HINT_T0);
    if constexpr (sizeof(V) > 2)
      _mm_prefetch(reinterpret_cast<const char*>(values) + kWindowAhead + 64, _MM_HINT_T0);
    even = window_dot(windows[i], x, offsets, values, even);
    odd = window_dot(windows[i + 1], x, offsets, values, odd);
  }
  if (i < count) even = window_dot(windows[i], x, offsets, values, even);
  return _mm512_reduce_add_ps(_mm512_add_ps(even, odd));
}

// BitmapKernels::gemv_rows_indexed for values of type V.
template <typename V>
void gemv_rows_windows(const ColumnWindowPlan& plan, const BitmapView<V>& a, int64_t row_begin,
                       int64_t row_end, const float* x, int64_t x_vstride, int64_t nvec,
                       const float* bias, float* y, int64_t y_vstride, int64_t y_rstride) {
  for (int64_t r = row_begin; r < row_end; ++r) {
    const float b = bias ? bias[r] : 0.0f;
    for (int64_t v = 0; v < nvec; ++v)
      y[v * y_vstride + r * y_rstride] = row_dot_windows(plan, a, r, x + v * x_vstride) + b;
  }
}
