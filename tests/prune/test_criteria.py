import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import torch
from sparsegemm import prune
from sparsegemm.prune.criteria import block_reduce
from torch import nn


def _lin(out, inp, bias=True):
    m = nn.Linear(inp, out, bias=bias)
    return m


def _set(m, w):
    with torch.no_grad():
        m.weight.copy_(torch.as_tensor(w, dtype=torch.float32))
    return m


def _weight(m):
    return m.weight_orig * m.weight_mask if hasattr(m, "weight_mask") else m.weight


# ------------------------------------------------------------ magnitude
@settings(max_examples=40, deadline=None)
@given(
    out=st.integers(1, 9), inp=st.integers(1, 9), frac=st.floats(0, 1), p=st.sampled_from([1, 2])
)
def test_magnitude_exact_fraction(out, inp, frac, p):
    m = _lin(out, inp)
    prune.prune_module(m, frac, prune.Magnitude(p))
    n = out * inp
    assert int((m.weight_mask == 0).sum()) == round(frac * n)


@settings(max_examples=40, deadline=None)
@given(out=st.integers(1, 9), inp=st.integers(1, 9), data=st.data())
def test_magnitude_exact_count(out, inp, data):
    k = data.draw(st.integers(0, out * inp))
    m = _lin(out, inp)
    prune.prune_module(m, k, "l1")
    assert int((m.weight_mask == 0).sum()) == k
    # the kept ones are the largest
    w = m.weight_orig.detach().abs().flatten()
    kept = w[m.weight_mask.flatten() == 1]
    dropped = w[m.weight_mask.flatten() == 0]
    if len(kept) and len(dropped):
        assert kept.min() >= dropped.max()


def test_magnitude_hand_made():
    m = _set(_lin(2, 3), [[0.1, -5.0, 0.3], [-0.2, 4.0, 0.05]])
    prune.prune_module(m, 3, "l2")
    assert m.weight_mask.tolist() == [[0, 1, 1], [0, 1, 0]]
    assert (m.weight == m.weight_orig * m.weight_mask).all()


def test_ties_still_exact():
    m = _set(_lin(4, 4), torch.ones(4, 4))
    prune.prune_module(m, 0.5)
    assert int((m.weight_mask == 0).sum()) == 8


def test_invalid_amounts():
    m = _lin(3, 3)
    with pytest.raises(ValueError):
        prune.prune_module(m, 1.5)
    with pytest.raises(ValueError):
        prune.prune_module(m, 10)
    with pytest.raises(ValueError):
        prune.prune_module(m, -1)
    with pytest.raises(TypeError):
        prune.prune_module(m, "half")


# ------------------------------------------------------------ blocks
@settings(max_examples=40, deadline=None)
@given(
    out=st.integers(1, 20),
    inp=st.integers(1, 12),
    block=st.sampled_from([(4, 1), (8, 1), (16, 1), (4, 4), (2, 3)]),
    frac=st.floats(0, 1),
)
def test_block_pattern_and_count(out, inp, block, frac):
    r, c = block
    m = _lin(out, inp)
    prune.prune_module(m, frac, prune.BlockNorm(block, p=1))
    R, C = math.ceil(out / r), math.ceil(inp / c)
    mask = m.weight_mask
    pad = torch.ones(R * r, C * c)
    pad[:out, :inp] = mask
    blocks = pad.reshape(R, r, C, c)
    # every block entirely kept or entirely pruned (edge blocks: their real part)
    per_block_zero = (blocks[:, :, :, :] == 0).sum(dim=(1, 3))
    per_block_size = torch.zeros(R * r, C * c)
    per_block_size[:out, :inp] = 1
    size = per_block_size.reshape(R, r, C, c).sum(dim=(1, 3))
    assert ((per_block_zero == 0) | (per_block_zero == size)).all()
    assert int((per_block_zero > 0).sum()) == round(frac * R * C)


def test_block_hand_made_4x1():
    w = torch.ones(8, 2) * 0.1
    w[4:8, 1] = 3.0  # strongest block: rows 4-7, col 1
    w[0:4, 0] = 2.0  # next: rows 0-3, col 0
    m = _set(_lin(8, 2), w)
    prune.prune_module(m, 2, prune.BlockNorm((4, 1)))
    expect = torch.zeros(8, 2)
    expect[4:8, 1] = 1
    expect[0:4, 0] = 1
    assert torch.equal(m.weight_mask, expect)


def test_block_l2_vs_l1_differ():
    # block A: one big entry (L2 favours), block B: spread (L1 favours)
    w = torch.tensor([[3.0, 1.0], [0.0, 1.0], [0.0, 1.0], [0.0, 1.0]])
    m1 = _set(_lin(4, 2), w)
    m2 = _set(_lin(4, 2), w)
    prune.prune_module(m1, 1, prune.BlockNorm((4, 1), p=1))
    prune.prune_module(m2, 1, prune.BlockNorm((4, 1), p=2))
    assert m1.weight_mask[:, 1].all() and not m1.weight_mask[:, 0].any()
    assert m2.weight_mask[:, 0].all() and not m2.weight_mask[:, 1].any()


