// ISA dispatch, threading controls, the kernel catalogue and the activation epilogue.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <string>
#include <vector>

#include "bindings/array_args.h"
#include "bindings/products.h"
#include "core/isa.h"
#include "core/parallel.h"
#include "drivers/activation_driver.h"
#include "kernels/catalogue.h"

namespace sparsegemm::bindings {

namespace py = pybind11;

namespace {
template <typename T>
void activate_in_place(const py::array& y, Activation act, int num_threads) {
  const auto arg = strided_arg<T>(y, "y", 2, true);
  if (!has_contiguous_rows(arg)) throw py::value_error("y must have contiguous rows");
  py::gil_scoped_release release;
  apply_activation(arg.data, arg.shape[0], arg.shape[1], arg.strides[0], act, num_threads);
}
}  // namespace

void register_runtime(py::module_& m) {
  m.def(
      "active_isa", [] { return std::string(isa_name(active_isa())); },
      "The instruction set the kernels currently dispatch to.");
  m.def(
      "best_isa", [] { return std::string(isa_name(best_supported_isa())); },
      "The highest instruction set this CPU supports.");
  m.def("supported_isas", [] {
    std::vector<std::string> names;
    for (Isa isa : supported_isas()) names.emplace_back(isa_name(isa));
    return names;
  });
  m.def(
      "set_active_isa", [](const std::string& name) { set_active_isa(parse_isa(name)); },
      py::arg("name"));
  m.def(
      "kernel_choice_variables",
      [] {
        py::dict variables;
        for (const KernelChoiceVariable& variable : kernel_choice_variables())
          variables[py::str(variable.name)] = py::tuple(py::cast(variable.values));
        return variables;
      },
      "The environment variables that choose kernel variants, each with the values it "
      "accepts (any other value keeps the CPU's default).");
  m.def("prefer_hardware_gather", &prefer_hardware_gather,
        "Whether the batch-1 CSR kernel uses vector gathers (else scalar loads).");
  m.def("set_prefer_hardware_gather", &set_prefer_hardware_gather, py::arg("hardware"));
  m.def(
      "bitmap_walk", [] { return std::string(bitmap_compress_walk() ? "compress" : "expand"); },
      "How the AVX-512 batch-1 bitmap kernel pairs values with x: 'expand' (the values to "
      "their columns) or 'compress' (x's stored columns to the front).");
  m.def(
      "set_bitmap_walk",
      [](const std::string& walk) {
        if (walk != "expand" && walk != "compress")
          throw py::value_error("bitmap walk must be 'expand' or 'compress', not '" + walk + "'");
        set_bitmap_compress_walk(walk == "compress");
      },
      py::arg("walk"));
  m.def(
      "bitmap_prefetch", [] { return std::string(bitmap_prefetch_name(bitmap_prefetch())); },
      "How the batch-1 bitmap kernel prefetches: 'near' (L1), 'far' (L2) or 'off'.");
  m.def(
      "set_bitmap_prefetch",
      [](const std::string& mode) { set_bitmap_prefetch(parse_bitmap_prefetch(mode)); },
      py::arg("mode"));
  m.def("avx512_extensions_supported", &avx512_extensions_supported,
        "Whether this CPU has the AVX-512 VBMI2 and VNNI extensions.");
  m.def("use_avx512_extensions", &use_avx512_extensions,
        "Whether the int8 and bfloat16 bitmap kernels use VBMI2 and VNNI.");
  m.def("set_use_avx512_extensions", &set_use_avx512_extensions, py::arg("use"));
  m.def("amx_supported", &amx_supported,
        "Whether this CPU and operating system offer AMX int8 tiles.");
  m.def("use_amx", &use_amx, "Whether the int8 bitmap kernels use AMX for batches above 4.");
  m.def("set_use_amx", &set_use_amx, py::arg("use"));
  m.def("use_int8_indexed_walk", &use_int8_indexed_walk,
        "Whether the int8 VNNI kernels walk very sparse rows by their stored columns.");
  m.def("set_use_int8_indexed_walk", &set_use_int8_indexed_walk, py::arg("use"));
  m.def("huge_pages_enabled", &huge_pages_enabled,
        "Whether matrices place their large arrays on transparent huge pages "
        "(SPARSEGEMM_HUGE_PAGES; read once).");
  m.def(
      "large_buffer",
      [](int64_t bytes) {
        if (bytes < 0) throw py::value_error("large_buffer: bytes must be >= 0");
        return new_large_array<uint8_t>(bytes);
      },
      py::arg("bytes"),
      "A writable uint8 array of `bytes` from the matrices' allocator: on transparent huge "
      "pages from 2 MiB while huge_pages_enabled() (for torch-held weights the kernels stream).");
  m.def("avx512_bf16_supported", &avx512_bf16_supported,
        "Whether this CPU also has AVX512-BF16 (bfloat16 dot products for bfloat16 inputs).");
  m.def("default_num_threads", &default_num_threads);
  m.def(
      "kernel_catalogue",
      [] {
        const KernelCatalogue& c = kernel_catalogue();
        py::dict families;
        for (const KernelFamily& f : c.families) families[f.name] = f.description;
        py::list isas;
        for (Isa isa : c.compiled_isas) isas.append(isa_name(isa));
        py::list shapes;
        for (const BlockShape& s : c.bsr_block_shapes)
          shapes.append(py::make_tuple(s.rows, s.cols));
        py::dict limits;
        limits["max_block_edge"] = c.max_block_edge;
        limits["max_compact_cols"] = c.max_compact_cols;
        limits["max_dimension"] = c.max_dimension;
        limits["gather_max_vectors"] = c.gather_max_vectors;
        py::dict out;
        out["families"] = families;
        out["isas"] = isas;
        out["bsr_block_shapes"] = shapes;
        out["limits"] = limits;
        return out;
      },
      "What this build contains: kernel families, compiled ISA levels, the BSR block shapes "
      "with specialised kernels and the format limits.");
  m.def("openmp_runtime", [] { return std::string(openmp_runtime_name()); });
  m.def(
      "cache_sizes",
      [] {
        py::dict out;
        out["l1d"] = l1_data_cache_bytes();
        out["l2"] = l2_cache_bytes();
        return out;
      },
      "Per-core L1 data and L2 cache sizes in bytes as the system reports them (0: not "
      "reported); the CSR panel kernels size their panels and column chunks by them.");
  m.def(
      "apply_activation",
      [](const py::array& y, const py::object& activation, int num_threads) {
        const Activation act = parse_activation(activation);
        if (py::isinstance<py::array_t<double>>(y))
          activate_in_place<double>(y, act, num_threads);
        else
          activate_in_place<float>(y, act, num_threads);  // explains a wrong dtype
      },
      py::arg("y"), py::arg("activation"), py::arg("num_threads") = 0,
      "y = act(y) in place, y 2-D float32 or float64 with contiguous rows; act as in the "
      "linear products' activation argument.");
}

}  // namespace sparsegemm::bindings
