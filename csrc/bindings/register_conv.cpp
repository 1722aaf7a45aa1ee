// Direct sparse convolution.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <array>
#include <string>

#include "bindings/array_args.h"
#include "bindings/products.h"
#include "core/csr_matrix.h"
#include "drivers/conv_driver.h"

namespace sparsegemm::bindings {

namespace py = pybind11;

namespace {

using Pair = std::array<int64_t, 2>;

template <typename T>
void register_conv_dtype(py::module_& m) {
  m.def(
      "csr_conv2d",
      [](const CsrMatrix<T>& w, const py::array& x, const py::array& out, const Pair& kernel_size,
         const Pair& stride, const Pair& padding, const Pair& dilation, const py::object& bias,
         int num_threads, const py::object& values, const py::object& activation) {
        const Activation act = parse_activation(activation);
        const auto xarg = strided_arg<T>(x, "x", 4, false);
        const auto oarg = strided_arg<T>(out, "out", 4, true);
        Conv2dGeometry g;
        g.in_channels = xarg.shape[1];
        g.in_h = xarg.shape[2];
        g.in_w = xarg.shape[3];
        g.kernel_h = kernel_size[0];
        g.kernel_w = kernel_size[1];
        g.stride_h = stride[0];
        g.stride_w = stride[1];
        g.pad_h = padding[0];
        g.pad_w = padding[1];
        g.dilation_h = dilation[0];
        g.dilation_w = dilation[1];
        validate_conv2d_geometry(g, w.cols());  // std::invalid_argument -> ValueError
        // (numpy gives empty arrays zero strides; nothing of them is read or written)
        if (x.size() > 0 && xarg.shape[3] > 1 && xarg.strides[3] != 1)
          throw py::value_error("x must have contiguous rows (last dimension)");
        const int64_t expected[4] = {xarg.shape[0], w.rows(), g.out_h(), g.out_w()};
        for (int d = 0; d < 4; ++d)
          if (oarg.shape[d] != expected[d])
            throw py::value_error("out must have shape (" + std::to_string(expected[0]) + ", " +
                                  std::to_string(expected[1]) + ", " + std::to_string(expected[2]) +
                                  ", " + std::to_string(expected[3]) + ")");
        const int64_t contiguous[4] = {expected[1] * expected[2] * expected[3],
                                       expected[2] * expected[3], expected[3], 1};
        for (int d = 0; d < 4; ++d)
          if (out.size() > 0 && expected[d] > 1 && oarg.strides[d] != contiguous[d])
            throw py::value_error("out must be C-contiguous");
        const T* bias_ptr = optional_bias<T>(bias, w.rows());
        const T* values_ptr = optional_values<T>(values, w);
        py::gil_scoped_release release;
        csr_conv2d(w, g, xarg.data, xarg.shape[0], xarg.strides[0], xarg.strides[1],
                   xarg.strides[2], bias_ptr, oarg.data, num_threads, values_ptr, act);
      },
      py::arg("w"), py::arg("x"), py::arg("out"), py::arg("kernel_size"), py::arg("stride"),
      py::arg("padding"), py::arg("dilation"), py::arg("bias") = py::none(),
      py::arg("num_threads") = 0, py::arg("values") = py::none(),
      py::arg("activation") = py::none(),
      "out = conv2d(x, w) (+ bias) with zero padding; w is Cout x (Cin*KH*KW), x (N, Cin, H, W) "
      "with "
      "contiguous rows, out (N, Cout, OH, OW) C-contiguous and not overlapping x. `values` (nnz) "
      "replaces w's values; `activation` (None, 'relu', 'gelu', 'gelu_tanh') applies to out.");
}

}  // namespace

void register_conv(py::module_& m) {
  register_conv_dtype<float>(m);
  register_conv_dtype<double>(m);
}

}  // namespace sparsegemm::bindings
