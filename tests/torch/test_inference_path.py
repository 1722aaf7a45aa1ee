"""The inference fast path of SparseLinear and SparseConv2d: the kernel called directly,
without the custom op, when no gradient is recorded. It must give the op's exact output and
see every weight edit."""

import copy
import pickle

import pytest

torch = pytest.importorskip("torch")
from sparsegemm.torch import SparseConv2d, SparseLinear, clear_cache, freeze, sparsify
from sparsegemm.torch import modules as sparse_modules
from torch import nn


@pytest.fixture
def direct_calls(monkeypatch):
    """Counts calls of the direct path."""
    calls = []
    original = sparse_modules._ops.linear_direct

    def counting(*args):
        calls.append(args[0].shape)
        return original(*args)

    monkeypatch.setattr(sparse_modules._ops, "linear_direct", counting)
    return calls


def _module(prune, format="csr", blocksize=None, bias=True, dtype=torch.float32):
    torch.manual_seed(0)
    dense = prune(nn.Linear(37, 29, bias=bias, dtype=dtype), 0.8)
    return dense, SparseLinear.from_dense(dense, format=format, blocksize=blocksize)


def _through_op(module, x):
    """The custom op's result (grad mode on and values requiring grad force it)."""
    with torch.enable_grad():
        return module(x).detach()


@pytest.mark.parametrize("format, blocksize", [("csr", None), ("bsr", (4, 1)), ("bsr", (4, 4)),
                                               ("bitmap", None)])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("shape", [(37,), (1, 37), (5, 37), (2, 3, 37)])
@pytest.mark.parametrize("context", [torch.no_grad, torch.inference_mode])
def test_direct_path_equals_custom_op(prune, direct_calls, format, blocksize, bias, shape, context):
    dense, sparse = _module(prune, format, blocksize, bias)
    x = torch.randn(shape)
    expected = _through_op(sparse, x)
    assert not direct_calls
    with context():
        out = sparse(x)
    assert len(direct_calls) == 1
    assert torch.equal(out, expected)
    torch.testing.assert_close(out, dense(x).detach(), rtol=1e-5, atol=1e-5)


def test_non_contiguous_input_and_float64(prune, direct_calls):
    _, sparse = _module(prune, dtype=torch.float64)
    x = torch.randn(37, 6, dtype=torch.float64).t()
    with torch.no_grad():
        out = sparse(x)
    assert direct_calls and torch.equal(out, _through_op(sparse, x))


def test_grad_mode_takes_the_op(prune, direct_calls):
    _, sparse = _module(prune)
    sparse(torch.randn(3, 37)).sum().backward()
    assert not direct_calls and sparse.values.grad is not None
    # Nothing requires grad: no graph to record, so the direct path is fine.
    sparse.requires_grad_(False)
    sparse(torch.randn(3, 37))
    assert len(direct_calls) == 1


def test_wrong_input_raises_the_op_error(prune, direct_calls):
    _, sparse = _module(prune)
    with torch.no_grad():
        with pytest.raises(ValueError, match="shape mismatch"):
            sparse(torch.randn(3, 36))
        with pytest.raises(TypeError, match="dtype"):
            sparse(torch.randn(3, 37, dtype=torch.float64))
    assert not direct_calls


@pytest.mark.parametrize("format", ["csr", "bitmap"])
def test_sees_in_place_edits_and_replaced_tensors(prune, format):
    dense, sparse = _module(prune, format)
    x = torch.randn(4, 37)
    with torch.no_grad():
        sparse(x)  # fills the module's shortcut
        sparse.values.mul_(2)
        sparse.bias.add_(1)
        torch.testing.assert_close(sparse(x), 2 * (dense(x) - dense.bias) + dense.bias + 1)
        sparse.values.data = torch.zeros_like(sparse.values)
        torch.testing.assert_close(sparse(x), (dense.bias + 1).expand(4, -1))
        other = SparseLinear.from_dense(prune(nn.Linear(37, 29), 0.5, seed=3), format=format)
        sparse.load_state_dict(other.state_dict())
        assert torch.equal(sparse(x), other(x))
        sparse.double()
        assert torch.equal(sparse(x.double()), other.double()(x.double()))


def _chunked_module(prune):
    """A CSR layer whose kernel runs in column chunks where the CPU has SIMD (600 columns)."""
    torch.manual_seed(0)
    dense = prune(nn.Linear(600, 64), 0.5)
    return dense, SparseLinear.from_dense(dense)


