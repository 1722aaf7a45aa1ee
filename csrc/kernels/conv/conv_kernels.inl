// Direct sparse convolution written once against Vec<T> (kernels/simd/). This
// file is included inside an ISA namespace by conv_<isa>.cpp after the
// matching simd_<isa>.h; it must not include headers itself.
//
// A chunk of up to kChunkVectors output vectors of one output row stays in
// registers while every tap (stored weight) of its output channel is streamed:
// each tap costs one broadcast and, per vector, one unaligned load of the
// input row shifted by the tap's column and one FMA. Vectors that would read
// left or right of the input row (zero padding, or the row's tail) use a
// masked load instead, so padding is never materialised. Taps alternate
// between two accumulator sets so that consecutive FMAs into a vector are
// independent.

constexpr int kChunkVectors = 4;

// acc[v] += weight * (input under output vector v of the chunk), for a chunk
// of NV vectors whose first output column is x0 of output row y.
template <typename T, int NV>
inline void accumulate_tap(const ConvTap& tap, T weight, const T* in, int64_t row_base,
                           int64_t in_row0, int64_t in_h, int64_t x0, typename Vec<T>::reg* acc) {
  using V = Vec<T>;
  constexpr int L = V::kLanes;
  const int64_t row = in_row0 + tap.row;
  if (row < 0 || row >= in_h) return;  // zero padding above or below the image
  // row_base (the offset of output (y, x0) before the tap's) plus tap.offset
  // may pass through negative values, so they are summed as integers first.
  const T* src = in + (row_base + tap.offset);
  const int64_t first_col = x0 + tap.col;  // input column under lane 0 of vector 0
  const typename V::reg w = V::set1(weight);
  for (int v = 0; v < NV; ++v) {
    const int64_t col = first_col + static_cast<int64_t>(v) * L;
    if (col >= 0 && col + L <= tap.width) {
      acc[v] = V::fmadd(w, V::load(src + v * L), acc[v]);
    } else {
      // Lanes reading columns outside [0, width) are zero padding (or the
      // output row's tail, discarded on store) and are never dereferenced.
      const typename V::mask m = V::range_mask(-col, tap.width - col);
      acc[v] = V::fmadd(w, V::maskz_load(m, src + v * L), acc[v]);
    }
  }
}

// Output row y, columns [x0, x0 + active) of one channel whose taps are
// [tap_begin, tap_end); NV = ceil(active / lanes).
template <typename T, int NV>
void conv_row_chunk(const ConvPlan<T>& plan, int64_t tap_begin, int64_t tap_end, const T* in,
                    int64_t y, int64_t x0, int64_t active, T bias, T* out) {
  using V = Vec<T>;
  constexpr int L = V::kLanes;
  typename V::reg even[NV], odd[NV];
  for (int v = 0; v < NV; ++v) {
    even[v] = V::set1(bias);
    odd[v] = V::zero();
  }
  const int64_t in_row0 = y * plan.stride_h;
  const int64_t row_base = in_row0 * plan.in_rstride + x0;
  int64_t j = tap_begin;
  for (; j + 2 <= tap_end; j += 2) {
    accumulate_tap<T, NV>(plan.taps[j], plan.values[j], in, row_base, in_row0, plan.in_h, x0, even);
    accumulate_tap<T, NV>(plan.taps[j + 1], plan.values[j + 1], in, row_base, in_row0, plan.in_h, x0, odd);
  }
  if (j < tap_end)
    accumulate_tap<T, NV>(plan.taps[j], plan.values[j], in, row_base, in_row0, plan.in_h, x0, even);
  for (int v = 0; v < NV; ++v) {
    const typename V::reg sum = V::add(even[v], odd[v]);
    if ((v + 1) * L <= active) V::store(out + v * L, sum);
    else V::mask_store(out + v * L, V::tail_mask(active - v * L), sum);
  }
}

template <typename T>
void conv_channels(const ConvPlan<T>& plan, int64_t co_begin, int64_t co_end, const T* in,
                   const T* bias, T* out) {
  constexpr int64_t kChunk = static_cast<int64_t>(kChunkVectors) * Vec<T>::kLanes;
  constexpr int64_t L = Vec<T>::kLanes;
  for (int64_t y = 0; y < plan.out_h; ++y)
    for (int64_t co = co_begin; co < co_end; ++co) {
      const int64_t j0 = plan.indptr[co], j1 = plan.indptr[co + 1];
      const T b = bias != nullptr ? bias[co] : T(0);
      T* out_row = out + co * plan.out_cstride + y * plan.out_rstride;
      for (int64_t x0 = 0; x0 < plan.out_w; x0 += kChunk) {
        const int64_t active = plan.out_w - x0 < kChunk ? plan.out_w - x0 : kChunk;
        switch ((active + L - 1) / L) {
          case 1: conv_row_chunk<T, 1>(plan, j0, j1, in, y, x0, active, b, out_row + x0); break;
          case 2: conv_row_chunk<T, 2>(plan, j0, j1, in, y, x0, active, b, out_row + x0); break;
          case 3: conv_row_chunk<T, 3>(plan, j0, j1, in, y, x0, active, b, out_row + x0); break;
          default: conv_row_chunk<T, 4>(plan, j0, j1, in, y, x0, active, b, out_row + x0); break;
        }
      }
    }
}

static_assert(kChunkVectors == 4, "conv_channels dispatches chunks of 1 to 4 vectors");

template <typename T>
const ConvKernels<T>& conv_kernel_table() {
  static const ConvKernels<T> table{&conv_channels<T>};
  return table;
}

template const ConvKernels<float>& conv_kernel_table<float>();
template const ConvKernels<double>& conv_kernel_table<double>();
