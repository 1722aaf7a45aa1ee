"""Sibling Linears that read one input (query, key, value) run as one stacked product."""

import copy
import io
import pickle

import pytest

torch = pytest.importorskip("torch")
from sparsegemm.torch import AutoSparseLinear, SharedInputGroup, SparseLinear, freeze, sparsify
from torch import nn


class SelfAttention(nn.Module):
    """Hugging Face's layout: q, k and v read ``x``, or k and v read ``memory`` when given
    (cross-attention), then an output projection and a feed-forward of the same width."""

    def __init__(self, hidden=24, heads=4, extra_bias=True):
        super().__init__()
        self.heads = heads
        self.query = nn.Linear(hidden, hidden)
        self.key = nn.Linear(hidden, hidden, bias=extra_bias)
        self.value = nn.Linear(hidden, hidden + 8)  # a different width stacks too
        self.output = nn.Linear(hidden + 8, hidden)
        self.feed = nn.Linear(hidden, hidden)

    def forward(self, x, memory=None):
        source = x if memory is None else memory
        q, k, v = self.query(x), self.key(source), self.value(source)
        attention = torch.softmax(q @ k.transpose(-1, -2), dim=-1)
        y = x + self.output(attention @ v)
        return y + self.feed(y)


def pruned_attention(prune, dtype=torch.float32, **kwargs):
    torch.manual_seed(0)
    model = SelfAttention(**kwargs).to(dtype).eval()
    for index, module in enumerate(m for m in model.modules() if isinstance(m, nn.Linear)):
        prune(module, 0.8, seed=index)
    return model


def names_in_groups(model):
    return {tuple(g.names) for g in {id(m._shared_input): m._shared_input
                                     for m in model.modules()
                                     if getattr(m, "_shared_input", None) is not None}.values()
            if g.state == "stacked"}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_default_sparsify_stacks_query_key_value_and_matches_dense(prune, tolerance, dtype):
    model = pruned_attention(prune, dtype)
    x = torch.randn(2, 7, 24, dtype=dtype)
    expected = model(x)
    sparsify(model)
    group = model.query._shared_input
    assert group.state == "probing" and "may stack" in str(model.sparsegemm_report)
    with torch.no_grad():
        for _ in range(3):
            torch.testing.assert_close(model(x), expected, **tolerance(dtype))
    assert names_in_groups(model) == {("query", "key", "value")}
    stacked = model.query._shared_input
    assert stacked is model.key._shared_input is model.value._shared_input
    assert stacked.stacked_products == 2  # the first pass probed, the next two stacked
    assert isinstance(stacked.fused, AutoSparseLinear) and stacked.fused.decisions  # timed early
    assert model.feed._shared_input.state == "alone"
    assert model.output._shared_input is None  # no sibling of its width
    report = str(model.sparsegemm_report)
    assert "stacked with key, value" in report
    assert "not stacked: no sibling read its input" in report
    assert model.sparsegemm_report[0].speedup_text == "per rows"
    assert "stacked with key, value" in repr(model.query)


def test_stacked_sparse_linears_hold_exactly_the_members_pattern(prune, tolerance):
    model = pruned_attention(prune, extra_bias=False)
    x = torch.randn(5, 24)
    expected = model(x)
    sparsify(model, batch_hint=5)
    assert all(type(getattr(model, n)) is SparseLinear for n in ("query", "key", "value"))
    with torch.no_grad():
        model(x)
        torch.testing.assert_close(model(x), expected, **tolerance(torch.float32))
    fused = model.query._shared_input.fused
    assert isinstance(fused, SparseLinear) and fused.format == "csr"
    members = [model.query, model.key, model.value]
    torch.testing.assert_close(fused.dense_weight(),
                               torch.cat([m.dense_weight() for m in members]), rtol=0, atol=0)
    assert fused.nnz == sum(m.nnz for m in members)
    bias = torch.cat([model.query.bias, torch.zeros(24), model.value.bias])  # key has none
    torch.testing.assert_close(fused.bias, bias, rtol=0, atol=0)


def test_bsr_members_stack_when_their_rows_fill_whole_blocks(prune, tolerance):
    model = pruned_attention(prune)
    x = torch.randn(6, 24)
    expected = model(x)
    sparsify(model, format="bsr", blocksize=(4, 1), min_sparsity=0.5)
    with torch.no_grad():
        model(x)
        torch.testing.assert_close(model(x), expected, **tolerance(torch.float32))
    assert model.query._shared_input.fused.blocksize == (4, 1)

    odd = pruned_attention(prune)
    sparsify(odd, format="bsr", blocksize=(5, 1), min_sparsity=0.5)  # 24 rows: 4.8 blocks
    assert odd.query._shared_input is None


def test_members_reading_different_inputs_in_the_first_pass_never_stack(prune, tolerance):
    model = pruned_attention(prune)
    x, memory = torch.randn(4, 24), torch.randn(6, 24)
    expected = model(x, memory)
    sparsify(model, batch_hint=4)
    with torch.no_grad():
        for _ in range(2):
            torch.testing.assert_close(model(x, memory), expected, **tolerance(torch.float32))
    # key and value read one tensor (memory): they stack; query reads x: alone.
    assert names_in_groups(model) == {("key", "value")}
    assert model.query._shared_input.state == "alone"


