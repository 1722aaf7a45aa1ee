#include "drivers/conv_driver.h"

#include <algorithm>
#include <climits>
#include <new>
#include <stdexcept>
#include <string>
#include <vector>

#include "core/isa.h"
#include "core/parallel.h"
#include "kernels/activation/activation_kernels.h"
#include "kernels/conv/conv_kernels.h"
#include "drivers/activation_driver.h"
#include "drivers/buffer.h"
#include "drivers/csr_driver.h"

namespace sparsegemm {

namespace {

void require(bool ok, const std::string& message) {
  if (!ok) throw std::invalid_argument("conv2d: " + message);
}

std::string pair_str(int64_t a, int64_t b) {
  return "(" + std::to_string(a) + ", " + std::to_string(b) + ")";
}

// The input as the direct kernel reads it: each image's channels, rows
// contiguous.
struct InputLayout {
  const void* data = nullptr;
  int64_t image_stride = 0, channel_stride = 0, row_stride = 0;
  int64_t in_w = 0;
};

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
    const int64_t col = kw * g.dilation_w - g.pad_w;  // input column for output column 0
    taps[j] = ConvTap{ci * layout.channel_stride + row * layout.row_stride + col,
                      static_cast<int32_t>(row), static_cast<int32_t>(col),
                      static_cast<int32_t>(layout.in_w)};
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

// What the panel jobs below share: the zero-padded input they pack from (g
// has no padding) and the NCHW output they write, with the activation.
template <typename T>
struct PaddedConvIO {
  PaddedConvIO(const Conv2dGeometry& geometry, const T* input, int64_t nstride, int64_t cstride,
               int64_t rstride, T* output, int64_t channels_out, Activation activation)
      : g(geometry),
        x(input),
        x_nstride(nstride),
        x_cstride(cstride),
        x_rstride(rstride),
        out(output),
        out_channels(channels_out),
        out_h(geometry.out_h()),
        out_w(geometry.out_w()),
        act(activation),
        apply(activation_kernels<T>(active_isa()).apply) {
    if (g.pad_h != 0 || g.pad_w != 0)
      throw std::logic_error("convolution panels read a padded copy of the input");
  }

  // Rows [r0, r1) of a tile (row stride tile_ld) as those output channels of
  // image n, `count` pixels from pixel `first` (flattened over out_h x out_w),
  // activated while they are in cache.
  void write(int64_t n, int64_t first, int64_t count, int64_t r0, int64_t r1, const T* tile,
             int64_t tile_ld) const {
    const int64_t plane = out_h * out_w;
    T* const first_row = out + (n * out_channels + r0) * plane + first;
    T* dst = first_row;
    for (int64_t r = r0; r < r1; ++r, tile += tile_ld, dst += plane)
      std::copy(tile, tile + count, dst);
    if (act != Activation::None) apply(first_row, r1 - r0, count, plane, act);
  }

  Conv2dGeometry g;
  const T* x;
  int64_t x_nstride, x_cstride, x_rstride;
  T* out;
  int64_t out_channels, out_h, out_w;
  Activation act;
  void (*apply)(T*, int64_t, int64_t, int64_t, Activation);
};

// The convolution as w @ im2col(x), one panel of output pixels at a time
// (csr_packed_panels): each panel's im2col rows are packed straight from x,
// so the im2col matrix never exists whole, and the CSR panel kernel runs on
// them. Panel p covers image p / panels_per_image, pixels (flattened over
// out_h x out_w) from (p % panels_per_image) * columns.
template <typename T>
class Im2colPanels final : public PanelJob<T> {
 public:
  // The widest panel of any ISA: 4 vectors of 16 floats (AVX-512).
  static constexpr int64_t kMaxPanelColumns = 64;

  Im2colPanels(const PaddedConvIO<T>& io, int64_t columns)
      : io_(io),
        columns_(columns),
        out_plane_(io.out_h * io.out_w),
        panels_per_image_((out_plane_ + columns - 1) / columns) {
    if (columns < 1 || columns > kMaxPanelColumns)
      throw std::logic_error("im2col panels of " + std::to_string(columns) + " columns");
  }

  int64_t panels(int64_t batch) const { return batch * panels_per_image_; }

