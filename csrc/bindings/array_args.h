// Checking numpy arguments before any kernel sees them: dtype, rank, strides.
// Only bindings/ includes pybind11.
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cstdint>
#include <stdexcept>
#include <string>

#include "core/bfloat16.h"
#include "core/csr_matrix.h"  // values_or_stored

namespace sparsegemm::bindings {

namespace py = pybind11;

// The most dimensions a StridedArg holds (4: an NCHW image batch).
constexpr int kMaxArgDims = 4;

// A strided 0-4 dimensional numpy view with strides counted in elements.
template <typename T>
struct StridedArg {
  T* data = nullptr;
  int64_t shape[kMaxArgDims] = {1, 1, 1, 1};
  int64_t strides[kMaxArgDims] = {0, 0, 0, 0};
};

template <typename T>
StridedArg<T> strided_arg(const py::array& array, const char* name, int ndim, bool writable) {
  static_assert(kMaxArgDims == 4, "update StridedArg's initialisers");
  if (ndim < 0 || ndim > kMaxArgDims) throw std::logic_error("strided_arg: unsupported ndim");
  // array_t's check compares dtypes with PyArray_EquivTypes: equal dtypes may be
  // distinct objects (e.g. after astype), and byte-swapped ones are rejected.
  if (!py::isinstance<py::array_t<T>>(array))
    throw py::type_error(std::string(name) + " must have dtype " +
                         std::string(py::str(py::dtype::of<T>())) + ", got " +
                         std::string(py::str(array.dtype())));
  if (array.ndim() != ndim)
    throw py::value_error(std::string(name) + " must be " + std::to_string(ndim) +
                          "-dimensional, got " + std::to_string(array.ndim()) + " dimensions");
  if (writable && !array.writeable())
    throw py::value_error(std::string(name) + " must be writeable");
  // Kernels dereference T* directly: a misaligned base is undefined behaviour.
  if ((array.flags() & py::detail::npy_api::NPY_ARRAY_ALIGNED_) == 0)
    throw py::value_error(std::string(name) + " must be aligned to its item size");
  StridedArg<T> arg;
  arg.data = static_cast<T*>(const_cast<void*>(array.data()));
  for (int d = 0; d < ndim; ++d) {
    const int64_t stride = array.strides(d);
    if (stride < 0 || stride % static_cast<int64_t>(sizeof(T)) != 0)
      throw py::value_error(std::string(name) +
                            " must have non-negative strides that are a multiple of the item size");
    arg.shape[d] = array.shape(d);
    arg.strides[d] = stride / static_cast<int64_t>(sizeof(T));
  }
  return arg;
}

// True when a 2-d argument's rows are contiguous. An empty array has no rows to
// read or write (numpy may give it zero strides), so it always qualifies.
template <typename T>
bool has_contiguous_rows(const StridedArg<T>& arg) {
  return arg.shape[0] == 0 || arg.shape[1] <= 1 || arg.strides[1] == 1;
}

// A 1-d contiguous array of exactly dtype T.
template <typename T>
StridedArg<T> contiguous_vector_arg(const py::array& array, const char* name) {
  StridedArg<T> arg = strided_arg<T>(array, name, 1, false);
  if (arg.shape[0] > 1 && arg.strides[0] != 1)
    throw py::value_error(std::string(name) + " must be contiguous");
  return arg;
}

// The numpy dtype that carries stored values of type V: V itself, or uint16
// bit patterns for bfloat16 (numpy has no bfloat16 dtype).
template <typename V>
struct NumpyCarrier {
  using type = V;
};
template <>
struct NumpyCarrier<bfloat16_t> {
  using type = uint16_t;
};

// A 1-d contiguous vector of stored values of type V, given in its carrier dtype.
template <typename V>
StridedArg<V> value_vector_arg(const py::array& array, const char* name) {
  using Carrier = typename NumpyCarrier<V>::type;
  static_assert(sizeof(Carrier) == sizeof(V), "a carrier holds the value's bytes");
  const StridedArg<Carrier> carried = contiguous_vector_arg<Carrier>(array, name);
  StridedArg<V> arg;
  arg.data = reinterpret_cast<V*>(carried.data);
  arg.shape[0] = carried.shape[0];
  arg.strides[0] = carried.strides[0];
  return arg;
}

// Returns build(indptr_arg) with indptr as a contiguous int32 (scipy's
// default) or int64 vector, and the GIL released while build runs.
template <typename Build>
auto with_indptr(const py::array& indptr, const Build& build) {
  if (indptr.dtype().is(py::dtype::of<int32_t>())) {
    const auto ptr = contiguous_vector_arg<int32_t>(indptr, "indptr");
    py::gil_scoped_release release;
    return build(ptr);
  }
  const auto ptr = contiguous_vector_arg<int64_t>(indptr, "indptr");
  py::gil_scoped_release release;
  return build(ptr);
}

// An optional bias: None, or a contiguous vector of `length` entries.
template <typename T>
const T* optional_bias(const py::object& bias, int64_t length) {
  if (bias.is_none()) return nullptr;
  const auto arg = contiguous_vector_arg<T>(bias.cast<py::array>(), "bias");
  if (arg.shape[0] != length)
    throw py::value_error("bias must have " + std::to_string(length) + " entries, got " +
                          std::to_string(arg.shape[0]));
  return arg.data;
}

// Optional replacement values for a product with sparse matrix `a`: None, or
// a contiguous vector with as many entries as a product reads (a.values_size()),
// of a's stored value type V (in its carrier dtype, see NumpyCarrier). A
// pattern-only `a` needs them: None raises ValueError here, before the GIL goes.
template <typename V, typename Matrix>
const V* optional_values(const py::object& values, const Matrix& a) {
  if (values.is_none()) return values_or_stored<Matrix, V>(a, nullptr);
  const auto arg = value_vector_arg<V>(values.cast<py::array>(), "values");
  const int64_t stored = a.values_size();
  if (arg.shape[0] != stored)
    throw py::value_error("values must have " + std::to_string(stored) +
                          " entries (one per stored value), got " + std::to_string(arg.shape[0]));
  return arg.data;
}

}  // namespace sparsegemm::bindings
