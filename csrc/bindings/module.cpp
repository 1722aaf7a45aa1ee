// The Python extension module sparsegemm._core. Every register_* function adds
// one part of the C++ core; the Python package wraps these in its public API.
#include <pybind11/pybind11.h>

namespace sparsegemm::bindings {
void register_runtime(pybind11::module_& m);
void register_csr(pybind11::module_& m);
void register_bsr(pybind11::module_& m);
void register_bitmap(pybind11::module_& m);
void register_int8_bitmap(pybind11::module_& m);
void register_conv(pybind11::module_& m);
void register_attention(pybind11::module_& m);
void register_layer_norm(pybind11::module_& m);
}  // namespace sparsegemm::bindings

PYBIND11_MODULE(_core, m) {
  m.doc() = "sparsegemm C++ kernels (private: use the sparsegemm package)";
  sparsegemm::bindings::register_runtime(m);
  sparsegemm::bindings::register_csr(m);
  sparsegemm::bindings::register_bsr(m);
  sparsegemm::bindings::register_bitmap(m);
  sparsegemm::bindings::register_int8_bitmap(m);
  sparsegemm::bindings::register_conv(m);
  sparsegemm::bindings::register_attention(m);
  sparsegemm::bindings::register_layer_norm(m);
}