def test_block_edge_normalised():
    # 5 rows with 4x1 blocks: the edge block (row 4) has 1 entry; scaled to a full block
    s = block_reduce(torch.ones(5, 1), (4, 1), p=1)
    assert torch.allclose(s, torch.tensor([[4.0], [4.0]]))


def test_block_conv_layout():
    conv = nn.Conv2d(3, 8, 3)
    prune.prune_module(conv, 0.5, prune.BlockNorm((4, 1)))
    mat = conv.weight_mask.reshape(8, -1)
    for rb in range(2):
        blk = mat[rb * 4 : rb * 4 + 4]
        assert ((blk == 0).all(0) | (blk == 1).all(0)).all()
    assert (mat == 0).float().mean() == 0.5


# ------------------------------------------------------------ N:M
@settings(max_examples=40, deadline=None)
@given(
    out=st.integers(1, 8),
    inp=st.integers(1, 20),
    nm=st.sampled_from([(2, 4), (4, 8), (1, 4), (1, 2)]),
)
def test_nm_every_group(out, inp, nm):
    n, mm = nm
    m = _lin(out, inp)
    prune.prune_module(m, 0.0, prune.NM(n, mm))
    mask = m.weight_mask
    w = m.weight_orig.detach().abs()
    for g0 in range(0, inp, mm):
        grp = mask[:, g0 : g0 + mm]
        size = grp.shape[1]
        assert (grp.sum(1) == min(n, size)).all()
        wg = w[:, g0 : g0 + mm]
        for r in range(out):
            kept = wg[r][grp[r] == 1]
            dropped = wg[r][grp[r] == 0]
            if len(kept) and len(dropped):
                assert kept.min() >= dropped.max()


def test_nm_conv_and_model():
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 8, 3), nn.ReLU(), nn.Conv2d(8, 4, 1)
    )
    prune.prune_model(model, criterion=prune.NM(2, 4))
    mask = model[2].weight_mask.reshape(8, -1)  # 8 x 72
    assert (mask.reshape(8, 18, 4).sum(-1) == 2).all()
    assert not hasattr(model[0], "weight_mask") and not hasattr(model[4], "weight_mask")


def test_nm_respects_existing_mask():
    m = _set(_lin(1, 4), [[4.0, 3.0, 2.0, 1.0]])
    prune.prune_module(m, 1)  # prunes 1.0
    torch.nn.utils.prune.custom_from_mask(m, "weight", torch.tensor([[0.0, 1, 1, 1]]))
    prune.prune_module(m, 0.0, prune.NM(2, 4))
    assert m.weight_mask.tolist() == [[0, 1, 1, 0]]


# ------------------------------------------------------------ channels
def test_channel_norm_linear_and_conv():
    m = _set(_lin(4, 2), [[1.0, 1.0], [0.1, 0.1], [3.0, 0.0], [0.0, 0.5]])
    prune.prune_module(m, 2, prune.ChannelNorm(2))
    assert m.weight_mask[:, 0].tolist() == [1, 0, 1, 0]
    assert (m.weight_mask == m.weight_mask[:, :1]).all()  # whole rows

    conv = nn.Conv2d(2, 6, 3)
    with torch.no_grad():
        conv.weight.mul_(torch.arange(1, 7, dtype=torch.float32).reshape(6, 1, 1, 1))
    prune.prune_module(conv, 0.5, prune.ChannelNorm(1))
    alive = conv.weight_mask.reshape(6, -1).all(1)
    assert alive.tolist() == [False, False, False, True, True, True]


# ------------------------------------------------------------ activation based
def _act_model():
    m = nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 3), nn.ReLU(), nn.Linear(3, 1))
    with torch.no_grad():
        m[2].weight.copy_(torch.eye(3))
        m[2].bias.zero_()
        m[0].weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]))
        m[0].bias.copy_(torch.tensor([0.0, 0.0, -10.0]))
    return m


def test_activation_mean_and_apoz():
    m = _act_model()
    x = torch.tensor([[1.0, -1.0], [2.0, -1.0], [3.0, 0.5], [4.0, -1.0]])
    data = [x[:2], x[2:]]
    stats = prune.measure_activations(m, data, {"0": m[0]})
    # neuron 0: relu(x0) = 1,2,3,4 -> mean 2.5, apoz 0; neuron 1: 0,0,.5,0 -> apoz .75
    assert torch.allclose(stats["0"]["mean"], torch.tensor([2.5, 0.125, 0.0], dtype=torch.float64))
    assert torch.allclose(stats["0"]["apoz"], torch.tensor([0.0, 0.75, 1.0], dtype=torch.float64))

    m1 = _act_model()
    prune.prune_model(
        m1,
        1,
        prune.Activation(data, kind="apoz"),
        overrides={"0": 1},
        filter_fn=lambda mod, n: False,
    )
    assert m1[0].weight_mask.all(1).tolist() == [True, True, False]
    m2 = _act_model()
    prune.prune_model(
        m2,
        2,
        prune.Activation([(x, None)], kind="mean"),
        overrides={"0": 2},
        filter_fn=lambda mod, n: False,
    )
    assert m2[0].weight_mask.all(1).tolist() == [True, False, False]


