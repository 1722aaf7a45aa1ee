// One CSR weight of a fused product's bindings (csr_linear_pair,
// csr_self_attention), as the drivers take it.
#pragma once

#include <pybind11/pybind11.h>

#include <cstdint>

#include "bindings/array_args.h"
#include "core/csr_matrix.h"
#include "drivers/csr_driver.h"

namespace sparsegemm::bindings {

// The matrix, its values (None: its own), the same values in chunk order (None,
// or for the layout whose key is chunk_layout) and a bias already checked (or null).
template <typename T>
CsrPairWeight<T> csr_pair_weight(const CsrMatrix<T>& w, const pybind11::object& values,
                                 const pybind11::object& chunk_values, int64_t chunk_layout,
                                 const T* bias) {
  return CsrPairWeight<T>{w, optional_values<T>(values, w),
                          chunk_values.is_none() ? nullptr : optional_values<T>(chunk_values, w),
                          chunk_layout, bias};
}

}  // namespace sparsegemm::bindings
