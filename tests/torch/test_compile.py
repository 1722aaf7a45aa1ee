import pytest

torch = pytest.importorskip("torch")
from sparsegemm.torch import SparseConv2d, SparseLinear
from sparsegemm.torch import ops as sparse_ops
from torch import nn


class Net(nn.Module):
    def __init__(self, prune):
        super().__init__()
        self.conv = SparseConv2d.from_dense(prune(nn.Conv2d(3, 8, 3, padding=1), 0.7))
        self.pointwise = SparseConv2d.from_dense(prune(nn.Conv2d(8, 4, 1), 0.7))
        self.fc = SparseLinear.from_dense(prune(nn.Linear(4 * 6 * 6, 10), 0.8))

    def forward(self, x):
        y = torch.relu(self.pointwise(torch.relu(self.conv(x))))
        return self.fc(y.flatten(1))


@pytest.fixture
def net(prune):
    torch.manual_seed(0)
    return Net(prune)


def test_compile_fullgraph_forward_and_backward(net):
    torch._dynamo.reset()
    x = torch.randn(2, 3, 6, 6)
    expected = net(x)
    compiled = torch.compile(net, fullgraph=True, backend="aot_eager")
    out = compiled(x)
    torch.testing.assert_close(out, expected)
    out.sum().backward()
    grads = [p.grad.clone() for p in net.parameters()]
    net.zero_grad()
    net(x).sum().backward()
    for compiled_grad, p in zip(grads, net.parameters()):
        torch.testing.assert_close(compiled_grad, p.grad)


def test_dynamo_finds_no_graph_breaks(net):
    torch._dynamo.reset()
    explanation = torch._dynamo.explain(net)(torch.randn(2, 3, 6, 6))
    assert explanation.graph_break_count == 0
    assert explanation.graph_count == 1


@pytest.mark.slow  # about 30 s: inductor compiles C++
# inductor imports torch.utils.mkldnn, which warns about its own use of torch.jit.
@pytest.mark.filterwarnings("ignore:`torch.jit.script_method` is deprecated:DeprecationWarning")
def test_compile_inductor_eval(net):
    torch._dynamo.reset()
    net.eval()
    x = torch.randn(1, 3, 6, 6)
    with torch.no_grad():
        torch.testing.assert_close(torch.compile(net, fullgraph=True)(x), net(x))


def test_export_and_reload(net, tmp_path):
    x = torch.randn(2, 3, 6, 6)
    program = torch.export.export(net.eval(), (x,))
    names = {str(node.target) for node in program.graph.nodes if node.op == "call_function"}
    assert {"sparsegemm.csr_linear.default", "sparsegemm.csr_bmm.default",
            "sparsegemm.csr_conv2d.default"} <= names
    torch.testing.assert_close(program.module()(x), net(x))
    path = tmp_path / "net.pt2"
    torch.export.save(program, path)
    torch.testing.assert_close(torch.export.load(path).module()(x), net(x))


@pytest.mark.parametrize("op, make_args", [
    (sparse_ops.csr_linear, lambda s, x: (x, s.indptr, s.indices, s.values, 6, s.bias)),
    # backward op: no autograd of its own (no double backward), so no grad inputs
    (sparse_ops.csr_linear_t, lambda s, x: (torch.randn(3, 5, dtype=torch.float64),
                                            s.indptr, s.indices, s.values.detach(), 6)),
])
def test_opcheck_linear_ops(op, make_args, prune):
    sparse = SparseLinear.from_dense(prune(nn.Linear(6, 5, dtype=torch.float64), 0.5))
    x = torch.randn(3, 6, dtype=torch.float64, requires_grad=True)
    torch.library.opcheck(op, make_args(sparse, x),
                          test_utils=("test_schema", "test_faketensor",
                                      "test_autograd_registration", "test_aot_dispatch_dynamic"))


def test_opcheck_bmm_ops(prune):
    sparse = SparseConv2d.from_dense(prune(nn.Conv2d(4, 5, 1, dtype=torch.float64), 0.5))
    b = torch.randn(2, 4, 7, dtype=torch.float64, requires_grad=True)
    utils = ("test_schema", "test_faketensor", "test_autograd_registration",
             "test_aot_dispatch_dynamic")
    torch.library.opcheck(sparse_ops.csr_bmm, (sparse.indptr, sparse.indices, sparse.values, 4, b,
                                               sparse.bias), test_utils=utils)
    torch.library.opcheck(sparse_ops.csr_sampled_dot,
                          (sparse.indptr, sparse.indices, torch.randn(2, 5, 7, dtype=torch.float64),
                           torch.randn(2, 4, 7, dtype=torch.float64)), test_utils=utils)


def test_opcheck_conv2d_op(prune):
    sparse = SparseConv2d.from_dense(prune(nn.Conv2d(3, 4, 3, dtype=torch.float64), 0.5))
    x = torch.randn(2, 3, 6, 7, dtype=torch.float64, requires_grad=True)
    utils = ("test_schema", "test_faketensor", "test_autograd_registration",
             "test_aot_dispatch_dynamic")
    torch.library.opcheck(sparse_ops.csr_conv2d,
                          (x, sparse.indptr, sparse.indices, sparse.values, 27,
                           [3, 3], [1, 2], [1, 0], [1, 1], sparse.bias),
                          test_utils=utils)