def test_values_in_chunk_order_follow_in_place_edits(prune):
    # The inference path reads a copy of the values in the chunked kernel's order;
    # every edit through the tensor must reach it.
    dense, sparse = _chunked_module(prune)
    x = torch.randn(64, 600)
    with torch.no_grad():
        torch.testing.assert_close(sparse(x), dense(x))
        chunk_ordered = sparse._kernel_operands.operands[3]
        assert (chunk_ordered is not None) == (sparse_modules._ops._core.active_isa() != "scalar")
        sparse.values.mul_(2)
        torch.testing.assert_close(sparse(x), 2 * (dense(x) - dense.bias) + dense.bias)
        other = SparseLinear.from_dense(prune(nn.Linear(600, 64), 0.5, seed=3))
        sparse.load_state_dict(other.state_dict())
        torch.testing.assert_close(sparse(x), other(x))
        # An optimizer step edits in place too.
        sparse.values.requires_grad_(True)
        optimizer = torch.optim.SGD(sparse.parameters(), lr=0.1)
        with torch.enable_grad():
            sparse(x).sum().backward()
        optimizer.step()
        expected = torch.nn.functional.linear(x, sparse.dense_weight(), sparse.bias)
        torch.testing.assert_close(sparse(x), expected)


def test_inference_tensor_values_are_read_in_csr_order(prune):
    # Inference tensors keep no version counter: no copy is kept, values are read live.
    dense, sparse = _chunked_module(prune)
    x = torch.randn(64, 600)
    with torch.inference_mode():
        sparse.values = nn.Parameter(sparse.values.detach().clone(), requires_grad=False)
        assert sparse.values.is_inference()
        torch.testing.assert_close(sparse(x), dense(x))
        assert sparse._kernel_operands.operands[3] is None
        sparse.values.mul_(2)
        torch.testing.assert_close(sparse(x), 2 * (dense(x) - dense.bias) + dense.bias)


def test_pattern_edit_after_clear_cache(prune):
    _, sparse = _module(prune)
    x = torch.randn(2, 37)
    with torch.no_grad():
        sparse(x)
        # Each row's entries moved to its first columns; .data bypasses the version counter.
        counts = sparse.indptr.diff()
        starts = torch.repeat_interleave(sparse.indptr[:-1], counts)
        sparse.indices.data = (torch.arange(sparse.nnz) - starts).to(torch.int32)
        clear_cache()
        torch.testing.assert_close(sparse(x), sparse.to_dense()(x))


@pytest.mark.parametrize("format", ["csr", "bitmap"])
def test_copies_and_pickles_start_fresh(prune, format):
    _, sparse = _module(prune, format)
    x = torch.randn(2, 37)
    with torch.no_grad():
        expected = sparse(x)
        for clone in (copy.deepcopy(sparse), pickle.loads(pickle.dumps(sparse))):
            assert torch.equal(clone(x), expected)
            clone.values.zero_()
        assert torch.equal(sparse(x), expected)


@pytest.mark.parametrize("format", ["csr", "bitmap"])
def test_modules_pickled_before_the_inference_path_still_load(prune, format):
    _, sparse = _module(prune, format)
    state = sparse.__getstate__()
    state = {key: value for key, value in state.items()
             if key not in ("_kernel_operands", "_matrix_shape")}
    old = SparseLinear.__new__(SparseLinear)
    old.__setstate__(state)
    x = torch.randn(2, 37)
    with torch.no_grad():
        assert torch.equal(old(x), sparse(x))


@pytest.mark.parametrize("build", ["csr", "bsr", "bitmap", "int8", "conv"])
def test_modules_built_inside_inference_mode_run_there_and_train_after(prune, build):
    """Converting a model inside torch.inference_mode made inference-tensor storage:
    the first forward crashed (no version counter for the operand cache) and nothing
    could be fine-tuned later."""
    from sparsegemm.torch import SparseConv2d
    from sparsegemm.torch.quantized import SparseLinearInt8

    torch.manual_seed(0)
    if build == "conv":
        dense, x = prune(nn.Conv2d(4, 8, 3), 0.8), torch.randn(1, 4, 8, 8)
    else:
        dense, x = prune(nn.Linear(64, 16), 0.8), torch.randn(3, 64)
    with torch.inference_mode():
        if build == "conv":
            module = SparseConv2d.from_dense(dense)
        elif build == "int8":
            module = SparseLinearInt8.from_dense(dense)
        else:
            module = SparseLinear.from_dense(dense, format=build)
        out = module(x)
    expected = dense(x).detach()
    tolerance = 0.05 if build == "int8" else 1e-5
    torch.testing.assert_close(out, expected, rtol=tolerance, atol=tolerance)
    assert not any(t.is_inference() for t in module.state_dict().values())
    if build != "int8":  # int8 weights are frozen buffers
        module(x).sum().backward()


