// The transpose tile written once against the TileBlock<T> trait (kSize,
// transpose(src, src_ld, dst, dst_ld) for one kSize x kSize block, and Next,
// the narrower block for the edges or void), which the including ISA file
// defines first. Included inside an ISA namespace; it
// must not include headers itself.

// Full blocks of Blk, then the strips to their right and below through
// Blk::Next (a narrower block; void: one element at a time).
template <typename T, typename Blk>
void transpose_by_blocks(const T* src, int64_t rows, int64_t cols, int64_t src_ld, T* dst,
                         int64_t dst_ld) {
  if constexpr (std::is_void_v<Blk>) {
    for (int64_t i = 0; i < rows; ++i)
      for (int64_t j = 0; j < cols; ++j) dst[j * dst_ld + i] = src[i * src_ld + j];
  } else {
    constexpr int64_t B = Blk::kSize;
    const int64_t full_rows = rows - rows % B, full_cols = cols - cols % B;
    for (int64_t i = 0; i < full_rows; i += B)
      for (int64_t j = 0; j < full_cols; j += B)
        Blk::transpose(src + i * src_ld + j, src_ld, dst + j * dst_ld + i, dst_ld);
    using Next = typename Blk::Next;
    if (full_cols < cols)
      transpose_by_blocks<T, Next>(src + full_cols, full_rows, cols - full_cols, src_ld,
                                   dst + full_cols * dst_ld, dst_ld);
    if (full_rows < rows)
      transpose_by_blocks<T, Next>(src + full_rows * src_ld, rows - full_rows, cols, src_ld,
                                   dst + full_rows, dst_ld);
  }
}

template <typename T>
void transpose_tile(const T* src, int64_t rows, int64_t cols, int64_t src_ld, T* dst,
                    int64_t dst_ld) {
  transpose_by_blocks<T, TileBlock<T>>(src, rows, cols, src_ld, dst, dst_ld);
}

template <typename T>
const TransposeKernels<T>& transpose_kernel_table() {
  static const TransposeKernels<T> table{&transpose_tile<T>, TileBlock<T>::kSize};
  return table;
}

template const TransposeKernels<float>& transpose_kernel_table<float>();
template const TransposeKernels<double>& transpose_kernel_table<double>();
