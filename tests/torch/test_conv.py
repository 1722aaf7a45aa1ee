import pytest

torch = pytest.importorskip("torch")
import torch.nn.functional as F

import sparsegemm
from sparsegemm.torch import SparseConv2d
from torch import nn


@pytest.fixture
def make_pair(prune):
    def make(*args, dtype=torch.float32, sparsity=0.8, seed=0, **kwargs):
        torch.manual_seed(seed)
        dense = prune(nn.Conv2d(*args, dtype=dtype, **kwargs), sparsity, seed)
        return dense, SparseConv2d.from_dense(dense)
    return make


CASES = [
    dict(in_channels=8, out_channels=6, kernel_size=1),
    dict(in_channels=8, out_channels=6, kernel_size=1, stride=2),
    dict(in_channels=8, out_channels=6, kernel_size=1, padding=1, bias=False),
    dict(in_channels=5, out_channels=7, kernel_size=3, padding=1),
    dict(in_channels=5, out_channels=7, kernel_size=3, stride=2, padding=1),
    dict(in_channels=5, out_channels=7, kernel_size=(3, 2), stride=(1, 2), padding=(2, 0),
         dilation=(2, 1)),
    dict(in_channels=5, out_channels=7, kernel_size=3, padding="same", dilation=2),
    dict(in_channels=5, out_channels=7, kernel_size=(4, 3), padding="same"),
    dict(in_channels=5, out_channels=7, kernel_size=3, padding="valid", bias=False),
]


# The dense reference warns that it pads a copy for an even kernel with padding='same'.
@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel:UserWarning")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("case", CASES, ids=lambda c: ",".join(f"{k}={v}" for k, v in c.items()))
def test_forward_matches_conv2d(case, dtype, make_pair, tolerance):
    case = dict(case)
    dense, sparse = make_pair(case.pop("in_channels"), case.pop("out_channels"),
                              case.pop("kernel_size"), dtype=dtype, **case)
    for shape in ((2, dense.in_channels, 9, 11), (1, dense.in_channels, 5, 4),
                  (dense.in_channels, 6, 7)):
        x = torch.randn(shape, dtype=dtype)
        torch.testing.assert_close(sparse(x), dense(x), **tolerance(dtype))


@pytest.mark.parametrize("isa", sparsegemm.available_isas())
def test_every_isa(isa, make_pair):
    dense, sparse = make_pair(16, 12, 3, padding=1)
    x = torch.randn(2, 16, 6, 6)
    with sparsegemm.use_isa(isa):
        torch.testing.assert_close(sparse(x), dense(x), rtol=1e-5, atol=1e-5)


def test_1x1_path_multiplies_nchw_without_unfold(monkeypatch, make_pair):
    dense, sparse = make_pair(8, 6, 1)

    def no_unfold(*args, **kwargs):
        raise AssertionError("the 1x1 path must not use im2col")

    monkeypatch.setattr(F, "unfold", no_unfold)
    x = torch.randn(2, 8, 7, 5)
    torch.testing.assert_close(sparse(x), dense(x))


def test_kxk_forward_runs_the_direct_kernel_without_unfold(monkeypatch, make_pair):
    dense, sparse = make_pair(6, 5, 3, padding=1, stride=(1, 2))

    def no_unfold(*args, **kwargs):
        raise AssertionError("the k x k forward must not build an im2col matrix")

    monkeypatch.setattr(F, "unfold", no_unfold)
    x = torch.randn(2, 6, 9, 10)
    with torch.no_grad():
        torch.testing.assert_close(sparse(x), dense(x))


@pytest.mark.parametrize("geometry", [dict(kernel_size=3, padding=1),
                                      dict(kernel_size=(3, 2), stride=(2, 1), padding=(1, 0),
                                           dilation=(1, 2))])
