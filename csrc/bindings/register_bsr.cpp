// BSR matrices and products, for float, double and bfloat16 values (a
// bfloat16 matrix as in register_bitmap.cpp: uint16 bit patterns, float32
// dense operands).
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <string>
#include <utility>

#include "bindings/array_args.h"
#include "bindings/products.h"
#include "core/bsr_matrix.h"
#include "drivers/bsr_driver.h"

namespace sparsegemm::bindings {

namespace py = pybind11;

namespace {

template <typename V>
void register_bsr_dtype(py::module_& m, const char* class_name) {
  using Matrix = BsrMatrix<V>;
  using T = compute_t<V>;
  py::class_<Matrix>(m, class_name)
      .def_static(
          "from_arrays",
          [](int64_t rows, int64_t cols, std::pair<int, int> blocksize, const py::array& indptr,
             const py::array& indices, const py::array& data) {
            const auto idx = contiguous_vector_arg<index_t>(indices, "indices");
            const auto val = value_vector_arg<V>(data, "data");
            return with_indptr(indptr, [&](const auto& ptr) {
              return Matrix::from_arrays(rows, cols, blocksize.first, blocksize.second, ptr.data,
                                         ptr.shape[0], idx.data, idx.shape[0], val.data,
                                         val.shape[0]);
            });
          },
          py::arg("rows"), py::arg("cols"), py::arg("blocksize"), py::arg("indptr"),
          py::arg("indices"), py::arg("data"),
          "Copy and validate BSR arrays: indptr (int32 or int64) per block row, int32 block-column "
          "indices, and data holding nblocks * R * C values (flattened, row-major in a block).")
      .def_static(
          "pattern_from_arrays",
          [](int64_t rows, int64_t cols, std::pair<int, int> blocksize, const py::array& indptr,
             const py::array& indices) {
            const auto idx = contiguous_vector_arg<index_t>(indices, "indices");
            return with_indptr(indptr, [&](const auto& ptr) {
              return Matrix::pattern_from_arrays(rows, cols, blocksize.first, blocksize.second,
                                                 ptr.data, ptr.shape[0], idx.data, idx.shape[0]);
            });
          },
          py::arg("rows"), py::arg("cols"), py::arg("blocksize"), py::arg("indptr"),
          py::arg("indices"),
          "Copy and validate a block structure without values: products need values=.")
      .def_static(
          "from_dense",
          [](const py::array& dense, std::pair<int, int> blocksize, double threshold) {
            const auto arg = strided_arg<T>(dense, "dense", 2, false);
            py::gil_scoped_release release;
            return Matrix::from_dense(arg.shape[0], arg.shape[1], arg.data, arg.strides[0],
                                      arg.strides[1], blocksize.first, blocksize.second, threshold);
          },
          py::arg("dense"), py::arg("blocksize"), py::arg("threshold"),
          "Keep every block holding an entry with |a| > threshold (NaN counts as nonzero).")
      .def_property_readonly("rows", &Matrix::rows)
      .def_property_readonly("cols", &Matrix::cols)
      .def_property_readonly(
          "blocksize", [](const Matrix& a) { return std::make_pair(a.block_r(), a.block_c()); })
      .def_property_readonly("nblocks", &Matrix::nblocks)
      .def_property_readonly("storage_bytes", &Matrix::storage_bytes)
      .def_property_readonly("has_values", &Matrix::has_values,
                             "False for a pattern-only matrix (see pattern_from_arrays).")
      .def_property_readonly(
          "indptr",
          [](py::object self) { return owned_view(self.cast<const Matrix&>().indptr(), self); })
      .def_property_readonly(
          "indices",
          [](py::object self) { return owned_view(self.cast<const Matrix&>().indices(), self); })
      .def_property_readonly(
          "data",
          [](py::object self) { return owned_view(self.cast<const Matrix&>().values(), self); })
      .def(
          "transposed",
          [](const Matrix& a) {
            py::array_t<int64_t> permutation(a.nblocks());
            int64_t* perm = permutation.mutable_data();
            py::gil_scoped_release release;
            Matrix t = a.transposed(perm);
            py::gil_scoped_acquire acquire;
            return py::make_tuple(std::move(t), permutation);
          },
          "(transpose, permutation): block k of the transpose is block permutation[k] of self, "
          "transposed.")
      .def("to_dense", [](const Matrix& a) {
        py::array_t<T> out({a.rows(), a.cols()});
        T* ptr = out.mutable_data();
        py::gil_scoped_release release;
        a.to_dense(ptr);
        return out;
      });

  register_products<T, Matrix>(m, "bsr_matmul", "bsr_linear", &bsr_matmul<V>, &bsr_linear<V>);
}

}  // namespace

void register_bsr(py::module_& m) {
  register_bsr_dtype<float>(m, "BsrMatrixF32");
  register_bsr_dtype<double>(m, "BsrMatrixF64");
  register_bsr_dtype<bfloat16_t>(m, "BsrMatrixBF16");
}

}  // namespace sparsegemm::bindings
