// Bitmap matrices and products, for float, double and bfloat16 values. A
// bfloat16 matrix takes and gives its values as uint16 bit patterns (numpy has
// no bfloat16), is built from and densified to float32, and multiplies float32
// operands.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <string>

#include "bindings/array_args.h"
#include "bindings/products.h"
#include "core/bitmap_matrix.h"
#include "drivers/bitmap_driver.h"

namespace sparsegemm::bindings {

namespace py = pybind11;

namespace {

template <typename V>
void register_bitmap_dtype(py::module_& m, const char* class_name) {
  using Matrix = BitmapMatrix<V>;
  using T = compute_t<V>;
  py::class_<Matrix>(m, class_name)
      .def_static(
          "from_arrays",
          [](int64_t rows, int64_t cols, const py::array& bits, const py::array& data) {
            const auto words = contiguous_vector_arg<uint64_t>(bits, "bits");
            const auto val = value_vector_arg<V>(data, "data");
            py::gil_scoped_release release;
            return Matrix::from_arrays(rows, cols, words.data, words.shape[0], val.data,
                                       val.shape[0]);
          },
          py::arg("rows"), py::arg("cols"), py::arg("bits"), py::arg("data"),
          "Copy and validate a bitmap: bits (uint64, rows * ceil(cols / 64) words, row-major, "
          "bits past cols zero) and data (one value per set bit, row-major).")
      .def_static(
          "pattern_from_arrays",
          [](int64_t rows, int64_t cols, const py::array& bits) {
            const auto words = contiguous_vector_arg<uint64_t>(bits, "bits");
            py::gil_scoped_release release;
            return Matrix::pattern_from_arrays(rows, cols, words.data, words.shape[0]);
          },
          py::arg("rows"), py::arg("cols"), py::arg("bits"),
          "Copy and validate bits without values: products need values=.")
      .def_static(
          "from_csr_arrays",
          [](int64_t rows, int64_t cols, const py::array& indptr, const py::array& indices,
             const py::array& data) {
            const auto idx = contiguous_vector_arg<index_t>(indices, "indices");
            const auto val = value_vector_arg<V>(data, "data");
            return with_indptr(indptr, [&](const auto& ptr) {
              return Matrix::from_csr_arrays(rows, cols, ptr.data, ptr.shape[0], idx.data,
                                             idx.shape[0], val.data, val.shape[0]);
            });
          },
          py::arg("rows"), py::arg("cols"), py::arg("indptr"), py::arg("indices"), py::arg("data"),
          "Validate CSR arrays (indptr int32 or int64, indices int32) and store them as a bitmap.")
      .def_static(
          "from_dense",
          [](const py::array& dense, double threshold) {
            const auto arg = strided_arg<T>(dense, "dense", 2, false);
            py::gil_scoped_release release;
            return Matrix::from_dense(arg.shape[0], arg.shape[1], arg.data, arg.strides[0],
                                      arg.strides[1], threshold);
          },
          py::arg("dense"), py::arg("threshold"))
      .def_property_readonly("rows", &Matrix::rows)
      .def_property_readonly("cols", &Matrix::cols)
      .def_property_readonly("nnz", &Matrix::nnz)
      .def_property_readonly("words_per_row", &Matrix::words_per_row)
      .def_property_readonly("storage_bytes", &Matrix::storage_bytes)
      .def_property_readonly("column_plan_bytes", &Matrix::column_plan_bytes)
      .def_property_readonly("has_values", &Matrix::has_values,
                             "False for a pattern-only matrix (see pattern_from_arrays).")
      .def_property_readonly(
          "bits",
          [](py::object self) { return owned_view(self.cast<const Matrix&>().bits(), self); })
      .def_property_readonly(
          "offsets",
          [](py::object self) { return owned_view(self.cast<const Matrix&>().offsets(), self); })
      .def_property_readonly(
          "data",
          [](py::object self) { return owned_view(self.cast<const Matrix&>().values(), self); })
      .def(
          "with_values",
          [](const Matrix& a, const py::array& values) {
            const auto arg = value_vector_arg<V>(values, "values");
            py::gil_scoped_release release;
            return a.with_values(arg.data, arg.shape[0]);
          },
          py::arg("values"), "Same pattern, new values.")
      .def("to_dense", [](const Matrix& a) {
        py::array_t<T> out({a.rows(), a.cols()});
        T* ptr = out.mutable_data();
        py::gil_scoped_release release;
        a.to_dense(ptr);
        return out;
      });

  register_products<T, Matrix>(m, "bitmap_matmul", "bitmap_linear", &bitmap_matmul<V>,
                               &bitmap_linear<V>);
}

}  // namespace

void register_bitmap(py::module_& m) {
  register_bitmap_dtype<float>(m, "BitmapMatrixF32");
  register_bitmap_dtype<double>(m, "BitmapMatrixF64");
  register_bitmap_dtype<bfloat16_t>(m, "BitmapMatrixBF16");
}

}  // namespace sparsegemm::bindings