  int64_t pack(int64_t p, T* packed, int64_t panel_ld) const override {
    const Conv2dGeometry& g = io_.g;
    const int64_t n = p / panels_per_image_, first = (p % panels_per_image_) * columns_;
    const int64_t count = std::min(columns_, out_plane_ - first);
    // The panel's pixels as runs along output rows, found once for every tap:
    // each run's first input element of tap (0, 0) in every channel.
    int64_t run_start[kMaxPanelColumns + 1], run_length[kMaxPanelColumns + 1];
    int64_t run_offset[kMaxPanelColumns + 1];
    int64_t runs = 0;
    for (int64_t j = 0, y = first / io_.out_w, x = first % io_.out_w; j < count;
         ++y, x = 0, ++runs) {
      run_start[runs] = j;
      run_length[runs] = std::min(count - j, io_.out_w - x);
      run_offset[runs] = y * g.stride_h * io_.x_rstride + x * g.stride_w;
      j += run_length[runs];
    }
    const int64_t step = g.stride_w;
    T* row = packed;
    for (int64_t ci = 0; ci < g.in_channels; ++ci) {
      const T* channel = io_.x + n * io_.x_nstride + ci * io_.x_cstride;
      for (int64_t kh = 0; kh < g.kernel_h; ++kh)
        for (int64_t kw = 0; kw < g.kernel_w; ++kw, row += panel_ld) {
          const T* tap = channel + kh * g.dilation_h * io_.x_rstride + kw * g.dilation_w;
          for (int64_t r = 0; r < runs; ++r) {
            const T* src = tap + run_offset[r];
            T* dst = row + run_start[r];
            if (step == 1)
              for (int64_t t = 0; t < run_length[r]; ++t) dst[t] = src[t];
            else
              for (int64_t t = 0; t < run_length[r]; ++t) dst[t] = src[t * step];
          }
          std::fill(row + count, row + columns_, T(0));
        }
    }
    return count;
  }

  void emit(int64_t p, int64_t count, int64_t r0, int64_t r1, const T* tile,
            int64_t tile_ld) const override {
    io_.write(p / panels_per_image_, (p % panels_per_image_) * columns_, count, r0, r1, tile,
              tile_ld);
  }

 private:
  PaddedConvIO<T> io_;
  int64_t columns_, out_plane_, panels_per_image_;
};

// Panels that are segments of one output row, for convolutions with stride 1
// along rows: for each (input channel, kernel row) a panel holds the stretch
// of that input row its pixels read, once for all kernel columns, which read it
// each at its own shift (CsrMatrix::tap_offsets), where im2col (Im2colPanels)
// copies it once per kernel column. Panel p is segment p % segments of output
// row p / segments (counted over images, then rows).
template <typename T>
class ShiftedRowPanels final : public PanelJob<T> {
 public:
  ShiftedRowPanels(const PaddedConvIO<T>& io, int64_t columns)
      : io_(io),
        columns_(columns),
        segments_((io.out_w + columns - 1) / columns),
        reach_((io.g.kernel_w - 1) * io.g.dilation_w),
        row_stride_(round_up(columns + reach_, 32 / static_cast<int64_t>(sizeof(T)))) {
    if (io.g.stride_w != 1) throw std::logic_error("shifted row panels run at stride 1 along rows");
  }

  int64_t panels(int64_t batch) const { return batch * io_.out_h * segments_; }
  // Elements between the panel's rows, and in the whole panel.
  int64_t row_stride() const { return row_stride_; }
  int64_t panel_elements() const { return io_.g.in_channels * io_.g.kernel_h * row_stride_; }

  int64_t pack(int64_t p, T* packed, int64_t) const override {
    const Conv2dGeometry& g = io_.g;
    const int64_t n = p / (io_.out_h * segments_), y = p / segments_ % io_.out_h;
    const int64_t first = p % segments_ * columns_, count = std::min(columns_, io_.out_w - first);
    const int64_t width = count + reach_;  // input columns the segment's taps read
    const T* image = io_.x + n * io_.x_nstride + y * g.stride_h * io_.x_rstride + first;
    T* row = packed;
    for (int64_t ci = 0; ci < g.in_channels; ++ci)
      for (int64_t kh = 0; kh < g.kernel_h; ++kh, row += row_stride_) {
        const T* src = image + ci * io_.x_cstride + kh * g.dilation_h * io_.x_rstride;
        std::copy(src, src + width, row);
        std::fill(row + width, row + row_stride_, T(0));
      }
    return count;
  }

  void emit(int64_t p, int64_t count, int64_t r0, int64_t r1, const T* tile,
            int64_t tile_ld) const override {
    const int64_t n = p / (io_.out_h * segments_), y = p / segments_ % io_.out_h;
    io_.write(n, y * io_.out_w + p % segments_ * columns_, count, r0, r1, tile, tile_ld);
  }

 private:
  static int64_t round_up(int64_t value, int64_t step) { return (value + step - 1) / step * step; }

