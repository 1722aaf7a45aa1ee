#include "drivers/conv_driver.h"

#include <algorithm>
#include <climits>
#include <new>
#include <stdexcept>
#include <string>
#include <vector>

#include "core/isa.h"
#include "core/parallel.h"
#include "kernels/conv/conv_kernels.h"
#include "drivers/buffer.h"

namespace sparsegemm {

namespace {

void require(bool ok, const std::string& message) {
  if (!ok) throw std::invalid_argument("conv2d: " + message);
}

std::string pair_str(int64_t a, int64_t b) {
  return "(" + std::to_string(a) + ", " + std::to_string(b) + ")";
}

// Floor division and its remainder for b > 0 (C++ rounds toward zero).
int64_t floor_div(int64_t a, int64_t b) { return a / b - (a % b < 0 ? 1 : 0); }
int64_t floor_mod(int64_t a, int64_t b) { return a - floor_div(a, b) * b; }

// The input as the kernels read it: for each image, stride_w column phases
// (one when stride_w == 1), each holding every channel's rows; phase p holds
// the input columns p, p + stride_w, p + 2 * stride_w, ... contiguously.
struct InputLayout {
  const void* data = nullptr;
  int64_t image_stride = 0, phase_stride = 0, channel_stride = 0, row_stride = 0;
  int64_t phases = 1;
  int64_t in_w = 0;

