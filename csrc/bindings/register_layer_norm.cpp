// Residual add + LayerNorm over the rows of float32 or float64 matrices.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <string>

#include "bindings/array_args.h"
#include "drivers/layer_norm_driver.h"

namespace sparsegemm::bindings {

namespace py = pybind11;

namespace {
template <typename T>
StridedArg<T> row_operand(const py::array& array, const char* name, bool writable) {
  const auto arg = strided_arg<T>(array, name, 2, writable);
  if (!has_contiguous_rows(arg))
    throw py::value_error(std::string(name) + " must have contiguous rows");
  return arg;
}

template <typename T>
const T* optional_vector(const py::object& array, const char* name, int64_t cols) {
  if (array.is_none()) return nullptr;
  const auto arg = contiguous_vector_arg<T>(array.cast<py::array>(), name);
  if (arg.shape[0] != cols)
    throw py::value_error(std::string(name) + " has " + std::to_string(arg.shape[0]) +
                          " entries, expected " + std::to_string(cols));
  return arg.data;
}

template <typename T>
void layer_norm_into(const py::array& x, const py::object& residual, const py::object& gamma,
                     const py::object& beta, const py::array& out, double eps, int num_threads) {
  const auto x_arg = row_operand<T>(x, "x", false);
  const auto out_arg = row_operand<T>(out, "out", true);
  const int64_t rows = x_arg.shape[0], cols = x_arg.shape[1];
  const auto same_shape = [&](const StridedArg<T>& arg, const char* name) {
    if (arg.shape[0] != rows || arg.shape[1] != cols)
      throw py::value_error(std::string(name) + " has shape (" + std::to_string(arg.shape[0]) +
                            ", " + std::to_string(arg.shape[1]) + "), expected (" +
                            std::to_string(rows) + ", " + std::to_string(cols) + ")");
  };
  same_shape(out_arg, "out");
  LayerNormArgs<T> args;
  if (!residual.is_none()) {
    const auto residual_arg = row_operand<T>(residual.cast<py::array>(), "residual", false);
    same_shape(residual_arg, "residual");
    args.residual = residual_arg.data;
    args.residual_row_stride = residual_arg.strides[0];
  }
  args.gamma = optional_vector<T>(gamma, "weight", cols);
  args.beta = optional_vector<T>(beta, "bias", cols);
  args.x = x_arg.data;
  args.x_row_stride = x_arg.strides[0];
  args.out = out_arg.data;
  args.out_row_stride = out_arg.strides[0];
  args.rows = rows;
  args.cols = cols;
  args.eps = static_cast<T>(eps);
  py::gil_scoped_release release;
  layer_norm(args, num_threads);
}

// Dispatches on x's dtype; the typed function checks every other operand against it.
void layer_norm_any(const py::array& x, const py::object& residual, const py::object& gamma,
                    const py::object& beta, const py::array& out, double eps, int num_threads) {
  if (py::isinstance<py::array_t<double>>(x))
    layer_norm_into<double>(x, residual, gamma, beta, out, eps, num_threads);
  else
    layer_norm_into<float>(x, residual, gamma, beta, out, eps, num_threads);
}
}  // namespace

void register_layer_norm(py::module_& m) {
  m.def("layer_norm", &layer_norm_any, py::arg("x"), py::arg("residual"), py::arg("weight"),
        py::arg("bias"), py::arg("out"), py::arg("eps"), py::arg("num_threads"),
        "out = LayerNorm(x + residual) * weight + bias over the rows of float32 or float64 2-d "
        "arrays with contiguous rows (residual, weight and bias may be None).");
}

}  // namespace sparsegemm::bindings
