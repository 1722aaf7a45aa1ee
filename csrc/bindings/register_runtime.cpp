// ISA dispatch and threading controls.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <string>
#include <vector>

#include "core/isa.h"
#include "core/parallel.h"

namespace sparsegemm::bindings {

namespace py = pybind11;

void register_runtime(py::module_& m) {
  m.def("active_isa", [] { return std::string(isa_name(active_isa())); },
        "The instruction set the kernels currently dispatch to.");
  m.def("best_isa", [] { return std::string(isa_name(best_supported_isa())); },
        "The highest instruction set this CPU supports.");
  m.def("supported_isas", [] {
    std::vector<std::string> names;
    for (Isa isa : supported_isas()) names.emplace_back(isa_name(isa));
    return names;
  });
  m.def("set_active_isa", [](const std::string& name) { set_active_isa(parse_isa(name)); },
        py::arg("name"));
  m.def("prefer_hardware_gather", &prefer_hardware_gather,
        "Whether the batch-1 CSR kernel uses vector gathers (else scalar loads).");
  m.def("set_prefer_hardware_gather", &set_prefer_hardware_gather, py::arg("hardware"));
  m.def("default_num_threads", &default_num_threads);
  m.def("openmp_runtime", [] { return std::string(openmp_runtime_name()); });
}

}  // namespace sparsegemm::bindings