  // Valid columns in phase p.
  int64_t phase_width(int64_t p) const {
    return std::max<int64_t>(0, (in_w - p + phases - 1) / phases);
  }
};

// Copies x into stride_w column phases (the layout above) so that output
// columns x and x + 1 read adjacent input elements for every tap.
template <typename T>
void split_column_phases(const Conv2dGeometry& g, const T* x, int64_t batch, int64_t x_nstride,
                         int64_t x_cstride, int64_t x_rstride, T* phases, const InputLayout& layout,
                         int threads) {
  parallel_for(threads, threads, [&](int64_t part) {
    const int64_t planes = batch * g.in_channels;
    for (int64_t plane = part; plane < planes; plane += threads) {
      const int64_t n = plane / g.in_channels, ci = plane % g.in_channels;
      const T* src = x + n * x_nstride + ci * x_cstride;
      T* dst = phases + n * layout.image_stride + ci * layout.channel_stride;
      for (int64_t p = 0; p < layout.phases; ++p) {
        const int64_t width = layout.phase_width(p);
        for (int64_t r = 0; r < g.in_h; ++r) {
          const T* src_row = src + r * x_rstride + p;
          T* dst_row = dst + p * layout.phase_stride + r * layout.row_stride;
          for (int64_t j = 0; j < width; ++j) dst_row[j] = src_row[j * layout.phases];
        }
      }
    }
  });
}

// Copies x into `padded` with g's zero padding written out: image n, channel c
// at padded + (n * channels + c) * padded_h * padded_w, rows padded_w apart.
template <typename T>
void pad_input(const Conv2dGeometry& g, const T* x, int64_t batch, int64_t x_nstride,
               int64_t x_cstride, int64_t x_rstride, T* padded, int threads) {
  const int64_t padded_h = g.in_h + 2 * g.pad_h, padded_w = g.in_w + 2 * g.pad_w;
  const int64_t planes = batch * g.in_channels;
  parallel_for(threads, threads, [&](int64_t part) {
    for (int64_t plane = part; plane < planes; plane += threads) {
      const int64_t n = plane / g.in_channels, ci = plane % g.in_channels;
      const T* src = x + n * x_nstride + ci * x_cstride;
      T* dst = padded + plane * padded_h * padded_w;
      std::fill(dst, dst + g.pad_h * padded_w, T(0));
      for (int64_t r = 0; r < g.in_h; ++r) {
        T* row = dst + (g.pad_h + r) * padded_w;
        std::fill(row, row + g.pad_w, T(0));
        std::copy(src + r * x_rstride, src + r * x_rstride + g.in_w, row + g.pad_w);
        std::fill(row + g.pad_w + g.in_w, row + padded_w, T(0));
      }
      std::fill(dst + (g.pad_h + g.in_h) * padded_w, dst + padded_h * padded_w, T(0));
    }
  });
}

// One tap per stored weight entry (see ConvTap), offsets relative to an image.
template <typename T>
std::vector<ConvTap> make_taps(const CsrMatrix<T>& w, const Conv2dGeometry& g,
                               const InputLayout& layout) {
  std::vector<ConvTap> taps(static_cast<size_t>(w.nnz()));
  const int64_t taps_per_channel = g.kernel_h * g.kernel_w;
  for (int64_t j = 0; j < w.nnz(); ++j) {
    const int64_t column = w.column(j);
    const int64_t ci = column / taps_per_channel, k = column % taps_per_channel;
    const int64_t kh = k / g.kernel_w, kw = k % g.kernel_w;
    const int64_t row = kh * g.dilation_h - g.pad_h;
    const int64_t shift = kw * g.dilation_w - g.pad_w;  // input column for output column 0
    const int64_t phase = floor_mod(shift, layout.phases);
    const int64_t col = floor_div(shift, layout.phases);  // its column within the phase
    const int64_t plane = ci * layout.channel_stride + phase * layout.phase_stride;
    taps[j] = ConvTap{plane + row * layout.row_stride + col, static_cast<int32_t>(row),
                      static_cast<int32_t>(col), static_cast<int32_t>(layout.phase_width(phase))};
  }
  return taps;
}

}  // namespace

void validate_conv2d_geometry(const Conv2dGeometry& g, int64_t weight_cols) {
  const auto fits32 = [](int64_t v) { return v <= INT32_MAX; };
  require(g.in_channels >= 0,
          "in_channels must be non-negative, got " + std::to_string(g.in_channels));
  require(g.in_h >= 1 && g.in_w >= 1,
          "the input image must be at least 1 x 1, got " + pair_str(g.in_h, g.in_w));
  require(g.kernel_h >= 1 && g.kernel_w >= 1,
          "kernel_size must be positive, got " + pair_str(g.kernel_h, g.kernel_w));
  require(g.stride_h >= 1 && g.stride_w >= 1,
          "stride must be positive, got " + pair_str(g.stride_h, g.stride_w));
  require(g.dilation_h >= 1 && g.dilation_w >= 1,
          "dilation must be positive, got " + pair_str(g.dilation_h, g.dilation_w));
  require(g.pad_h >= 0 && g.pad_w >= 0,
          "padding must be non-negative, got " + pair_str(g.pad_h, g.pad_w));
  // Every field below 2^31 first, so the products that follow cannot overflow.
  for (int64_t v : {g.in_channels, g.in_h, g.in_w, g.kernel_h, g.kernel_w, g.stride_h, g.stride_w,
                    g.pad_h, g.pad_w, g.dilation_h, g.dilation_w})
    require(fits32(v), "every size, stride, padding and dilation must be below 2^31");
  require(fits32(g.dilation_h * (g.kernel_h - 1)) && fits32(g.dilation_w * (g.kernel_w - 1)) &&
              fits32(g.in_h + 2 * g.pad_h) && fits32(g.in_w + 2 * g.pad_w),
          "the dilated kernel and the padded input must span fewer than 2^31 rows and columns");
  require(g.in_h + 2 * g.pad_h >= g.dilation_h * (g.kernel_h - 1) + 1 &&
              g.in_w + 2 * g.pad_w >= g.dilation_w * (g.kernel_w - 1) + 1,
          "the dilated kernel " +
              pair_str(g.dilation_h * (g.kernel_h - 1) + 1, g.dilation_w * (g.kernel_w - 1) + 1) +
              " is larger than the padded input " +
              pair_str(g.in_h + 2 * g.pad_h, g.in_w + 2 * g.pad_w));
  const int64_t expected_cols = g.in_channels * g.kernel_h * g.kernel_w;
  require(weight_cols == expected_cols,
          "the weight has " + std::to_string(weight_cols) +
              " columns but in_channels * kernel_h * kernel_w = " + std::to_string(expected_cols));
}

// Narrow outputs of a stride-1 convolution run flattened: each channel's
// (padded) plane is one row of in_h * in_w elements and output (y, x) is
// element y * in_w + x of one output row per channel; the in_w - out_w columns
// past each image row are computed and dropped. One tap then spans the whole
// image, where row by row it would cover a few vectors per block. Measured on
// Zen 3 (AVX2, 2 threads, 3x3, 90% and 70%): emulated through Python in one
// process, 1.6-1.8x faster at 28x28 (128 channels) and 14x14 (256), but
// 0.75-0.87x at 56x56, whose rows fill the kernel's blocks of two rows by four
// vectors; this path runs 1.1-1.3x faster than that emulation.
constexpr int64_t kFlattenMaxOutWidth = 32;

// Runs the kernel on every image: channels split by stored entries, the same
// way for each image; part p is image p / ranges, channel range p % ranges.
template <typename T>
void run_conv_kernel(const ConvPlan<T>& plan, int64_t out_channels, const T* input,
                     int64_t image_stride, const T* bias, T* out, int64_t out_image_stride,
                     int64_t batch, int threads) {
  const std::vector<int64_t> bounds = split_rows_by_cost(plan.indptr, out_channels, threads, 1);
  const int64_t ranges = static_cast<int64_t>(bounds.size()) - 1;
  const ConvKernels<T>& kernels = conv_kernels<T>(active_isa());
  parallel_for(threads, batch * ranges, [&](int64_t part) {
    const int64_t n = part / ranges, range = part % ranges;
    kernels.conv_channels(plan, bounds[range], bounds[range + 1], input + n * image_stride, bias,
                          out + n * out_image_stride);
  });
}

// The flattened convolution (see kFlattenMaxOutWidth) of a stride-1 geometry
// without padding, over x's contiguous planes (image n at x + n * channels *
// plane), into out (batch, out_channels, out_h, out_w).
template <typename T>
void conv2d_flattened(const CsrMatrix<T>& w, const Conv2dGeometry& g, const T* x, int64_t batch,
                      const T* bias, T* out, int threads, const T* values) {
  const int64_t out_channels = w.rows(), out_h = g.out_h(), out_w = g.out_w();
  const int64_t plane = g.in_h * g.in_w;
  const int64_t flat_w = (out_h - 1) * g.in_w + out_w;  // one output row per channel
  // The row-by-row taps, each then read as one shift along its channel's plane.
  const InputLayout layout{x, g.in_channels * plane, 0, plane, g.in_w, 1, g.in_w};
  std::vector<ConvTap> taps = make_taps(w, g, layout);
  for (ConvTap& tap : taps) {
    const int64_t shift = int64_t{tap.row} * g.in_w + tap.col;
    tap = ConvTap{tap.offset, 0, static_cast<int32_t>(shift), static_cast<int32_t>(plane)};
  }
  ConvPlan<T> plan;
  plan.indptr = w.indptr().data();
  plan.taps = taps.data();
  plan.values = values_or_stored(w, values);
  plan.in_h = 1;
  plan.in_rstride = plane;
  plan.out_h = 1;
  plan.out_w = flat_w;
  plan.out_cstride = plan.out_rstride = flat_w;
  ScratchBuffer<T> flat(static_cast<size_t>(batch * out_channels * flat_w));
  run_conv_kernel(plan, out_channels, x, g.in_channels * plane, bias, flat.data(),
                  out_channels * flat_w, batch, threads);
  // Drop the columns past each image row.
  parallel_for(threads, threads, [&](int64_t part) {
    for (int64_t c = part; c < batch * out_channels; c += threads)
      for (int64_t y = 0; y < out_h; ++y) {
        const T* src = flat.data() + c * flat_w + y * g.in_w;
        std::copy(src, src + out_w, out + (c * out_h + y) * out_w);
      }
  });
}

template <typename T>
void csr_conv2d(const CsrMatrix<T>& w, const Conv2dGeometry& geometry, const T* x, int64_t batch,
                int64_t x_nstride, int64_t x_cstride, int64_t x_rstride, const T* bias, T* out,
                int num_threads, const T* values) {
  validate_conv2d_geometry(geometry, w.cols());
  require(batch >= 0, "batch must be non-negative");
  const int64_t out_channels = w.rows(), out_h = geometry.out_h(), out_w = geometry.out_w();
  const int64_t out_plane = out_h * out_w;
  if (batch == 0 || out_channels == 0) return;
  const int threads = threads_for_work(num_threads, (w.nnz() + out_channels) * out_plane * batch);

  // With stride 1, the zero padding is written out in one copy of the input:
  // every tap then reads inside its row, so the kernel takes its unmasked path
  // (no lane masks, no masked loads). Measured on Zen 3 (AVX2, 2 threads, 3x3,
  // 64 channels, padding 1, in-process A/B): 1.18x faster at 56x56 and 90%,
  // 1.25x at 70%, 1.04x and 1.27x at batch 4; 0.94-1.01x at 28x28. The
  // flattened path needs the copy even without padding: contiguous planes.
  Conv2dGeometry g = geometry;
  const int64_t padded_plane = (g.in_h + 2 * g.pad_h) * (g.in_w + 2 * g.pad_w);  // < 2^62
  const bool flatten = g.stride_h == 1 && g.stride_w == 1 && out_h > 1 &&
                       out_w <= kFlattenMaxOutWidth && padded_plane <= INT32_MAX;
  const bool pad_copy = flatten || (g.stride_w == 1 && (g.pad_h > 0 || g.pad_w > 0));
  int64_t padded_count = 0;
  if (pad_copy && (__builtin_mul_overflow(batch, g.in_channels, &padded_count) ||
                   __builtin_mul_overflow(padded_count, padded_plane, &padded_count)))
    throw std::bad_alloc();  // the padded input could not be held in memory
  ScratchBuffer<T> padded(static_cast<size_t>(padded_count));
  if (pad_copy) {
    pad_input(g, x, batch, x_nstride, x_cstride, x_rstride, padded.data(), threads);
    g.in_h += 2 * g.pad_h;
    g.in_w += 2 * g.pad_w;
    g.pad_h = g.pad_w = 0;
    x = padded.data();
    x_rstride = g.in_w;
    x_cstride = g.in_h * g.in_w;
    x_nstride = g.in_channels * x_cstride;
  }
  if (flatten) {
    conv2d_flattened(w, g, x, batch, bias, out, threads, values);
    return;
  }

  InputLayout layout;
  layout.in_w = g.in_w;
  ScratchBuffer<T> phase_copy(
      g.stride_w > 1 ? static_cast<size_t>(batch * g.stride_w * g.in_channels * g.in_h *
                                           ((g.in_w + g.stride_w - 1) / g.stride_w))
                     : 0);
  if (g.stride_w == 1) {
    layout = InputLayout{x, x_nstride, 0, x_cstride, x_rstride, 1, g.in_w};
  } else {
    const int64_t row_stride = (g.in_w + g.stride_w - 1) / g.stride_w;
    const int64_t channel_stride = g.in_h * row_stride,
                  phase_stride = g.in_channels * channel_stride;
    layout = InputLayout{phase_copy.data(),
                         g.stride_w * phase_stride,
                         phase_stride,
                         channel_stride,
                         row_stride,
                         g.stride_w,
                         g.in_w};
    split_column_phases(g, x, batch, x_nstride, x_cstride, x_rstride, phase_copy.data(), layout,
                        threads);
  }
  const std::vector<ConvTap> taps = make_taps(w, g, layout);

  ConvPlan<T> plan;
  plan.indptr = w.indptr().data();
  plan.taps = taps.data();
  plan.values = values_or_stored(w, values);
  plan.in_h = g.in_h;
  plan.in_rstride = layout.row_stride;
  plan.stride_h = g.stride_h;
  plan.out_h = out_h;
  plan.out_w = out_w;
  plan.out_cstride = out_plane;
  plan.out_rstride = out_w;
  run_conv_kernel(plan, out_channels, static_cast<const T*>(layout.data), layout.image_stride, bias,
                  out, out_channels * out_plane, batch, threads);
}

template void csr_conv2d<float>(const CsrMatrix<float>&, const Conv2dGeometry&, const float*,
                                int64_t, int64_t, int64_t, int64_t, const float*, float*, int,
                                const float*);
template void csr_conv2d<double>(const CsrMatrix<double>&, const Conv2dGeometry&, const double*,
                                 int64_t, int64_t, int64_t, int64_t, const double*, double*, int,
                                 const double*);

}  // namespace sparsegemm
