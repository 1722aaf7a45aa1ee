import copy
import io

import numpy as np
import pytest

torch = pytest.importorskip("torch")
import torch.nn.functional as F
from torch.nn.utils import prune as torch_prune

import sparsegemm
from sparsegemm.torch import SparseLinear
from torch import nn


@pytest.fixture
def make_pair(prune):
    def make(in_features=37, out_features=29, bias=True, dtype=torch.float32, sparsity=0.8, seed=0):
        torch.manual_seed(seed)
        dense = prune(nn.Linear(in_features, out_features, bias=bias, dtype=dtype), sparsity, seed)
        return dense, SparseLinear.from_dense(dense, format="csr")
    return make


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("shape",
                         [(1, 37), (3, 37), (5, 37), (17, 37), (2, 9, 37), (2, 3, 4, 37), (37,)])
def test_forward_matches_dense(dtype, bias, shape, make_pair, tolerance):
    dense, sparse = make_pair(bias=bias, dtype=dtype)
    x = torch.randn(shape, dtype=dtype)
    torch.testing.assert_close(sparse(x), F.linear(x, dense.weight, dense.bias), **tolerance(dtype))


@pytest.mark.parametrize("isa", sparsegemm.available_isas())
@pytest.mark.parametrize("batch", [1, 4, 5, 33])
def test_every_isa(isa, batch, make_pair):
    dense, sparse = make_pair(in_features=70, out_features=41)
    x = torch.randn(batch, 70)
    with sparsegemm.use_isa(isa):
        out = sparse(x)
        out.sum().backward()
    torch.testing.assert_close(out, dense(x), rtol=1e-5, atol=1e-5)


def test_non_contiguous_input(make_pair):
    dense, sparse = make_pair()
    x = torch.randn(37, 6).t()
    torch.testing.assert_close(sparse(x), dense(x), rtol=1e-5, atol=1e-5)


def test_all_zero_and_empty_rows():
    dense = nn.Linear(8, 5)
    with torch.no_grad():
        dense.weight.zero_()
        dense.weight[2, 3] = 1.5
    sparse = SparseLinear.from_dense(dense)
    assert sparse.nnz == 1
    x = torch.randn(4, 8)
    torch.testing.assert_close(sparse(x), dense(x))


def test_bad_module_dtype(make_pair):
    with pytest.raises(TypeError, match="float32 or float64"):
        SparseLinear.from_dense(_int_linear())
    _, sparse = make_pair()
    with pytest.raises(TypeError, match="complex64"), pytest.warns(UserWarning, match="Complex"):
        sparse.to(torch.complex64)  # refused by .to(), not at the next forward
    assert sparse.values.dtype == torch.float32


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("format", ["csr", "bsr"])
def test_half_and_bfloat16_compute_in_float32(dtype, format, make_pair):
    dense, _ = make_pair()
    sparse = SparseLinear.from_dense(dense, format=format).to(dtype)
    assert sparse.values.dtype == dtype and sparse.bias.dtype == dtype
    x = torch.randn(5, 37)
    y = sparse(x.to(dtype))
    assert y.dtype == dtype
    expected = nn.functional.linear(x.to(dtype).float(), dense.weight.to(dtype).float(),
                                    dense.bias.to(dtype).float())
    torch.testing.assert_close(y.float(), expected.to(dtype).float(), rtol=1e-2, atol=1e-2)
    y.sum().backward()
    assert sparse.values.grad.dtype == dtype
    with torch.no_grad():  # the inference path too
        torch.testing.assert_close(sparse(x.to(dtype)), y.detach())
    assert SparseLinear.from_dense(dense.to(dtype)).values.dtype == dtype


def test_autocast_runs_the_sparse_product_in_float32(make_pair):
    dense, sparse = make_pair()
    x = torch.randn(4, 37)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = sparse(x.to(torch.bfloat16))  # as an earlier autocast op hands it over
        assert dense(x).dtype == torch.bfloat16  # what F.linear does; ours is float32
    assert y.dtype == torch.float32
    torch.testing.assert_close(y, sparse(x.to(torch.bfloat16).float()))


def test_a_meta_input_to_a_cpu_module_is_refused_as_by_linear(make_pair):
    dense, sparse = make_pair()
    x = torch.empty(2, 37, device="meta")
    with pytest.raises((RuntimeError, ValueError)):
        dense(x)
    with pytest.raises(ValueError, match="meta"):
        sparse(x)


def _int_linear():
    linear = nn.Linear(4, 3)
    linear.weight = nn.Parameter(torch.ones(3, 4, dtype=torch.int32), requires_grad=False)
    return linear


def test_input_dtype_mismatch(make_pair):
    _, sparse = make_pair()
    with pytest.raises(TypeError, match="must match"):
        sparse(torch.randn(2, 37, dtype=torch.float64))
    with pytest.raises(TypeError, match="must match"):
        sparse(torch.ones(2, 37, dtype=torch.int64))


