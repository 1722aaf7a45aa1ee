// CSR matrices and products, for float, double and bfloat16 values. A
// bfloat16 matrix takes and gives its values as uint16 bit patterns, is built
// from and densified to float32, and multiplies float32 operands (as the
// bitmap's, register_bitmap.cpp); the gradient helper (csr_sampled_dot) and
// the fused pair are float and double only.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <string>
#include <type_traits>

#include "bindings/array_args.h"
#include "bindings/csr_weight.h"
#include "bindings/products.h"
#include "core/csr_matrix.h"
#include "drivers/csr_driver.h"

namespace sparsegemm::bindings {

namespace py = pybind11;

namespace {

// The float and double matrices' gradient helper and fused pair.
template <typename T>
void register_float_csr_helpers(py::module_& m) {
  using Matrix = CsrMatrix<T>;
  m.def(
      "csr_sampled_dot",
      [](const Matrix& pattern, const py::array& a, const py::array& b, const py::array& out,
         int num_threads) {
        const auto aarg = strided_arg<T>(a, "a", 2, false);
        const auto barg = strided_arg<T>(b, "b", 2, false);
        const auto oarg = strided_arg<T>(out, "out", 1, true);
        const int64_t n = aarg.shape[1];
        if (aarg.shape[0] != pattern.rows() || barg.shape[0] != pattern.cols() ||
            barg.shape[1] != n)
          throw py::value_error(
              "shape mismatch: pattern is " + shape_str(pattern.rows(), pattern.cols()) +
              ", a is " + shape_str(aarg.shape[0], aarg.shape[1]) + ", b is " +
              shape_str(barg.shape[0], barg.shape[1]) + "; need a (rows, n) and b (cols, n)");
        if (!has_contiguous_rows(aarg) || !has_contiguous_rows(barg))
          throw py::value_error("a and b must have contiguous rows");
        if (oarg.shape[0] != pattern.nnz() || (oarg.shape[0] > 1 && oarg.strides[0] != 1))
          throw py::value_error(
              "out must be contiguous with nnz = " + std::to_string(pattern.nnz()) + " entries");
        py::gil_scoped_release release;
        csr_sampled_dot(pattern, aarg.data, aarg.strides[0], barg.data, barg.strides[0], n,
                        oarg.data, num_threads);
      },
      py::arg("pattern"), py::arg("a"), py::arg("b"), py::arg("out"), py::arg("num_threads") = 0,
      "out[j] = a[r, :] . b[k, :] for each stored (r, k) of pattern (its values are ignored).");

  m.def(
      "csr_linear_pair",
      [](const Matrix& w1, const py::object& values1, const py::object& chunk_values1,
         int64_t chunk_layout1, const py::object& bias1, const py::object& activation,
         const Matrix& w2, const py::object& values2, const py::object& chunk_values2,
         int64_t chunk_layout2, const py::object& bias2, const py::array& x, const py::array& out,
         int num_threads) {
        if (w2.cols() != w1.rows())
          throw py::value_error("shape mismatch: the first weight is " +
                                shape_str(w1.rows(), w1.cols()) + " but the second is " +
                                shape_str(w2.rows(), w2.cols()) +
                                "; the second needs as many columns as the first has rows");
        const auto op = linear_operands<T>(w2.rows(), w1.cols(), x, out, bias2, activation);
        const CsrPairWeight<T> first = csr_pair_weight<T>(w1, values1, chunk_values1, chunk_layout1,
                                                          optional_bias<T>(bias1, w1.rows()));
        const CsrPairWeight<T> second =
            csr_pair_weight<T>(w2, values2, chunk_values2, chunk_layout2, op.bias);
        py::gil_scoped_release release;
        csr_linear_pair<T>(first, op.act, second, op.x.data, op.x.strides[0], op.x.shape[0],
                           op.out.data, op.out.strides[0], num_threads);
      },
      py::arg("w1"), py::arg("values1"), py::arg("chunk_values1"), py::arg("chunk_layout1"),
      py::arg("bias1"), py::arg("activation"), py::arg("w2"), py::arg("values2"),
      py::arg("chunk_values2"), py::arg("chunk_layout2"), py::arg("bias2"), py::arg("x"),
      py::arg("out"), py::arg("num_threads") = 0,
      "out = act(x @ w1.T + bias1) @ w2.T + bias2 with the hidden activations kept in cache. "
      "values: None for a matrix's own; chunk_values: None, or the values in chunk order for "
      "the layout chunk_layout names (as csr_linear_chunk_ordered).");
}

template <typename V>
void register_csr_dtype(py::module_& m, const char* class_name) {
  using Matrix = CsrMatrix<V>;
  using T = compute_t<V>;
  using Carrier = typename NumpyCarrier<V>::type;
  py::class_<Matrix>(m, class_name)
      .def_static(
          "from_arrays",
          [](int64_t rows, int64_t cols, const py::array& indptr, const py::array& indices,
             const py::array& data) {
            const auto idx = contiguous_vector_arg<index_t>(indices, "indices");
            const auto val = value_vector_arg<V>(data, "data");
            return with_indptr(indptr, [&](const auto& ptr) {
              return Matrix::from_arrays(rows, cols, ptr.data, ptr.shape[0], idx.data, idx.shape[0],
                                         val.data, val.shape[0]);
            });
          },
          py::arg("rows"), py::arg("cols"), py::arg("indptr"), py::arg("indices"), py::arg("data"),
          "Copy and validate CSR arrays (indptr int32 or int64, indices int32).")
      .def_static(
          "pattern_from_arrays",
          [](int64_t rows, int64_t cols, const py::array& indptr, const py::array& indices) {
            const auto idx = contiguous_vector_arg<index_t>(indices, "indices");
            return with_indptr(indptr, [&](const auto& ptr) {
              return Matrix::pattern_from_arrays(rows, cols, ptr.data, ptr.shape[0], idx.data,
                                                 idx.shape[0]);
            });
          },
          py::arg("rows"), py::arg("cols"), py::arg("indptr"), py::arg("indices"),
          "Copy and validate a CSR structure without values: products need values=.")
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
      .def_property_readonly(
          "indptr",
          [](py::object self) { return owned_view(self.cast<const Matrix&>().indptr(), self); })
      .def_property_readonly(
          "indices",
          [](const Matrix& a) {
            // A copy, since 16-bit storage is widened to int32 for Python. A
            // capsule owns it, so numpy refuses to make the array writeable again.
            auto* columns = new std::vector<index_t>(a.column_indices());
            py::capsule owner(columns,
                              [](void* p) { delete static_cast<std::vector<index_t>*>(p); });
            return owned_view(*columns, owner);
          },
          "Column indices as int32 (a read-only copy).")
      .def_property_readonly("compact_indices", &Matrix::compact_indices,
                             "Whether column indices are stored in 16 bits.")
      .def_property_readonly("bytes_per_entry", &Matrix::bytes_per_entry)
      .def_property_readonly(
          "panel_chunk_columns", [](const Matrix& a) { return csr_chunk_layout<V>(a).columns; },
          "Column chunk width of linear's packed panel kernel on the active ISA (0: unchunked).")
      .def_property_readonly(
          "chunk_row_quads", [](const Matrix& a) { return csr_chunk_layout<V>(a).row_quads; },
          "Whether linear's chunked kernel on the active ISA reads this matrix by row quads.")
      .def(
          "values_in_chunk_order",
          [](const Matrix& a, const py::array& values) -> py::object {
            const ChunkLayout layout = csr_chunk_layout<V>(a);
            if (layout.columns <= 0) return py::make_tuple(0, py::none());
            const V* source = optional_values<V>(values, a);
            // The kernel streams these: the matrices' allocator (huge pages).
            py::array_t<Carrier> ordered = new_large_array<Carrier>(a.nnz());
            V* out = reinterpret_cast<V*>(ordered.mutable_data());
            {
              py::gil_scoped_release release;
              a.to_chunk_order(layout, source, out);
            }
            return py::make_tuple(layout.key(), ordered);
          },
          py::arg("values"),
          "(chunk layout, values in chunk order) for csr_linear_chunk_ordered, or (0, None) "
          "where linear's kernel does not run this matrix in column chunks. The layout is an "
          "integer naming the chunk width and order on the active ISA.")
      .def_property_readonly("storage_bytes", &Matrix::storage_bytes)
      .def_property_readonly("has_values", &Matrix::has_values,
                             "False for a pattern-only matrix (see pattern_from_arrays).")
      .def_property_readonly(
          "data",
          [](py::object self) { return owned_view(self.cast<const Matrix&>().values(), self); })
      .def(
          "transposed",
          [](const Matrix& a) {
            py::array_t<int64_t> permutation(a.nnz());
            int64_t* perm = permutation.mutable_data();
            py::gil_scoped_release release;
            Matrix t = a.transposed(perm);
            py::gil_scoped_acquire acquire;
            return py::make_tuple(std::move(t), permutation);
          },
          "(transpose, permutation): transpose.data == self.data[permutation].")
      .def(
          "with_values",
          [](const Matrix& a, const py::array& values) {
            const auto arg = value_vector_arg<V>(values, "values");
            py::gil_scoped_release release;
            return a.with_values(arg.data, arg.shape[0]);
          },
          py::arg("values"), "Same pattern (shared, not copied), new values.")
      .def("to_dense", [](const Matrix& a) {
        py::array_t<T> out({a.rows(), a.cols()});
        T* ptr = out.mutable_data();
        py::gil_scoped_release release;
        a.to_dense(ptr);
        return out;
      });

  register_products<T, Matrix>(
      m, "csr_matmul", "csr_linear", &csr_matmul<V>,
      [](const Matrix& w, const T* x, int64_t ldx, int64_t batch, const T* bias, T* y, int64_t ldy,
         int num_threads, const V* values, Activation act) {
        csr_linear<V>(w, x, ldx, batch, bias, y, ldy, num_threads, values, act);
      });

  m.def(
      "csr_linear_chunk_ordered",
      [](const Matrix& w, const py::array& x, const py::array& out, const py::object& bias,
         int num_threads, const py::object& values, const py::array& chunk_values,
         int64_t chunk_layout, const py::object& activation) {
        const auto op = linear_operands<T>(w.rows(), w.cols(), x, out, bias, activation);
        const V* values_ptr = optional_values<V>(values, w);
        const V* chunk_ptr = optional_values<V>(chunk_values, w);
        py::gil_scoped_release release;
        csr_linear<V>(w, op.x.data, op.x.strides[0], op.x.shape[0], op.bias, op.out.data,
                      op.out.strides[0], num_threads, values_ptr, op.act, chunk_ptr, chunk_layout);
      },
      py::arg("w"), py::arg("x"), py::arg("out"), py::arg("bias"), py::arg("num_threads"),
      py::arg("values"), py::arg("chunk_values"), py::arg("chunk_layout"),
      py::arg("activation") = py::none(),
      "csr_linear with, beside values, the same values in chunk order for the layout "
      "chunk_layout names (see values_in_chunk_order): read where the kernel runs in it.");

  if constexpr (std::is_same_v<V, T>) register_float_csr_helpers<T>(m);
}

}  // namespace

void register_csr(py::module_& m) {
  register_csr_dtype<float>(m, "CsrMatrixF32");
  register_csr_dtype<double>(m, "CsrMatrixF64");
  register_csr_dtype<bfloat16_t>(m, "CsrMatrixBF16");
}

}  // namespace sparsegemm::bindings
