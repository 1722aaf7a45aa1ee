// Direct sparse convolution written once against Vec<T> (kernels/simd/). This
// file is included inside an ISA namespace by conv_<isa>.cpp after the
// matching simd_<isa>.h; it must not include headers itself.
//
// A block of R output rows x NV output vectors (one channel) stays in
// registers while every tap (stored weight) of its output channel is streamed.
// Each tap costs one broadcast and its load masks once per block, then per row
// and vector one unaligned load of the input row shifted by the tap's column
// and one FMA. Vectors that would read left or right of the input row (zero
// padding, or the row's tail) use masked loads, so padding is never
// materialised; rows above or below the image are skipped. The R x NV
// accumulators are independent, which hides the FMA latency.

// Output vectors per block along a row.
constexpr int kChunkVectors = 4;

// Output rows per block: 4 x 4 accumulators with 32 vector registers, 2 x 4 with 16.
template <typename T>
constexpr int block_rows() {
  return Vec<T>::kRegisters >= 32 ? 4 : 2;
}

// Rows [y0, y0 + R) and columns [x0, x0 + active) of one output channel whose
// taps are [tap_begin, tap_end); NV = ceil(active / lanes). `out` points at
// output (y0, x0).
template <typename T, int NV, int R>
void conv_block(const ConvPlan<T>& plan, int64_t tap_begin, int64_t tap_end, const T* in,
                int64_t y0, int64_t x0, int64_t active, T bias, T* out) {
  using V = Vec<T>;
  constexpr int L = V::kLanes;
  typename V::reg acc[R][NV];
  for (int r = 0; r < R; ++r)
    for (int v = 0; v < NV; ++v) acc[r][v] = V::set1(bias);
  const int64_t in_row0 = y0 * plan.stride_h;  // input row under output row y0, before the tap
  const int64_t row_step = plan.stride_h * plan.in_rstride;  // input elements between output rows
  const int64_t block_base = in_row0 * plan.in_rstride + x0;
  for (int64_t j = tap_begin; j < tap_end; ++j) {
    const ConvTap& tap = plan.taps[j];
    const typename V::reg w = V::set1(plan.values[j]);
    // block_base + tap.offset may pass through negative values before the row
    // check, so the pointer is formed from their sum, per valid row.
    const int64_t tap_base = block_base + tap.offset;
    const int64_t first_row = in_row0 + tap.row;
    const int64_t first_col = x0 + tap.col;  // input column under lane 0 of vector 0
    const bool inside = first_col >= 0 && first_col + NV * L <= tap.width;
    if (inside) {
      for (int r = 0; r < R; ++r) {
        const int64_t row = first_row + r * plan.stride_h;
        if (row < 0 || row >= plan.in_h) continue;  // zero padding above or below
        const T* src = in + (tap_base + r * row_step);
        for (int v = 0; v < NV; ++v) acc[r][v] = V::fmadd(w, V::load(src + v * L), acc[r][v]);
      }
    } else {
      // Lanes reading columns outside [0, width) are zero padding (or lie past
      // the output row's end, discarded on store) and are never dereferenced.
      typename V::mask masks[NV];
      for (int v = 0; v < NV; ++v) {
        const int64_t col = first_col + static_cast<int64_t>(v) * L;
        masks[v] = V::range_mask(-col, tap.width - col);
      }
      for (int r = 0; r < R; ++r) {
        const int64_t row = first_row + r * plan.stride_h;
        if (row < 0 || row >= plan.in_h) continue;
        const T* src = in + (tap_base + r * row_step);
        for (int v = 0; v < NV; ++v)
          acc[r][v] = V::fmadd(w, V::maskz_load(masks[v], src + v * L), acc[r][v]);
      }
    }
  }
  for (int r = 0; r < R; ++r)
    for (int v = 0; v < NV; ++v) {
      T* dst = out + r * plan.out_rstride + v * L;
      if ((v + 1) * L <= active)
        V::store(dst, acc[r][v]);
      else
        V::mask_store(dst, V::tail_mask(active - v * L), acc[r][v]);
    }
}

// All chunks of output rows [y0, y0 + R) of one channel.
template <typename T, int R>
void conv_rows(const ConvPlan<T>& plan, int64_t co, const T* in, const T* bias, int64_t y0,
               T* out) {
  constexpr int64_t L = Vec<T>::kLanes;
  constexpr int64_t kChunk = kChunkVectors * L;
  const int64_t j0 = plan.indptr[co], j1 = plan.indptr[co + 1];
  const T b = bias != nullptr ? bias[co] : T(0);
  T* out_row = out + co * plan.out_cstride + y0 * plan.out_rstride;
  for (int64_t x0 = 0; x0 < plan.out_w; x0 += kChunk) {
    const int64_t active = plan.out_w - x0 < kChunk ? plan.out_w - x0 : kChunk;
    switch ((active + L - 1) / L) {
      case 1:
        conv_block<T, 1, R>(plan, j0, j1, in, y0, x0, active, b, out_row + x0);
        break;
      case 2:
        conv_block<T, 2, R>(plan, j0, j1, in, y0, x0, active, b, out_row + x0);
        break;
      case 3:
        conv_block<T, 3, R>(plan, j0, j1, in, y0, x0, active, b, out_row + x0);
        break;
      default:
        conv_block<T, 4, R>(plan, j0, j1, in, y0, x0, active, b, out_row + x0);
        break;
    }
  }
}
static_assert(kChunkVectors == 4, "conv_rows dispatches chunks of 1 to 4 vectors");

template <typename T>
void conv_channels(const ConvPlan<T>& plan, int64_t co_begin, int64_t co_end, const T* in,
                   const T* bias, T* out) {
  constexpr int R = block_rows<T>();
  // Blocks of rows outermost: the input rows they read stay in cache while
  // every channel of the range is computed.
  int64_t y0 = 0;
  for (; y0 + R <= plan.out_h; y0 += R)
    for (int64_t co = co_begin; co < co_end; ++co) conv_rows<T, R>(plan, co, in, bias, y0, out);
  for (; y0 < plan.out_h; ++y0)
    for (int64_t co = co_begin; co < co_end; ++co) conv_rows<T, 1>(plan, co, in, bias, y0, out);
}

template <typename T>
const ConvKernels<T>& conv_kernel_table() {
  static const ConvKernels<T> table{&conv_channels<T>};
  return table;
}

template const ConvKernels<float>& conv_kernel_table<float>();
template const ConvKernels<double>& conv_kernel_table<double>();
