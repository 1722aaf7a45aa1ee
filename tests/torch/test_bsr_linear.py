"""SparseLinear stored as BSR: forward, autograd, state_dict, compile, repr."""

import copy

import pytest

torch = pytest.importorskip("torch")
from torch.nn.utils import prune as torch_prune

from sparsegemm.torch import SparseLinear
from sparsegemm.torch import ops as sparse_ops
from torch import nn

BLOCKSIZES = [(4, 1), (8, 1), (4, 4), (3, 5), (1, 1)]


def block_pruned(in_features, out_features, blocksize, *, dtype=torch.float32, keep=0.3, seed=0):
    """An nn.Linear whose weight is zero outside a random set of ``blocksize`` blocks
    (edge blocks cut by the matrix edge included), with random zeros inside kept blocks."""
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    linear = nn.Linear(in_features, out_features, dtype=dtype)
    r, c = blocksize
    block_keep = torch.rand(-(-out_features // r), -(-in_features // c), generator=generator) < keep
    mask = block_keep.repeat_interleave(r, 0).repeat_interleave(c, 1)[:out_features, :in_features]
    mask &= torch.rand(out_features, in_features, generator=generator) < 0.8
    with torch.no_grad():
        linear.weight.mul_(mask)
    return linear


@pytest.mark.parametrize("blocksize", BLOCKSIZES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("shape", [(1, 37), (5, 37), (2, 3, 37), (37,)])
def test_forward_matches_dense(blocksize, dtype, shape, tolerance):
    dense = block_pruned(37, 29, blocksize, dtype=dtype)  # neither edge divides by 4 or 8
    sparse = SparseLinear.from_dense(dense, format="bsr", blocksize=blocksize)
    assert sparse.format == "bsr" and sparse.blocksize == blocksize
    assert sparse.values.shape[1:] == blocksize
    x = torch.randn(shape, dtype=dtype)
    torch.testing.assert_close(sparse(x), dense(x), **tolerance(dtype))


def test_stores_only_blocks_with_kept_entries():
    dense = block_pruned(16, 12, (4, 1), keep=0.25)
    sparse = SparseLinear.from_dense(dense, format="bsr", blocksize=(4, 1))
    blocks = (dense.weight.reshape(3, 4, 16) != 0).any(dim=1)
    assert sparse.indices.numel() == int(blocks.sum())
    assert sparse.nnz == 4 * int(blocks.sum())
    torch.testing.assert_close(sparse.to_dense().weight, dense.weight)


@pytest.mark.parametrize("blocksize", [(4, 1), (3, 5)])
def test_gradcheck_float64(blocksize):
    dense = block_pruned(11, 7, blocksize, dtype=torch.float64, keep=0.5)
    sparse = SparseLinear.from_dense(dense, format="bsr", blocksize=blocksize)
    x = torch.randn(3, 2, 11, dtype=torch.float64, requires_grad=True)
    values = sparse.values.detach().clone().requires_grad_()
    bias = sparse.bias.detach().clone().requires_grad_()

    def fn(x, values, bias):
        return torch.ops.sparsegemm.bsr_linear(x, sparse.indptr, sparse.indices, values, 7, 11,
                                               bias)

    assert torch.autograd.gradcheck(fn, (x, values, bias))


@pytest.mark.parametrize("blocksize", BLOCKSIZES)
def test_gradients_match_dense_at_stored_blocks(blocksize):
    dense = block_pruned(37, 29, blocksize, dtype=torch.float64)
    sparse = SparseLinear.from_dense(dense, format="bsr", blocksize=blocksize)
    x = torch.randn(6, 37, dtype=torch.float64, requires_grad=True)
    x_dense = x.detach().clone().requires_grad_()
    sparse(x).pow(2).sum().backward()
    dense(x_dense).pow(2).sum().backward()
    torch.testing.assert_close(x.grad, x_dense.grad)
    torch.testing.assert_close(sparse.bias.grad, dense.bias.grad)
    # The values' gradient, laid out as a dense matrix, is the dense gradient at the
    # stored blocks (zeros inside a block included) and zero elsewhere.
    with torch.no_grad():
        probe = copy.deepcopy(sparse)
        probe.values.fill_(1.0)
        stored = probe.dense_weight() != 0
        probe.values.copy_(sparse.values.grad)
        grad_as_dense = probe.dense_weight()
    torch.testing.assert_close(grad_as_dense, torch.where(stored, dense.weight.grad, 0.0))


def test_padding_stays_zero_through_training():
    dense = block_pruned(10, 7, (4, 4), keep=0.6)  # 7 x 10 in 4x4 blocks: padded edges
    sparse = SparseLinear.from_dense(dense, format="bsr", blocksize=(4, 4))
    optimizer = torch.optim.SGD(sparse.parameters(), lr=0.1)
    for _ in range(3):
        optimizer.zero_grad()
        sparse(torch.randn(5, 10)).pow(2).sum().backward()
        optimizer.step()
    sparse.check_pattern()  # BSRMatrix rejects nonzero padding
    x = torch.randn(2, 10)
    torch.testing.assert_close(sparse(x), sparse.to_dense()(x), rtol=1e-5, atol=1e-5)


def test_state_dict_round_trip_and_repr():
    dense = block_pruned(37, 29, (8, 1))
    sparse = SparseLinear.from_dense(dense, format="bsr", blocksize=(8, 1))
    fresh = SparseLinear(37, 29, format="bsr", blocksize=(8, 1))
    fresh.load_state_dict(sparse.state_dict())
    x = torch.randn(4, 37)
    torch.testing.assert_close(fresh(x), dense(x), rtol=1e-5, atol=1e-5)
    text = repr(fresh)
    assert "format=bsr" in text and "blocksize=(8, 1)" in text and "nblocks=" in text
    back = fresh.to_dense()
    assert isinstance(back, nn.Linear)
    torch.testing.assert_close(back.weight, dense.weight)
    with pytest.raises(RuntimeError, match="invalid sparse pattern"):
        SparseLinear(37, 29, format="bsr", blocksize=(4, 1)).load_state_dict(sparse.state_dict())


def test_values_edits_are_seen_live():
    dense = block_pruned(16, 8, (4, 1))
    sparse = SparseLinear.from_dense(dense, format="bsr", blocksize=(4, 1))
    x = torch.randn(3, 16)
    sparse(x)
    sparse.values.data.mul_(3.0)
    torch.testing.assert_close(sparse(x), 3.0 * (dense(x) - dense.bias) + dense.bias,
                               rtol=1e-5, atol=1e-5)


def test_from_torch_prune_mask():
    torch.manual_seed(0)
    linear = nn.Linear(12, 8)
    torch_prune.l1_unstructured(linear, "weight", amount=0.7)
    sparse = SparseLinear.from_dense(linear, format="bsr", blocksize=(4, 1))
    x = torch.randn(2, 12)
    torch.testing.assert_close(sparse(x), linear(x), rtol=1e-5, atol=1e-5)


def test_bad_blocksize_and_conv():
    dense = block_pruned(8, 8, (4, 1))
    with pytest.raises(ValueError, match="blocksize"):
        SparseLinear.from_dense(dense, format="bsr", blocksize=(0, 4))
    with pytest.raises(ValueError, match="blocksize"):
        SparseLinear.from_dense(dense, format="bsr", blocksize=4)
    from sparsegemm.torch import SparseConv2d

    with pytest.raises(NotImplementedError, match="CSR only"):
        SparseConv2d.from_dense(nn.Conv2d(2, 2, 3), format="bsr", blocksize=(4, 1))


def test_compile_fullgraph_forward_and_backward():
    torch._dynamo.reset()
    sparse = SparseLinear.from_dense(block_pruned(24, 16, (4, 1)), format="bsr",
                                     blocksize=(4, 1))
    x = torch.randn(5, 24)
    expected = sparse(x)
    compiled = torch.compile(sparse, fullgraph=True, backend="aot_eager")
    out = compiled(x)
    torch.testing.assert_close(out, expected)
    out.sum().backward()
    grads = [p.grad.clone() for p in sparse.parameters()]
    sparse.zero_grad()
    sparse(x).sum().backward()
    for compiled_grad, p in zip(grads, sparse.parameters()):
        torch.testing.assert_close(compiled_grad, p.grad)


def test_opcheck_bsr_ops():
    sparse = SparseLinear.from_dense(block_pruned(9, 6, (4, 1), dtype=torch.float64, keep=0.6),
                                     format="bsr", blocksize=(4, 1))
    x = torch.randn(3, 9, dtype=torch.float64, requires_grad=True)
    torch.library.opcheck(sparse_ops.bsr_linear,
                          (x, sparse.indptr, sparse.indices, sparse.values, 6, 9, sparse.bias))
    torch.library.opcheck(sparse_ops.bsr_linear_t,
                          (torch.randn(3, 6, dtype=torch.float64), sparse.indptr, sparse.indices,
                           sparse.values.detach(), 6, 9))
    torch.library.opcheck(sparse_ops.bsr_sampled_dot,
                          (sparse.indptr, sparse.indices, torch.randn(3, 6, dtype=torch.float64),
                           torch.randn(3, 9, dtype=torch.float64), [4, 1]))


def test_export_records_the_bsr_op(tmp_path):
    sparse = SparseLinear.from_dense(block_pruned(24, 16, (4, 1)), format="bsr",
                                     blocksize=(4, 1)).eval()
    x = torch.randn(5, 24)
    program = torch.export.export(sparse, (x,))
    names = {str(node.target) for node in program.graph.nodes if node.op == "call_function"}
    assert "sparsegemm.bsr_linear.default" in names
    path = tmp_path / "bsr.pt2"
    torch.export.save(program, path)
    torch.testing.assert_close(torch.export.load(path).module()(x), sparse(x))


def test_attention_projections_in_bsr(planner_times):
    from sparsegemm.torch import SparseMultiheadAttention, sparsify

    planner_times(dense=1.0, csr=0.9, bsr4x1=0.4)
    torch.manual_seed(0)
    layer = nn.TransformerEncoderLayer(32, 4, 64, dropout=0.0, batch_first=True).eval()
    for module, name in [(m, "weight") for m in layer.modules() if isinstance(m, nn.Linear)] + [
            (layer.self_attn, "in_proj_weight")]:
        torch_prune.random_unstructured(module, name, amount=0.9)
        torch_prune.remove(module, name)
    x = torch.randn(2, 5, 32)
    with torch.no_grad():
        expected = layer(x)
        sparsify(layer, batch_hint=10)
        assert isinstance(layer.self_attn, SparseMultiheadAttention)
        assert layer.self_attn.q_proj.blocksize == (4, 1) and layer.linear1.blocksize == (4, 1)
        torch.testing.assert_close(layer(x), expected, rtol=1e-4, atol=1e-5)