def test_a_later_pass_with_different_inputs_dissolves_the_group(prune, tolerance):
    model = pruned_attention(prune)
    x, memory = torch.randn(4, 24), torch.randn(4, 24)
    self_expected, cross_expected = model(x), model(x, memory)
    sparsify(model, batch_hint=4)
    with torch.no_grad():
        torch.testing.assert_close(model(x), self_expected, **tolerance(torch.float32))
        torch.testing.assert_close(model(x), self_expected, **tolerance(torch.float32))
        group = model.query._shared_input
        assert group.state == "stacked" and group.stacked_products == 1
        for _ in range(2):  # query's slice was stacked, then key read another tensor
            torch.testing.assert_close(model(x, memory), cross_expected,
                                       **tolerance(torch.float32))
        torch.testing.assert_close(model(x), self_expected, **tolerance(torch.float32))
    assert group.state == "dissolved" and "key read another input" in group.reason
    assert group.stacked_products == 2
    assert "not stacked: key read another input" in str(model.sparsegemm_report)


def test_an_input_changed_in_place_between_members_is_not_reused(prune, tolerance):
    class InPlace(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(8, 8), nn.Linear(8, 8)

        def forward(self, x):
            first = self.a(x)
            x.mul_(2)  # same tensor object, new contents
            return first, self.b(x)

    torch.manual_seed(0)
    model = InPlace()
    prune(model.a, 0.8)
    prune(model.b, 0.8, seed=1)
    sparsify(model, batch_hint=3)
    with torch.no_grad():
        for _ in range(3):
            x = torch.randn(3, 8)
            a_expected, b_expected = x @ model.a.dense_weight().T + model.a.bias, \
                2 * x @ model.b.dense_weight().T + model.b.bias
            a, b = model(x)
            torch.testing.assert_close(a, a_expected)
            torch.testing.assert_close(b, b_expected)


def stacked_sparse_attention(prune, x):
    """pruned_attention as SparseLinears planned at x's rows, after the probe and one
    stacked pass."""
    model = pruned_attention(prune)
    sparsify(model, batch_hint=x.shape[0])
    with torch.no_grad():
        model(x)
        model(x)
    return model


def test_gradients_reach_the_members_and_never_the_stacked_copy(prune, tolerance):
    x = torch.randn(4, 24)
    model = stacked_sparse_attention(prune, x)
    group = model.query._shared_input
    products = group.stacked_products
    model(x).sum().backward()  # grad mode, values require grad: each member alone
    assert group.stacked_products == products
    assert model.query.values.grad is not None and model.key.values.grad is not None
    with torch.no_grad():  # an optimizer step changes the members: the copy is rebuilt
        for member in (model.query, model.key, model.value):
            member.values.sub_(0.1 * member.values.grad)
        expected = [m(x) for m in (model.query, model.key, model.value)]  # stacked, rebuilt
        group.dissolve("compare")
        for member, stacked in zip((model.query, model.key, model.value), expected):
            torch.testing.assert_close(stacked, member(x), **tolerance(torch.float32))


def test_weights_replaced_by_to_rebuild_the_stacked_copy(prune, tolerance):
    x = torch.randn(4, 24)
    model = stacked_sparse_attention(prune, x)
    with torch.no_grad():
        model.to(torch.float64)
        expected = pruned_attention(prune, torch.float64)(x.double())
        torch.testing.assert_close(model(x.double()), expected, **tolerance(torch.float64))
    assert model.query._shared_input.fused.values.dtype == torch.float64


def test_copies_pickles_and_freeze_keep_working(prune, tolerance):
    model = pruned_attention(prune)
    x = torch.randn(4, 24)
    expected = model(x)
    sparsify(model)
    with torch.no_grad():
        model(x)
    clone = copy.deepcopy(model)
    group = clone.query._shared_input
    assert group is not model.query._shared_input and group.members[0] is clone.query
    restored = pickle.loads(pickle.dumps(model))
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)  # keys as before stacking: the copy is not in it
    assert not any("fused" in key for key in model.state_dict())
    freeze(model)
    assert isinstance(model.query, AutoSparseLinear) and model.query.frozen  # stays: stacked
    assert isinstance(model.query._shared_input.fused, SparseLinear)  # resolved
    assert isinstance(model.feed, SparseLinear)  # alone: replaced as before
    with torch.no_grad():
        for m in (model, clone, restored):
            torch.testing.assert_close(m(x), expected, **tolerance(torch.float32))
            torch.testing.assert_close(m(x), expected, **tolerance(torch.float32))
    assert clone.query._shared_input.state == "stacked"


def test_opting_out_and_sequential_siblings_do_not_stack(prune):
    model = pruned_attention(prune)
    sparsify(model, stack_shared_inputs=False)
    assert all(getattr(m, "_shared_input", None) is None for m in model.modules())

    torch.manual_seed(0)
    chain = nn.Sequential(prune(nn.Linear(16, 16), 0.8), prune(nn.Linear(16, 16), 0.8))
    sparsify(chain)
    assert all(getattr(m, "_shared_input", None) is None for m in chain.modules())


def test_a_group_needs_two_members():
    with pytest.raises(ValueError, match="at least two"):
        SharedInputGroup([], [])


def test_the_e2e_time_breakdown_counts_the_stacked_product_as_sparse(prune):
    from sparsegemm.bench.e2e import layer_time_breakdown

    class QueryKeyValue(nn.Module):
        def __init__(self):
            super().__init__()
            self.query, self.key, self.value = (nn.Linear(64, 64) for _ in range(3))

        def forward(self, x):
            return self.query(x) * self.key(x) + self.value(x)

    torch.manual_seed(0)
    for kwargs in ({}, {"batch_hint": 32}):  # AutoSparseLinear members, SparseLinear members
        model = QueryKeyValue()
        for index, linear in enumerate((model.query, model.key, model.value)):
            prune(linear, 0.8, seed=index)
        sparsify(model, **kwargs)
        x = torch.randn(32, 64)
        with torch.no_grad():
            model(x)
            shares = layer_time_breakdown(model, x)
        assert model.query._shared_input.state == "stacked"
        assert shares["sparse_layers_s"] > 0 and shares["dense_layers_s"] == 0
