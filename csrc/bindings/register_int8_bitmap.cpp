// Int8 bitmap matrices (pruned, per-row quantized weights) and their products.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <string>

#include "bindings/array_args.h"
#include "bindings/products.h"
#include "core/int8_bitmap_matrix.h"
#include "drivers/int8_bitmap_driver.h"

namespace sparsegemm::bindings {

namespace py = pybind11;

namespace {

// Throws ValueError unless every entry of the int8 operand is >= -127.
void check_symmetric_int8(const StridedArg<int8_t>& xq, const char* name) {
  for (int64_t v = 0; v < xq.shape[0]; ++v)
    for (int64_t k = 0; k < xq.shape[1]; ++k)
      if (xq.data[v * xq.strides[0] + k * xq.strides[1]] < -kInt8Max)
        throw py::value_error(std::string(name) + "[" + std::to_string(v) + ", " +
                              std::to_string(k) + "] is -128: int8 entries must be in [-127, 127]");
}

}  // namespace

void register_int8_bitmap(py::module_& m) {
  using Matrix = Int8BitmapMatrix;
  py::class_<Matrix>(m, "Int8BitmapMatrix")
      .def_static(
          "from_dense",
          [](const py::array& dense, double threshold) {
            const auto arg = strided_arg<float>(dense, "dense", 2, false);
            py::gil_scoped_release release;
            return Matrix::from_dense(arg.shape[0], arg.shape[1], arg.data, arg.strides[0],
                                      arg.strides[1], threshold);
          },
          py::arg("dense"), py::arg("threshold"),
          "Keep the entries of a float32 matrix with |w| > threshold and quantize them to int8 "
          "with one scale per row.")
      .def_static(
          "from_arrays",
          [](int64_t rows, int64_t cols, const py::array& bits, const py::array& data,
             const py::array& scales) {
            const auto words = contiguous_vector_arg<uint64_t>(bits, "bits");
            const auto values = contiguous_vector_arg<int8_t>(data, "data");
            const auto row_scales = contiguous_vector_arg<float>(scales, "scales");
            py::gil_scoped_release release;
            return Matrix::from_arrays(rows, cols, words.data, words.shape[0], values.data,
                                       values.shape[0], row_scales.data, row_scales.shape[0]);
          },
          py::arg("rows"), py::arg("cols"), py::arg("bits"), py::arg("data"), py::arg("scales"),
          "Copy and validate bits (uint64, rows * ceil(cols / 64) words, bits past cols zero), "
          "data (int8 in [-127, 127], one per set bit, row-major) and scales (float32, one per "
          "row, finite and >= 0).")
      .def_property_readonly("rows", &Matrix::rows)
      .def_property_readonly("cols", &Matrix::cols)
      .def_property_readonly("nnz", &Matrix::nnz)
      .def_property_readonly("words_per_row",
                             [](const Matrix& a) { return a.weights().words_per_row(); })
      .def_property_readonly("storage_bytes", &Matrix::storage_bytes)
      .def_property_readonly("quad_plan_bytes", &Matrix::quad_plan_bytes)
      .def_property_readonly("index_plan_bytes", &Matrix::index_plan_bytes)
      .def_property_readonly("bits",
                             [](py::object self) {
                               return owned_view(self.cast<const Matrix&>().weights().bits(), self);
                             })
      .def_property_readonly("offsets",
                             [](py::object self) {
                               return owned_view(self.cast<const Matrix&>().weights().offsets(),
                                                 self);
                             })
      .def_property_readonly("data",
                             [](py::object self) {
                               return owned_view(self.cast<const Matrix&>().weights().values(),
                                                 self);
                             })
      .def_property_readonly(
          "scales",
          [](py::object self) { return owned_view(self.cast<const Matrix&>().scales(), self); })
      .def(
          "to_dense",
          [](const Matrix& a) {
            py::array_t<float> out({a.rows(), a.cols()});
            float* ptr = out.mutable_data();
            py::gil_scoped_release release;
            a.to_dense(ptr);
            return out;
          },
          "The dequantized weight (float32): q[r, k] * scales[r].");

  m.def(
      "int8_bitmap_linear",
      [](const Matrix& w, const py::array& x, const py::array& out, const py::object& bias,
         int num_threads) {
        const auto xarg = strided_arg<float>(x, "x", 2, false);
        const auto oarg = strided_arg<float>(out, "out", 2, true);
        check_linear_operands(w.rows(), w.cols(), xarg, oarg);
        const float* bias_ptr = optional_bias<float>(bias, w.rows());
        py::gil_scoped_release release;
        int8_bitmap_linear(w, xarg.data, xarg.strides[0], xarg.shape[0], bias_ptr, oarg.data,
                           oarg.strides[0], num_threads);
      },
      py::arg("w"), py::arg("x"), py::arg("out"), py::arg("bias") = py::none(),
      py::arg("num_threads") = 0,
      "out = x @ w.T (+ bias) in float32, x quantized to int8 per row; out must not overlap x.");

  m.def(
      "int8_bitmap_int_product",
      [](const Matrix& w, const py::array& xq, const py::array& out, int num_threads) {
        const auto xarg = strided_arg<int8_t>(xq, "xq", 2, false);
        const auto oarg = strided_arg<int32_t>(out, "out", 2, true);
        check_linear_operands(w.rows(), w.cols(), xarg, oarg);
        check_symmetric_int8(xarg, "xq");
        py::gil_scoped_release release;
        int8_bitmap_int_product(w, xarg.data, xarg.strides[0], xarg.shape[0], oarg.data,
                                oarg.strides[0], num_threads);
      },
      py::arg("w"), py::arg("xq"), py::arg("out"), py::arg("num_threads") = 0,
      "out = xq @ q.T exactly in int32 (xq int8 in [-127, 127], batch x cols; out batch x rows).");
}

}  // namespace sparsegemm::bindings
