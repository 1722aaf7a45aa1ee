// Scaled dot-product attention over strided float32 arrays.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <string>

#include "bindings/array_args.h"
#include "bindings/csr_weight.h"
#include "bindings/products.h"
#include "drivers/attention_driver.h"

namespace sparsegemm::bindings {

namespace py = pybind11;

namespace {
// A 4-d float32 operand [batch, heads, rows, cols] with contiguous last dimension.
StridedArg<float> head_operand(const py::array& array, const char* name, bool writable) {
  const auto arg = strided_arg<float>(array, name, 4, writable);
  // An empty array holds nothing to read or write (numpy may give it zero strides).
  const bool empty =
      arg.shape[0] == 0 || arg.shape[1] == 0 || arg.shape[2] == 0 || arg.shape[3] == 0;
  if (!empty && arg.shape[3] > 1 && arg.strides[3] != 1)
    throw py::value_error(std::string(name) + " must have a contiguous last dimension");
  return arg;
}

void expect_shape(const StridedArg<float>& arg, const char* name, const int64_t (&shape)[4]) {
  for (int d = 0; d < 4; ++d)
    if (arg.shape[d] != shape[d])
      throw py::value_error(std::string(name) + " has shape (" + std::to_string(arg.shape[0]) +
                            ", " + std::to_string(arg.shape[1]) + ", " +
                            std::to_string(arg.shape[2]) + ", " + std::to_string(arg.shape[3]) +
                            "), expected (" + std::to_string(shape[0]) + ", " +
                            std::to_string(shape[1]) + ", " + std::to_string(shape[2]) + ", " +
                            std::to_string(shape[3]) + ")");
}

AttentionStrides strides_of(const StridedArg<float>& arg) {
  return AttentionStrides{arg.strides[0], arg.strides[1], arg.strides[2]};
}

void attention_into(const py::array& q, const py::array& k, const py::array& v,
                    const py::array& out, const py::object& mask, float scale, int num_threads) {
  const auto q_arg = head_operand(q, "query", false);
  const auto k_arg = head_operand(k, "key", false);
  const auto v_arg = head_operand(v, "value", false);
  const auto out_arg = head_operand(out, "out", true);
  const int64_t batch = q_arg.shape[0], heads = q_arg.shape[1], q_len = q_arg.shape[2],
                dims = q_arg.shape[3], kv_len = k_arg.shape[2];
  expect_shape(k_arg, "key", {batch, heads, kv_len, dims});
  expect_shape(v_arg, "value", {batch, heads, kv_len, dims});
  expect_shape(out_arg, "out", {batch, heads, q_len, dims});
  for (int d = 0; d < 4; ++d)
    if (out_arg.shape[d] > 1 && out_arg.strides[d] == 0 && out.size() > 0)
      throw py::value_error("out must not broadcast (a zero stride on a dimension longer than 1)");
  AttentionArgs args;
  args.q = q_arg.data;
  args.k = k_arg.data;
  args.v = v_arg.data;
  args.out = out_arg.data;
  args.q_strides = strides_of(q_arg);
  args.k_strides = strides_of(k_arg);
  args.v_strides = strides_of(v_arg);
  args.out_strides = strides_of(out_arg);
  if (!mask.is_none()) {
    const auto mask_arg = head_operand(mask.cast<py::array>(), "mask", false);
    expect_shape(mask_arg, "mask", {batch, heads, q_len, kv_len});
    args.mask = mask_arg.data;
    args.mask_strides = strides_of(mask_arg);
  }
  args.batch = batch;
  args.heads = heads;
  args.q_len = q_len;
  args.kv_len = kv_len;
  args.head_dim = dims;
  args.scale = scale;
  py::gil_scoped_release release;
  attention(args, num_threads);
}
void self_attention_into(const CsrMatrix<float>& w_qkv, const py::object& qkv_values,
                         const py::object& qkv_chunk_values, int64_t qkv_chunk_layout,
                         const py::object& qkv_bias, const CsrMatrix<float>& w_out,
                         const py::object& out_values, const py::object& out_chunk_values,
                         int64_t out_chunk_layout, const py::object& out_bias, const py::array& x,
                         int64_t batch, int64_t heads, float scale, const py::array& out,
                         int num_threads) {
  const int64_t embed = w_out.cols();
  if (heads <= 0 || embed % heads != 0)
    throw py::value_error("heads must be positive and divide the attention width " +
                          std::to_string(embed) + ", got " + std::to_string(heads));
  if (w_qkv.rows() != 3 * embed)
    throw py::value_error("the q, k, v projection must have 3 x " + std::to_string(embed) +
                          " rows (the output projection's columns), got " +
                          std::to_string(w_qkv.rows()));
  const auto op = linear_operands<float>(w_out.rows(), w_qkv.cols(), x, out, out_bias, py::none());
  const int64_t rows = op.x.shape[0];
  if (batch < 0 || (batch == 0 ? rows != 0 : rows % batch != 0))
    throw py::value_error("x's " + std::to_string(rows) + " rows are not " + std::to_string(batch) +
                          " sequences of equal length");
  const CsrPairWeight<float> in_proj =
      csr_pair_weight<float>(w_qkv, qkv_values, qkv_chunk_values, qkv_chunk_layout,
                             optional_bias<float>(qkv_bias, w_qkv.rows()));
  const CsrPairWeight<float> out_proj =
      csr_pair_weight<float>(w_out, out_values, out_chunk_values, out_chunk_layout, op.bias);
  py::gil_scoped_release release;
  csr_self_attention(in_proj, out_proj, op.x.data, op.x.strides[0], batch,
                     batch == 0 ? 0 : rows / batch, heads, scale, op.out.data, op.out.strides[0],
                     num_threads);
}
}  // namespace

void register_attention(py::module_& m) {
  m.def("csr_self_attention", &self_attention_into, py::arg("w_qkv"), py::arg("qkv_values"),
        py::arg("qkv_chunk_values"), py::arg("qkv_chunk_layout"), py::arg("qkv_bias"),
        py::arg("w_out"), py::arg("out_values"), py::arg("out_chunk_values"),
        py::arg("out_chunk_layout"), py::arg("out_bias"), py::arg("x"), py::arg("batch"),
        py::arg("heads"), py::arg("scale"), py::arg("out"), py::arg("num_threads"),
        "out = attention(q, k, v) @ w_out.T + out_bias, with q | k | v = x @ w_qkv.T + qkv_bias "
        "split into `heads` heads per sequence: x is (batch * length, in) float32 with "
        "contiguous rows, out (batch * length, w_out.rows). values: None for a matrix's own; "
        "chunk_values: None, or the values in chunk order for the layout chunk_layout names.");
  m.def("attention", &attention_into, py::arg("query"), py::arg("key"), py::arg("value"),
        py::arg("out"), py::arg("mask"), py::arg("scale"), py::arg("num_threads"),
        "out = softmax(query key^T * scale + mask) value over [batch, heads, rows, dims] "
        "float32 arrays (mask additive, [batch, heads, query rows, key rows] or None).");
}

}  // namespace sparsegemm::bindings
