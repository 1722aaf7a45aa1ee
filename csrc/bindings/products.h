// Pieces every format's bindings share: read-only views of owned arrays, the
// optional bias, and the two products (matmul, linear) with their argument
// checks written once. Only bindings/ includes pybind11.
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cstdint>
#include <string>
#include <type_traits>
#include <utility>

#include "bindings/array_args.h"
#include "core/activation.h"
#include "core/large_array.h"

namespace sparsegemm::bindings {

namespace py = pybind11;

inline std::string shape_str(int64_t a, int64_t b) {
  return "(" + std::to_string(a) + ", " + std::to_string(b) + ")";
}

inline py::array read_only(py::array array) {
  py::detail::array_proxy(array.ptr())->flags &= ~py::detail::npy_api::NPY_ARRAY_WRITEABLE_;
  return array;
}

// A read-only numpy view of a vector owned by the matrix `owner`, in the
// element's carrier dtype (uint16 bit patterns for bfloat16).
template <typename V>
py::array owned_view(const V& vec, py::handle owner) {
  using E = typename NumpyCarrier<typename V::value_type>::type;
  return read_only(py::array_t<E>({static_cast<py::ssize_t>(vec.size())},
                                  {static_cast<py::ssize_t>(sizeof(E))},
                                  reinterpret_cast<const E*>(vec.data()), owner));
}

// A writable numpy array of n elements of T in memory from the matrices'
// allocator (core/large_array.h: huge pages from 2 MiB), which it owns.
template <typename T>
py::array_t<T> new_large_array(int64_t n) {
  auto* storage = new LargeArray<T>(static_cast<size_t>(n));
  py::capsule owner(storage, [](void* p) { delete static_cast<LargeArray<T>*>(p); });
  return py::array_t<T>({static_cast<py::ssize_t>(n)}, {static_cast<py::ssize_t>(sizeof(T))},
                        storage->data(), owner);
}

// The checks of x @ w.T for a rows x cols weight: x is batch x cols and out
// batch x rows, both with contiguous rows.
template <typename X, typename Out>
void check_linear_operands(int64_t rows, int64_t cols, const StridedArg<X>& x,
                           const StridedArg<Out>& out) {
  if (x.shape[1] != cols)
    throw py::value_error("shape mismatch: x is " + shape_str(x.shape[0], x.shape[1]) +
                          " but the weight is " + shape_str(rows, cols));
  if (!has_contiguous_rows(x)) throw py::value_error("x must have contiguous rows");
  if (out.shape[0] != x.shape[0] || out.shape[1] != rows)
    throw py::value_error("out must have shape " + shape_str(x.shape[0], rows) + ", got " +
                          shape_str(out.shape[0], out.shape[1]));
  if (!has_contiguous_rows(out)) throw py::value_error("out must have contiguous rows");
}

// The activation named by a linear call's `activation` argument (None or a name).
inline Activation parse_activation(const py::object& activation) {
  if (activation.is_none()) return Activation::None;
  if (py::isinstance<py::str>(activation)) {
    const std::string name = activation.cast<std::string>();
    if (name == "relu") return Activation::Relu;
    if (name == "gelu") return Activation::Gelu;
    if (name == "gelu_tanh") return Activation::GeluTanh;
  }
  throw py::value_error("activation must be None, 'relu', 'gelu' or 'gelu_tanh', got " +
                        py::repr(activation).cast<std::string>());
}

// The checked operands of a linear call (x @ w.T for w rows x cols): the
// activation, x and out (batch x cols and batch x rows, contiguous rows) and
// the bias (rows entries or null).
template <typename T>
struct LinearOperands {
  Activation act;
  StridedArg<T> x, out;
  const T* bias;
};

template <typename T>
LinearOperands<T> linear_operands(int64_t rows, int64_t cols, const py::array& x,
                                  const py::array& out, const py::object& bias,
                                  const py::object& activation) {
  LinearOperands<T> operands{parse_activation(activation), strided_arg<T>(x, "x", 2, false),
                             strided_arg<T>(out, "out", 2, true), nullptr};
  check_linear_operands(rows, cols, operands.x, operands.out);
  operands.bias = optional_bias<T>(bias, rows);
  return operands;
}

// Registers `matmul_name(a, b, out, bias=None, num_threads=0, values=None)` and
// `linear_name(w, x, out, bias=None, num_threads=0, values=None, activation=None)` for a Matrix
// with rows(), cols(), values() and values_size(), calling the C++ drivers with the signatures
// of drivers/csr_driver.h. T is the dense operands' type (b, out, x, bias);
// `values` replaces the matrix's stored values for one call and has their type,
// which may differ (bfloat16 values computed in float).
template <typename T, typename Matrix, typename MatmulFn, typename LinearFn>
void register_products(py::module_& m, const char* matmul_name, const char* linear_name,
                       MatmulFn matmul, LinearFn linear) {
  using Stored =
      typename std::decay_t<decltype(std::declval<const Matrix&>().values())>::value_type;
  m.def(
      matmul_name,
      [matmul](const Matrix& a, const py::array& b, const py::array& out, const py::object& bias,
               int num_threads, const py::object& values) {
        const auto barg = strided_arg<T>(b, "B", 2, false);
        const auto oarg = strided_arg<T>(out, "out", 2, true);
        if (barg.shape[0] != a.cols())
          throw py::value_error("shape mismatch: A is " + shape_str(a.rows(), a.cols()) +
                                " but B is " + shape_str(barg.shape[0], barg.shape[1]));
        if (oarg.shape[0] != a.rows() || oarg.shape[1] != barg.shape[1])
          throw py::value_error("out must have shape " + shape_str(a.rows(), barg.shape[1]) +
                                ", got " + shape_str(oarg.shape[0], oarg.shape[1]));
        if (!has_contiguous_rows(oarg)) throw py::value_error("out must have contiguous rows");
        const T* bias_ptr = optional_bias<T>(bias, a.rows());
        const Stored* values_ptr = optional_values<Stored>(values, a);
        py::gil_scoped_release release;
        matmul(a, barg.data, barg.strides[0], barg.strides[1], barg.shape[1], bias_ptr, oarg.data,
               oarg.strides[0], num_threads, values_ptr);
      },
      py::arg("a"), py::arg("b"), py::arg("out"), py::arg("bias") = py::none(),
      py::arg("num_threads") = 0, py::arg("values") = py::none(),
      "out = a @ b (+ bias[:, None]); out must not overlap b.");

  m.def(
      linear_name,
      [linear](const Matrix& w, const py::array& x, const py::array& out, const py::object& bias,
               int num_threads, const py::object& values, const py::object& activation) {
        const auto op = linear_operands<T>(w.rows(), w.cols(), x, out, bias, activation);
        const Stored* values_ptr = optional_values<Stored>(values, w);
        py::gil_scoped_release release;
        linear(w, op.x.data, op.x.strides[0], op.x.shape[0], op.bias, op.out.data,
               op.out.strides[0], num_threads, values_ptr, op.act);
      },
      py::arg("w"), py::arg("x"), py::arg("out"), py::arg("bias") = py::none(),
      py::arg("num_threads") = 0, py::arg("values") = py::none(),
      py::arg("activation") = py::none(),
      "out = act(x @ w.T (+ bias)), act one of None, 'relu', 'gelu', 'gelu_tanh' (as torch's "
      "F.gelu approximate='tanh'); out must not overlap x.");
}

}  // namespace sparsegemm::bindings