def test_shape_error(make_pair):
    _, sparse = make_pair()
    with pytest.raises(ValueError, match="shape"):
        sparse(torch.randn(2, 36))


def test_from_torch_prune():
    torch.manual_seed(1)
    dense = nn.Linear(30, 20)
    torch_prune.l1_unstructured(dense, "weight", amount=0.75)
    sparse = SparseLinear.from_dense(dense)
    assert sparse.nnz == int(dense.weight_mask.sum())
    x = torch.randn(6, 30)
    torch.testing.assert_close(sparse(x), dense(x))
    torch.testing.assert_close(sparse.to_dense().weight, dense.weight_orig * dense.weight_mask)


def test_state_dict_round_trip_into_fresh_module(make_pair):
    dense, sparse = make_pair()
    fresh = SparseLinear(37, 29)
    assert fresh.nnz == 0
    fresh.load_state_dict(sparse.state_dict())
    x = torch.randn(4, 37)
    torch.testing.assert_close(fresh(x), dense(x), rtol=1e-5, atol=1e-5)
    assert fresh.nnz == sparse.nnz


def test_load_state_dict_updates_the_kernel_handle(make_pair):
    _, a = make_pair(seed=0)
    _, b = make_pair(seed=0)
    x = torch.randn(3, 37)
    b(x)  # build b's handle before its values change
    with torch.no_grad():
        a.values.mul_(2)
    b.load_state_dict(a.state_dict())
    torch.testing.assert_close(b(x), a(x))


def test_invalid_state_dict_is_rejected(make_pair):
    _, sparse = make_pair()
    state = sparse.state_dict()
    state["indices"] = state["indices"].clone()
    state["indices"][0] = 1000
    with pytest.raises(RuntimeError, match="invalid sparse pattern"):
        SparseLinear(37, 29).load_state_dict(state)


def test_torch_save_load_deepcopy_and_to(make_pair):
    dense, sparse = make_pair()
    x = torch.randn(4, 37)
    buffer = io.BytesIO()
    torch.save(sparse, buffer)
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=False)
    torch.testing.assert_close(loaded(x), dense(x), rtol=1e-5, atol=1e-5)
    clone = copy.deepcopy(sparse)
    with torch.no_grad():
        clone.values.zero_()
    torch.testing.assert_close(sparse(x), dense(x), rtol=1e-5, atol=1e-5)  # original unaffected
    torch.testing.assert_close(clone(x), dense.bias.expand(4, -1))
    double = copy.deepcopy(sparse).to(torch.float64)
    assert double.values.dtype == torch.float64 and double.indices.dtype == torch.int32
    torch.testing.assert_close(double(x.double()), dense.double()(x.double()))


def test_train_eval_repr_and_to_dense(make_pair):
    dense, sparse = make_pair()
    assert sparse.eval() is sparse and not sparse.training
    assert sparse.train().training
    text = repr(sparse)
    assert "format=csr" in text and "sparsity=" in text and "in_features=37" in text
    back = sparse.to_dense()
    assert isinstance(back, nn.Linear)
    torch.testing.assert_close(back.weight, dense.weight)
    torch.testing.assert_close(back.bias, dense.bias)


def test_format_choices(make_pair, planner_times):
    dense, _ = make_pair()
    with pytest.raises(ValueError, match="format"):
        SparseLinear.from_dense(dense, format="coo")
    with pytest.raises(ValueError, match="blocksize applies to format='bsr'"):
        SparseLinear.from_dense(dense, format="csr", blocksize=(4, 1))
    timer = planner_times()
    assert SparseLinear.from_dense(dense).format == "csr"  # the default: CSR, not timed
    assert timer.timed == []


@pytest.mark.parametrize("times, expected", [
    ({"csr": 0.5}, ("csr", None)),
    ({"csr": 0.8, "bsr8x1": 0.3}, ("bsr", (8, 1))),
    # the planner keeps it dense; from_dense still returns the fastest sparse format timed
    ({"dense": 1.0, "csr": 2.0, "bsr4x1": 3.0, "bsr8x1": 3.0, "bsr16x1": 3.0, "bsr4x4": 1.5},
     ("bsr", (4, 4))),
])
def test_from_dense_auto_follows_the_planner(make_pair, planner_times, times, expected):
    dense, _ = make_pair(sparsity=0.95)
    timer = planner_times(**times)
    sparse = SparseLinear.from_dense(dense, format="auto", batch_hint=16)
    assert timer.timed, "format='auto' must run the planner"
    # against torch's own product, what the module would run if left dense; numpy's
    # would also leave OpenBLAS threads spinning over the sparse contenders
    assert "dense_torch" in timer.timed[0] and "dense_numpy" not in timer.timed[0]
    assert (sparse.format, sparse.blocksize) == expected
    x = torch.randn(16, 37)
    torch.testing.assert_close(sparse(x), dense(x), rtol=1e-5, atol=1e-5)


