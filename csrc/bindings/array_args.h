// Checking numpy arguments before any kernel sees them: dtype, rank, strides.
// Only bindings/ includes pybind11.
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cstdint>
#include <string>

namespace sparsegemm::bindings {

namespace py = pybind11;

// A strided 0-2 dimensional numpy view with strides counted in elements.
template <typename T>
struct StridedArg {
  T* data = nullptr;
  int64_t shape[2] = {1, 1};
  int64_t strides[2] = {0, 0};
};

template <typename T>
StridedArg<T> strided_arg(const py::array& array, const char* name, int ndim, bool writable) {
  // array_t's check compares dtypes with PyArray_EquivTypes: equal dtypes may be
  // distinct objects (e.g. after astype), and byte-swapped ones are rejected.
  if (!py::isinstance<py::array_t<T>>(array))
    throw py::type_error(std::string(name) + " must have dtype " +
                         std::string(py::str(py::dtype::of<T>())) + ", got " +
                         std::string(py::str(array.dtype())));
  if (array.ndim() != ndim)
    throw py::value_error(std::string(name) + " must be " + std::to_string(ndim) + "-dimensional, got " +
                          std::to_string(array.ndim()) + " dimensions");
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

}  // namespace sparsegemm::bindings