def test_gradcheck_direct_conv_float64(geometry, make_pair):
    geometry = dict(geometry)
    kernel = geometry.pop("kernel_size")
    dense, sparse = make_pair(3, 4, kernel, dtype=torch.float64, sparsity=0.5, **geometry)
    x = torch.randn(2, 3, 5, 6, dtype=torch.float64, requires_grad=True)
    values = sparse.values.detach().clone().requires_grad_()
    bias = sparse.bias.detach().clone().requires_grad_()
    pair = lambda v: list(v) if isinstance(v, tuple) else [v, v]  # noqa: E731

    def fn(x, values, bias):
        # values.clone(): see test_linear.test_gradcheck_float64 (gradcheck edits .data)
        return torch.ops.sparsegemm.csr_conv2d(
            x, sparse.indptr, sparse.indices, values.clone(), sparse.matrix_shape[1], pair(kernel),
            pair(geometry.get("stride", 1)), pair(geometry.get("padding", 0)),
            pair(geometry.get("dilation", 1)), bias)

    assert torch.autograd.gradcheck(fn, (x, values, bias))


@pytest.mark.parametrize("kernel_size", [1, 3])
def test_gradcheck_float64(kernel_size, make_pair):
    dense, sparse = make_pair(3, 4, kernel_size, padding=kernel_size // 2, stride=1,
                              dtype=torch.float64, sparsity=0.5)
    x = torch.randn(2, 3, 4, 3, dtype=torch.float64, requires_grad=True)
    values = sparse.values.detach().clone().requires_grad_()
    bias = sparse.bias.detach().clone().requires_grad_()

    def fn(x, values, bias):
        # values.clone(): see test_linear.test_gradcheck_float64 (gradcheck edits .data)
        columns = (
            F.unfold(x, kernel_size, padding=kernel_size // 2) if kernel_size > 1 else x.flatten(2)
        )
        return torch.ops.sparsegemm.csr_bmm(sparse.indptr, sparse.indices, values.clone(),
                                            sparse.matrix_shape[1], columns, bias)

    assert torch.autograd.gradcheck(fn, (x, values, bias))


def test_gradients_match_masked_dense(make_pair):
    dense, sparse = make_pair(6, 5, 3, stride=2, padding=1, dtype=torch.float64)
    x = torch.randn(2, 6, 7, 8, dtype=torch.float64, requires_grad=True)
    x_dense = x.detach().clone().requires_grad_()
    sparse(x).sin().sum().backward()
    dense(x_dense).sin().sum().backward()
    torch.testing.assert_close(x.grad, x_dense.grad)
    rows = torch.repeat_interleave(torch.arange(5), sparse.indptr.diff())
    torch.testing.assert_close(sparse.values.grad,
                               dense.weight.grad.reshape(5, -1)[rows, sparse.indices.long()])
    torch.testing.assert_close(sparse.bias.grad, dense.bias.grad)


def test_conversion_errors(make_pair):
    with pytest.raises(ValueError, match="groups"):
        SparseConv2d.from_dense(nn.Conv2d(4, 4, 3, groups=2))
    with pytest.raises(ValueError, match="padding_mode"):
        SparseConv2d.from_dense(nn.Conv2d(4, 4, 3, padding=1, padding_mode="reflect"))
    int_conv = nn.Conv2d(4, 4, 3)
    int_conv.weight = nn.Parameter(torch.ones(4, 4, 3, 3, dtype=torch.int32), requires_grad=False)
    with pytest.raises(TypeError, match="float32 or float64"):
        SparseConv2d.from_dense(int_conv)
    _, sparse = make_pair(4, 3, 3)
    with pytest.raises(ValueError, match="input channels"):
        sparse(torch.randn(1, 5, 6, 6))


def test_state_dict_to_dense_and_repr(make_pair):
    dense, sparse = make_pair(5, 7, 3, stride=2, padding=1)
    fresh = SparseConv2d(5, 7, 3, stride=2, padding=1)
    fresh.load_state_dict(sparse.state_dict())
    x = torch.randn(1, 5, 8, 8)
    torch.testing.assert_close(fresh(x), dense(x))
    back = sparse.to_dense()
    torch.testing.assert_close(back.weight, dense.weight)
    assert "format=csr" in repr(sparse) and "kernel_size=(3, 3)" in repr(sparse)


def test_half_convolution_computes_in_float32(make_pair):
    dense, _ = make_pair(4, 3, 3)
    sparse = SparseConv2d.from_dense(dense).half()
    x = torch.randn(1, 4, 6, 6).half()
    y = sparse(x)
    assert y.dtype == torch.float16
    torch.testing.assert_close(y, dense.float()(x.float()).half(), rtol=1e-2, atol=1e-2)
