// The transpose tile written once against a Block<T> trait (kSize, and
// transpose(src, src_ld, dst, dst_ld) for one kSize x kSize block), which the
// including ISA file defines first. Included inside an ISA namespace; it
// must not include headers itself.

template <typename T>
void transpose_tile(const T* src, int64_t rows, int64_t cols, int64_t src_ld, T* dst,
                    int64_t dst_ld) {
  constexpr int64_t B = Block<T>::kSize;
  int64_t i = 0;
  for (; i + B <= rows; i += B) {
    int64_t j = 0;
    for (; j + B <= cols; j += B)
      Block<T>::transpose(src + i * src_ld + j, src_ld, dst + j * dst_ld + i, dst_ld);
    for (; j < cols; ++j)
      for (int64_t r = i; r < i + B; ++r) dst[j * dst_ld + r] = src[r * src_ld + j];
  }
  for (; i < rows; ++i)
    for (int64_t j = 0; j < cols; ++j) dst[j * dst_ld + i] = src[i * src_ld + j];
}

template <typename T>
const TransposeKernels<T>& transpose_kernel_table() {
  static const TransposeKernels<T> table{&transpose_tile<T>};
  return table;
}

template const TransposeKernels<float>& transpose_kernel_table<float>();
template const TransposeKernels<double>& transpose_kernel_table<double>();