@pytest.fixture
def direct_conv_calls(monkeypatch):
    """Counts calls of the convolutions' direct paths (1x1 products and k x k kernels)."""
    calls = []
    for name in ("bmm_direct", "conv2d_direct"):
        original = getattr(sparse_modules._ops, name)

        def counting(*args, original=original, name=name):
            calls.append(name)
            return original(*args)

        monkeypatch.setattr(sparse_modules._ops, name, counting)
    return calls


CONV_GEOMETRIES = [
    dict(kernel_size=1),
    dict(kernel_size=1, stride=2),
    dict(kernel_size=3, padding=1),
    dict(kernel_size=(3, 2), stride=(2, 1), padding=(1, 0), dilation=(1, 2)),
    dict(kernel_size=3, padding="same"),
]


@pytest.mark.parametrize("geometry", CONV_GEOMETRIES)
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("context", [torch.no_grad, torch.inference_mode])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("activation", [None, "relu", "gelu_tanh"])
def test_conv_direct_path_equals_custom_op(prune, direct_conv_calls, geometry, bias, context,
                                           dtype, activation):
    """The direct path runs the activation in the kernel's epilogue (k x k) or after the
    product (1x1); the op path applies it with torch: the same output."""
    torch.manual_seed(0)
    dense = prune(nn.Conv2d(5, 7, bias=bias, dtype=dtype, **geometry), 0.7)
    sparse = SparseConv2d.from_dense(dense)
    sparse.activation = activation
    if activation is not None:
        dense = nn.Sequential(dense, nn.ReLU() if activation == "relu" else nn.GELU("tanh"))
    x = torch.randn(2, 5, 9, 8, dtype=dtype)
    expected = _through_op(sparse, x)
    assert not direct_conv_calls
    with context():
        out = sparse(x)
        unbatched = sparse(x[0])
        channels_last = sparse(x.to(memory_format=torch.channels_last))
    assert len(direct_conv_calls) == 3
    # The epilogue's GELU and torch's may differ in the last bits.
    exact = activation in (None, "relu")
    check = torch.equal if exact else (lambda a, b: torch.allclose(a, b, rtol=1e-6, atol=1e-6))
    assert check(out, expected)
    assert check(unbatched, expected[0]) and check(channels_last, expected)
    torch.testing.assert_close(out, dense(x).detach(), rtol=1e-5, atol=1e-5)


def test_conv_direct_path_sees_folded_batchnorm_and_edits(prune):
    torch.manual_seed(0)
    dense = prune(nn.Conv2d(4, 6, 3, padding=1), 0.8)
    sparse = SparseConv2d.from_dense(dense)
    x = torch.randn(1, 4, 6, 6)
    bn = nn.BatchNorm2d(6).eval()
    bn.running_mean.uniform_(-1, 1)
    bn.running_var.uniform_(0.5, 2)
    with torch.no_grad():
        sparse(x)  # fills the module's shortcut
        sparse.fold_batchnorm(bn)
        torch.testing.assert_close(sparse(x), bn(dense(x)), rtol=1e-5, atol=1e-5)
        sparse.values.mul_(0)  # every output is the bias, through the BatchNorm
        bias_only = torch.zeros_like(dense(x)) + dense.bias[:, None, None]
        torch.testing.assert_close(sparse(x), bn(bias_only), rtol=1e-5, atol=1e-5)


def test_conv_direct_path_leaves_bad_input_to_the_op(prune, direct_conv_calls):
    sparse = SparseConv2d.from_dense(prune(nn.Conv2d(3, 4, 5), 0.5))
    with torch.no_grad():
        with pytest.raises(ValueError, match="sparsegemm.csr_conv2d"):
            sparse(torch.randn(1, 3, 3, 3))  # smaller than the kernel
        with pytest.raises(TypeError, match="dtype"):
            sparse(torch.randn(1, 3, 8, 8, dtype=torch.float64))
    assert direct_conv_calls == ["conv2d_direct"]  # tried, found no output, left it to the op