  PaddedConvIO<T> io_;
  int64_t columns_, segments_, reach_, row_stride_;
};

// The direct kernel (below) against panels, measured on Zen 3 (AVX2, 2
// threads, batch 1, 3x3 layers, in-process A/B): im2col panels ran 1.46-5.4x
// faster at 90% sparsity from 28x28 down to 7x7 and at stride 2 (2.3-6x), and
// 1.4-7.9x at 70%. Only stride 1 over wide rows at extreme sparsity stays
// direct: against shifted row panels (32-256 channels, 56-112 wide) the direct
// kernel ran 1.08-1.63x faster at 99% and 0.92-1.38x at 98%, but 0.66-0.95x at
// 93-95% (32 channels at 112x112 aside: 1.07-1.25x).
constexpr int64_t kDirectMinOutWidth = 33;
constexpr double kDirectMaxDensity = 0.025;

template <typename T>
bool prefer_panels(const CsrMatrix<T>& w, const Conv2dGeometry& g) {
  const bool wide_rows = g.stride_h == 1 && g.stride_w == 1 && g.out_w() >= kDirectMinOutWidth;
  const double density =
      static_cast<double>(w.nnz()) / static_cast<double>(std::max<int64_t>(1, w.rows() * w.cols()));
  return !(wide_rows && density < kDirectMaxDensity);
}

// Shifted row panels (ShiftedRowPanels) against im2col panels, on Zen 3 (AVX2,
// 2 threads, 3x3 stride 1, batch 1, in-process A/B): where each packed element
// feeds few multiply-adds (stored entries per weight column, density times
// output channels, up to 16), packing dominates and shifted rows ran
// 1.06-1.37x faster (32-128 channels at 28-112 wide, densities 0.1-0.2; 1.59x
// with 32 channels); at 19-38 they ran 0.76-0.99x, as their loads at a shift
// split cache lines and the im2col kernel runs in column chunks. A row's
// outputs must fill three quarters of its panels (56 wide: 2 panels of 32).
constexpr int64_t kShiftedMaxEntriesPerColumn = 16;

template <typename T>
bool prefer_shifted_rows(const CsrMatrix<T>& w, const Conv2dGeometry& g, int64_t columns) {
  const int64_t out_w = g.out_w(), segments = (out_w + columns - 1) / columns;
  const int64_t panel_rows = g.in_channels * g.kernel_h;
  const int64_t row_reach = columns + (g.kernel_w - 1) * g.dilation_w + 64;  // padding included
  return g.stride_w == 1 && g.kernel_w > 1 && out_w * 4 >= segments * columns * 3 &&
         w.nnz() <= kShiftedMaxEntriesPerColumn * w.cols() &&
         panel_rows <= INT32_MAX / row_reach;  // tap offsets are 32-bit
}

template <typename T>
void csr_conv2d(const CsrMatrix<T>& w, const Conv2dGeometry& geometry, const T* x, int64_t batch,
                int64_t x_nstride, int64_t x_cstride, int64_t x_rstride, const T* bias, T* out,
                int num_threads, const T* values, Activation act) {
  validate_conv2d_geometry(geometry, w.cols());
  require(batch >= 0, "batch must be non-negative");
  const int64_t out_channels = w.rows(), out_h = geometry.out_h(), out_w = geometry.out_w();
  const int64_t out_plane = out_h * out_w;
  if (batch == 0 || out_channels == 0) return;
  const int threads = threads_for_work(num_threads, (w.nnz() + out_channels) * out_plane * batch);

  // The zero padding is written out in one copy of the input, so no read of
  // either path is ever outside the image. The direct kernel then takes its
  // unmasked path (no lane masks, no masked loads): measured on Zen 3 (AVX2,
  // 2 threads, 3x3, 64 channels, padding 1, in-process A/B), 1.18x faster at
  // 56x56 and 90%, 1.25x at 70%, 1.04x and 1.27x at batch 4. The im2col
  // panels then pack with plain copies: with a bounds check per run of pixels,
  // 90% layers ran 1.4-2.3x as long as with no packing at all (in-process A/B).
  Conv2dGeometry g = geometry;
  const bool pad_copy = g.pad_h > 0 || g.pad_w > 0;
  int64_t padded_count = 0;
  if (pad_copy &&
      (__builtin_mul_overflow(batch, g.in_channels, &padded_count) ||
       __builtin_mul_overflow(padded_count, (g.in_h + 2 * g.pad_h) * (g.in_w + 2 * g.pad_w),
                              &padded_count)))
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

  if (prefer_panels(w, geometry)) {
    const int64_t columns = csr_packed_panel_columns(w);
    const PaddedConvIO<T> io(g, x, x_nstride, x_cstride, x_rstride, out, out_channels, act);
    if (prefer_shifted_rows(w, g, columns)) {
      const ShiftedRowPanels<T> job(io, columns);
      const index_t* offsets =
          w.tap_offsets(g.kernel_h, g.kernel_w, g.dilation_w, job.row_stride());
      csr_offset_panels(w, offsets, job.panel_elements(), job.panels(batch), job, bias, num_threads,
                        values);
    } else {
      const Im2colPanels<T> job(io, columns);
      csr_packed_panels(w, job.panels(batch), job, bias, num_threads, values);
    }
    return;
  }

  // The direct kernel, at stride 1 (prefer_panels).
  const InputLayout layout{x, x_nstride, x_cstride, x_rstride, g.in_w};
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
  apply_activation(out, batch * out_channels, out_plane, out_plane, act, num_threads);
}

template void csr_conv2d<float>(const CsrMatrix<float>&, const Conv2dGeometry&, const float*,
                                int64_t, int64_t, int64_t, int64_t, const float*, float*, int,
                                const float*, Activation);
template void csr_conv2d<double>(const CsrMatrix<double>&, const Conv2dGeometry&, const double*,
                                 int64_t, int64_t, int64_t, int64_t, const double*, double*, int,
                                 const double*, Activation);

}  // namespace sparsegemm
