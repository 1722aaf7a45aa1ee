// CSR matrices and products.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <string>

#include "bindings/array_args.h"
#include "core/csr_matrix.h"
#include "ops/csr_ops.h"

namespace sparsegemm::bindings {

namespace py = pybind11;

namespace {

std::string shape_str(int64_t a, int64_t b) {
  return "(" + std::to_string(a) + ", " + std::to_string(b) + ")";
}

// A read-only numpy view of a vector owned by the matrix `owner`.
template <typename V>
py::array owned_view(const V& vec, py::handle owner) {
  using E = typename V::value_type;
  py::array_t<E> view({static_cast<py::ssize_t>(vec.size())}, {static_cast<py::ssize_t>(sizeof(E))},
                      vec.data(), owner);
  py::detail::array_proxy(view.ptr())->flags &= ~py::detail::npy_api::NPY_ARRAY_WRITEABLE_;
  return std::move(view);
}

template <typename T>
const T* optional_bias(const py::object& bias, int64_t length) {
  if (bias.is_none()) return nullptr;
  const auto arg = contiguous_vector_arg<T>(bias.cast<py::array>(), "bias");
  if (arg.shape[0] != length)
    throw py::value_error("bias must have " + std::to_string(length) + " entries, got " +
                          std::to_string(arg.shape[0]));
  return arg.data;
}

template <typename T>
void register_csr_dtype(py::module_& m, const char* class_name) {
  using Matrix = CsrMatrix<T>;
  py::class_<Matrix>(m, class_name)
      .def_static(
          "from_arrays",
          [](int64_t rows, int64_t cols, const py::array& indptr, const py::array& indices,
             const py::array& data) {
            const auto idx = contiguous_vector_arg<index_t>(indices, "indices");
            const auto val = contiguous_vector_arg<T>(data, "data");
            if (indptr.dtype().is(py::dtype::of<int32_t>())) {
              const auto ptr = contiguous_vector_arg<int32_t>(indptr, "indptr");
              py::gil_scoped_release release;
              return Matrix::from_arrays(rows, cols, ptr.data, ptr.shape[0], idx.data, idx.shape[0],
                                         val.data, val.shape[0]);
            }
            const auto ptr = contiguous_vector_arg<int64_t>(indptr, "indptr");
            py::gil_scoped_release release;
            return Matrix::from_arrays(rows, cols, ptr.data, ptr.shape[0], idx.data, idx.shape[0],
                                       val.data, val.shape[0]);
          },
          py::arg("rows"), py::arg("cols"), py::arg("indptr"), py::arg("indices"), py::arg("data"),
          "Copy and validate CSR arrays (indptr int32 or int64, indices int32).")
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
      .def_property_readonly("indptr", [](py::object self) {
        return owned_view(self.cast<const Matrix&>().indptr(), self);
      })
      .def_property_readonly("indices", [](py::object self) {
        return owned_view(self.cast<const Matrix&>().indices(), self);
      })
      .def_property_readonly("data", [](py::object self) {
        return owned_view(self.cast<const Matrix&>().values(), self);
      })
      .def("to_dense", [](const Matrix& a) {
        py::array_t<T> out({a.rows(), a.cols()});
        T* ptr = out.mutable_data();
        py::gil_scoped_release release;
        a.to_dense(ptr);
        return out;
      });

  m.def(
      "csr_matmul",
      [](const Matrix& a, const py::array& b, const py::array& out, const py::object& bias,
         int num_threads) {
        const auto barg = strided_arg<T>(b, "B", 2, false);
        const auto oarg = strided_arg<T>(out, "out", 2, true);
        if (barg.shape[0] != a.cols())
          throw py::value_error("shape mismatch: A is " + shape_str(a.rows(), a.cols()) + " but B is " +
                                shape_str(barg.shape[0], barg.shape[1]));
        if (oarg.shape[0] != a.rows() || oarg.shape[1] != barg.shape[1])
          throw py::value_error("out must have shape " + shape_str(a.rows(), barg.shape[1]) + ", got " +
                                shape_str(oarg.shape[0], oarg.shape[1]));
        if (!has_contiguous_rows(oarg))
          throw py::value_error("out must have contiguous rows");
        const T* bias_ptr = optional_bias<T>(bias, a.rows());
        py::gil_scoped_release release;
        csr_matmul(a, barg.data, barg.strides[0], barg.strides[1], barg.shape[1], bias_ptr, oarg.data,
                   oarg.strides[0], num_threads);
      },
      py::arg("a"), py::arg("b"), py::arg("out"), py::arg("bias") = py::none(),
      py::arg("num_threads") = 0, "out = a @ b (+ bias[:, None]); out must not overlap b.");

  m.def(
      "csr_linear",
      [](const Matrix& w, const py::array& x, const py::array& out, const py::object& bias,
         int num_threads) {
        const auto xarg = strided_arg<T>(x, "x", 2, false);
        const auto oarg = strided_arg<T>(out, "out", 2, true);
        if (xarg.shape[1] != w.cols())
          throw py::value_error("shape mismatch: x is " + shape_str(xarg.shape[0], xarg.shape[1]) +
                                " but the weight is " + shape_str(w.rows(), w.cols()));
        if (!has_contiguous_rows(xarg))
          throw py::value_error("x must have contiguous rows");
        if (oarg.shape[0] != xarg.shape[0] || oarg.shape[1] != w.rows())
          throw py::value_error("out must have shape " + shape_str(xarg.shape[0], w.rows()) + ", got " +
                                shape_str(oarg.shape[0], oarg.shape[1]));
        if (!has_contiguous_rows(oarg))
          throw py::value_error("out must have contiguous rows");
        const T* bias_ptr = optional_bias<T>(bias, w.rows());
        py::gil_scoped_release release;
        csr_linear(w, xarg.data, xarg.strides[0], xarg.shape[0], bias_ptr, oarg.data, oarg.strides[0],
                   num_threads);
      },
      py::arg("w"), py::arg("x"), py::arg("out"), py::arg("bias") = py::none(),
      py::arg("num_threads") = 0, "out = x @ w.T (+ bias); out must not overlap x.");
}

}  // namespace

void register_csr(py::module_& m) {
  register_csr_dtype<float>(m, "CsrMatrixF32");
  register_csr_dtype<double>(m, "CsrMatrixF64");
}

}  // namespace sparsegemm::bindings