@pytest.mark.parametrize("format", ["csr", "bitmap"])
@pytest.mark.parametrize("activation", ["relu", "gelu", "gelu_tanh"])
def test_direct_path_runs_the_activation_in_the_epilogue(prune, direct_calls, format, activation):
    _, sparse = _module(prune, format)
    sparse.activation = activation
    x = torch.randn(5, 37)
    expected = _through_op(sparse, x)  # the op, then torch's activation
    with torch.no_grad():
        out = sparse(x)
    assert len(direct_calls) == 1
    torch.testing.assert_close(out, expected, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("rows", [1, 3, 600])  # outputs of 116 B to 70 KB: both allocators
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_direct_path_outputs_are_fresh_tensors_either_side_of_the_numpy_limit(prune, rows, dtype):
    _, sparse = _module(prune, dtype=dtype)
    x = torch.randn(rows, 37, dtype=dtype)
    expected = _through_op(sparse, x)
    with torch.no_grad():
        first, second = sparse(x), sparse(x)
    for out in (first, second):
        assert out.dtype == dtype and out.shape == (rows, 29) and out.is_contiguous()
        assert torch.equal(out, expected)
    assert first.data_ptr() != second.data_ptr()
    first.add_(1)  # writable, and owned by each output alone
    assert torch.equal(second, expected)
    if rows * 29 * first.element_size() > sparse_modules._ops._NUMPY_OUTPUT_MAX_BYTES:
        assert first.data_ptr() % 64 == 0  # torch's allocation, aligned for the kernels


def _bfloat16_valued(prune, x_dtype, bias, fmt="bitmap"):
    """A SparseLinear holding bfloat16 values: of a bfloat16 module (x bfloat16) or a
    float32 one given weight_dtype (x float32)."""
    torch.manual_seed(0)
    dense = prune(nn.Linear(37, 29, bias=bias), 0.6)
    if x_dtype == torch.bfloat16:
        return SparseLinear.from_dense(dense.to(torch.bfloat16), format=fmt)
    return SparseLinear.from_dense(dense, format=fmt, weight_dtype=torch.bfloat16)


@pytest.mark.parametrize("fmt", ["bitmap", "csr", "bsr"])
@pytest.mark.parametrize("x_dtype", [torch.bfloat16, torch.float32])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("shape", [(37,), (1, 37), (5, 37), (2, 3, 37)])
@pytest.mark.parametrize("activation", [None, "relu", "gelu"])
@pytest.mark.parametrize("context", [torch.no_grad, torch.inference_mode])
def test_bfloat16_values_take_the_direct_path_with_the_ops_result(prune, direct_calls, fmt,
                                                                   x_dtype, bias, shape,
                                                                   activation, context):
    sparse = _bfloat16_valued(prune, x_dtype, bias, fmt)
    sparse.activation = activation
    assert sparse.values.dtype == torch.bfloat16
    x = torch.randn(shape).to(x_dtype)
    expected = _through_op(sparse, x)
    assert not direct_calls
    with context():
        out = sparse(x)
    assert len(direct_calls) == 1
    assert out.dtype == x_dtype and out.shape == expected.shape
    if x_dtype == torch.bfloat16 or activation is None:
        assert torch.equal(out, expected)
    else:  # float32: the activation in the kernel's epilogue, as for float32 values
        torch.testing.assert_close(out, expected, rtol=1e-6, atol=1e-6)


def test_bfloat16_values_leave_mismatched_input_to_the_op(prune, direct_calls):
    sparse = _bfloat16_valued(prune, torch.bfloat16, True)
    with torch.no_grad():
        for x in (torch.randn(2, 37, dtype=torch.float64), torch.randn(2, 36).to(torch.bfloat16)):
            with pytest.raises((TypeError, ValueError)):
                sparse(x)
        # A float32 x with a bfloat16 bias is the op's error too.
        with pytest.raises(TypeError, match="dtype"):
            sparse(torch.randn(2, 37))
    assert not direct_calls
    # Recording a gradient goes through the op.
    sparse(torch.randn(2, 37).to(torch.bfloat16)).float().sum().backward()
    assert not direct_calls and sparse.values.grad is not None


@pytest.mark.parametrize("fmt", ["csr", "bsr", "bitmap"])
def test_a_model_copied_inside_inference_mode_runs_there(prune, fmt):
    # A copy made under inference mode holds inference tensors (indptr and indices
    # too), which keep no version counter: the operand cache must not read one.
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(64, 48), torch.nn.ReLU())
    prune(model[0], 0.9)
    sparsify(model, format=fmt)
    x = torch.randn(5, 64)
    with torch.no_grad():
        expected = model(x)
    with torch.inference_mode():
        copied = copy.deepcopy(model)
        torch.testing.assert_close(copied(x), expected)
        torch.testing.assert_close(freeze(copy.deepcopy(model))(x), expected)