def test_gradcheck_float64(make_pair):
    dense, sparse = make_pair(in_features=7, out_features=5, dtype=torch.float64, sparsity=0.5)
    x = torch.randn(3, 2, 7, dtype=torch.float64, requires_grad=True)
    values = sparse.values.detach().clone().requires_grad_()
    bias = sparse.bias.detach().clone().requires_grad_()

    def fn(x, values, bias):
        # gradcheck perturbs values in place through .data: the kernels must read them live.
        return torch.ops.sparsegemm.csr_linear(x, sparse.indptr, sparse.indices, values, 7, bias)

    assert torch.autograd.gradcheck(fn, (x, values, bias))


def test_gradients_match_masked_dense(make_pair):
    dense, sparse = make_pair(dtype=torch.float64)
    x = torch.randn(6, 37, dtype=torch.float64, requires_grad=True)
    x_dense = x.detach().clone().requires_grad_()
    sparse(x).pow(2).sum().backward()
    dense(x_dense).pow(2).sum().backward()
    torch.testing.assert_close(x.grad, x_dense.grad)
    rows = torch.repeat_interleave(torch.arange(29), sparse.indptr.diff())
    torch.testing.assert_close(sparse.values.grad, dense.weight.grad[rows, sparse.indices.long()])
    torch.testing.assert_close(sparse.bias.grad, dense.bias.grad)


def test_sgd_steps_equal_masked_dense():
    torch.manual_seed(3)
    dense_model = nn.Sequential(nn.Linear(20, 30), nn.ReLU(), nn.Linear(30, 10)).double()
    for layer in (dense_model[0], dense_model[2]):
        torch_prune.random_unstructured(layer, "weight", amount=0.7)
    sparse_model = nn.Sequential(SparseLinear.from_dense(dense_model[0]), nn.ReLU(),
                                 SparseLinear.from_dense(dense_model[2]))
    dense_opt = torch.optim.SGD(dense_model.parameters(), lr=0.1, momentum=0.9)
    sparse_opt = torch.optim.SGD(sparse_model.parameters(), lr=0.1, momentum=0.9)
    for _ in range(4):
        x = torch.randn(8, 20, dtype=torch.float64)
        target = torch.randn(8, 10, dtype=torch.float64)
        for model, opt in ((dense_model, dense_opt), (sparse_model, sparse_opt)):
            opt.zero_grad()
            F.mse_loss(model(x), target).backward()
            opt.step()
    x = torch.randn(5, 20, dtype=torch.float64)
    torch.testing.assert_close(sparse_model(x), dense_model(x))
    for sparse_layer, dense_layer in ((sparse_model[0], dense_model[0]),
                                      (sparse_model[2], dense_model[2])):
        torch.testing.assert_close(sparse_layer.dense_weight(), dense_layer.weight)


def test_pattern_is_built_once_and_values_are_passed_live(monkeypatch, make_pair):
    from sparsegemm import _core
    from sparsegemm.torch import _cache

    _, sparse = make_pair()
    x = torch.randn(2, 37)
    sparse(x)
    built, passed = [], []
    original_init = _cache.CSRMatrix.__init__
    monkeypatch.setattr(_cache.CSRMatrix, "__init__",
                        lambda self, *a, **k: built.append(1) or original_init(self, *a, **k))
    original_linear = _core.csr_linear

    def spy(handle, x, out, bias, threads, values, activation=None):
        passed.append(values)
        return original_linear(handle, x, out, bias, threads, values, activation)

    monkeypatch.setattr(_core, "csr_linear", spy)
    with torch.no_grad():
        for _ in range(3):
            sparse(x)
        sparse.values.add_(1.0)
        sparse(x)
    assert built == []  # neither calls nor value edits rebuild the pattern
    assert len(passed) == 4
    # zero copy: the kernel reads the parameter's own memory
    assert all(np.shares_memory(v, sparse.values.detach().numpy()) for v in passed)


def test_data_edits_are_seen_without_clear_cache(make_pair):
    dense, sparse = make_pair()
    x = torch.randn(2, 37)
    sparse(x)
    sparse.values.data.zero_()  # bypasses the version counter: still seen
    torch.testing.assert_close(sparse(x), dense.bias.expand(2, -1))
    sparse.values.data = torch.ones_like(sparse.values)  # a new tensor altogether
    expected = x @ (sparse.dense_weight().t()) + dense.bias
    torch.testing.assert_close(sparse(x), expected)


def test_backward_sees_data_edits(make_pair):
    _, sparse = make_pair(dtype=torch.float64)
    x = torch.randn(3, 37, dtype=torch.float64, requires_grad=True)
    sparse(x).sum().backward()
    sparse.values.data.mul_(-2.0)
    x2 = x.detach().clone().requires_grad_()
    sparse(x2).sum().backward()
    torch.testing.assert_close(x2.grad, -2.0 * x.grad)