def test_activation_observe_other_module_conv():
    model = nn.Sequential(
        nn.Conv2d(1, 4, 1),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.Conv2d(4, 2, 1),
        nn.ReLU(),
        nn.Conv2d(2, 2, 1),
    )
    with torch.no_grad():
        model[1].bias.copy_(torch.tensor([-100.0, 1.0, 2.0, -100.0]))
    data = [torch.randn(2, 1, 5, 5) for _ in range(3)]
    crit = prune.Activation(data, kind="apoz", observe={"0": "2"})
    prune.prune_model(model, 0.5, crit, scope="layer", overrides={"0": 0.5})
    assert model[0].weight_mask.reshape(4, -1).all(1).tolist() == [False, True, True, False]
    assert crit.stats["0"]["apoz"][0] == 1.0


# ------------------------------------------------------------ Taylor
def test_taylor_from_loss_and_from_grad():
    m = _set(_lin(1, 3, bias=False), [[1.0, 1.0, 1.0]])
    x = torch.tensor([[1.0, 0.0, 5.0]])

    def loss_fn(model, batch):
        return model(batch).sum()

    # dL/dw = x, so |w*g| = [1, 0, 5]
    prune.prune_module(m, 1, prune.Taylor(loss_fn, [x]))
    assert m.weight_mask.tolist() == [[1, 0, 1]]

    m2 = _set(_lin(1, 3, bias=False), [[2.0, 1.0, 1.0]])
    m2(torch.tensor([[1.0, 3.0, 0.5]])).sum().backward()  # |w*g| = [2, 3, .5]
    prune.prune_module(m2, 2, prune.Taylor())
    assert m2.weight_mask.tolist() == [[0, 1, 0]]


def test_taylor_channel_granularity():
    m = _set(_lin(2, 2, bias=False), [[1.0, -1.0], [1.0, 1.0]])
    x = torch.tensor([[1.0, 1.0]])
    # row 0: sum w*g = 1 - 1 = 0 -> pruned first
    prune.prune_module(m, 1, prune.Taylor(lambda mod, b: mod(b).sum(), [x], granularity="channel"))
    assert m.weight_mask.tolist() == [[0, 0], [1, 1]]


def test_taylor_without_grad_raises():
    with pytest.raises(RuntimeError):
        prune.prune_module(_lin(2, 2), 1, prune.Taylor())


# ------------------------------------------------------------ custom
def test_custom_tensor_callable_and_channel():
    m = _lin(2, 2)
    prune.prune_module(m, 1, prune.Custom(torch.tensor([[4.0, 3.0], [1.0, 2.0]])))
    assert m.weight_mask.tolist() == [[1, 1], [0, 1]]

    model = nn.Sequential(nn.Linear(2, 3), nn.Linear(3, 3), nn.Linear(3, 2))
    crit = prune.Custom(lambda mod, name: torch.tensor([3.0, 1.0, 2.0]), granularity="channel")
    prune.prune_model(model, 1, crit)
    assert model[1].weight_mask.all(1).tolist() == [True, False, True]

    with pytest.raises(ValueError):
        prune.prune_module(_lin(2, 2), 1, prune.Custom(torch.ones(3)))
    with pytest.raises(KeyError):
        prune.prune_model(
            nn.Sequential(nn.Linear(2, 2)),
            1,
            prune.Custom({"x": torch.ones(2, 2)}),
            skip_first_last=False,
        )


def test_activation_shape_mismatch_is_clear():
    model = nn.Sequential(nn.Linear(2, 4), nn.ReLU(), nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 1))
    crit = prune.Activation([torch.randn(3, 2)], observe={"2": "4"})  # observes a 1-channel output
    with pytest.raises(ValueError, match="expected"):
        prune.prune_model(model, 0.5, crit)


def test_activation_with_dataloader():
    from torch.utils.data import DataLoader, TensorDataset

    m = _act_model()
    x = torch.tensor([[1.0, -1.0], [2.0, -1.0], [3.0, 0.5], [4.0, -1.0]])
    loader = DataLoader(TensorDataset(x, torch.zeros(4)), batch_size=3)
    stats = prune.measure_activations(m, loader, {"0": m[0]})
    assert torch.allclose(stats["0"]["apoz"], torch.tensor([0.0, 0.75, 1.0], dtype=torch.float64))


def test_torch_criteria_rank_as_the_numpy_core():
    """One pruning story: prune_module and sparsegemm.block_prune zero the same blocks."""
    import numpy as np

    import sparsegemm

    rng = np.random.default_rng(5)
    w = rng.standard_normal((18, 7)).astype(np.float32)
    w[4:8, 2] = w[0:4, 2]  # equal blocks: the tie rule decides
    m = _set(_lin(18, 7), torch.from_numpy(w.copy()))
    prune.prune_module(m, 0.5, prune.BlockNorm((4, 1), p=2))
    expected = sparsegemm.block_prune(w, (4, 1), 0.5) != 0
    np.testing.assert_array_equal(m.weight_mask.numpy() != 0, expected | (w == 0))
