// CSR matrices and products.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <string>

#include "bindings/array_args.h"
#include "bindings/products.h"
#include "core/csr_matrix.h"
#include "ops/csr_ops.h"

namespace sparsegemm::bindings {

namespace py = pybind11;

namespace {

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
          [](const py::array& dense, T threshold) {
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

  register_products<T, Matrix>(m, "csr_matmul", "csr_linear", &csr_matmul<T>, &csr_linear<T>);
}

}  // namespace

void register_csr(py::module_& m) {
  register_csr_dtype<float>(m, "CsrMatrixF32");
  register_csr_dtype<double>(m, "CsrMatrixF64");
}

}  // namespace sparsegemm::bindings
