import pytest
from hypothesis import given
from hypothesis import strategies as st

import torch
from sparsegemm import prune
from torch import nn


def test_agp_values():
    # s_t = s_f + (s_i - s_f)(1 - (t - t0)/(n dt))^3
    assert prune.agp_sparsity(0, 0.9) == 0.0
    assert prune.agp_sparsity(10, 0.9, n=10) == pytest.approx(0.9)
    assert prune.agp_sparsity(5, 0.9, n=10) == pytest.approx(0.9 - 0.9 * 0.5**3)
    assert prune.agp_sparsity(30, 0.8, s_i=0.2, t0=10, n=4, dt=10) == pytest.approx(
        0.8 + (0.2 - 0.8) * (1 - 20 / 40) ** 3
    )
    assert prune.agp_sparsity(-5, 0.9, s_i=0.1) == pytest.approx(0.1)
    assert prune.agp_sparsity(1000, 0.9) == pytest.approx(0.9)
    with pytest.raises(ValueError):
        prune.agp_sparsity(0, 0.9, n=0)


@given(t=st.integers(0, 99), s_f=st.floats(0, 1), s_i=st.floats(0, 1))
def test_agp_monotone(t, s_f, s_i):
    a = prune.agp_sparsity(t, s_f, s_i, n=10, dt=10)
    b = prune.agp_sparsity(t + 1, s_f, s_i, n=10, dt=10)
    assert (b - a) * (s_f - s_i) >= -1e-12
    assert min(s_i, s_f) - 1e-12 <= a <= max(s_i, s_f) + 1e-12


def _setup():
    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(4, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 2))
    opt = torch.optim.SGD(m.parameters(), lr=0.05, momentum=0.9)
    x, y = torch.randn(64, 4), torch.randint(0, 2, (64,))

    def step(t):
        opt.zero_grad()
        loss = nn.functional.cross_entropy(m(x), y)
        loss.backward()
        opt.step()
        return loss.item()

    return m, step


def test_agp_schedule_object():
    m, step = _setup()
    sched = prune.AGPSchedule(m, 0.75, start_step=2, n_steps=4, frequency=3, skip_first_last=True)
    targets = []
    for t in range(20):
        r = sched.step(t)
        if r is not None:
            targets.append((t, r))
            assert prune.sparsity(m)["2"] == pytest.approx(round(r * 1024) / 1024)
        step(t)
    assert [t for t, _ in targets] == [2, 5, 8, 11, 14]
    assert targets[-1][1] == pytest.approx(0.75)


def test_gradual_prune_masks_fixed_between_steps():
    m, step = _setup()
    seen = []

    def wrapped(t):
        loss = step(t)
        seen.append((t, m[2].weight_mask.clone()))
        return loss

    hist = prune.gradual_prune(m, wrapped, 0.9, n_prune_steps=5, steps_between=4, finetune_steps=6,
                               skip_first_last=True)
    assert [h["step"] for h in hist] == [0, 4, 8, 12, 16, 20]
    assert hist[-1]["target"] == pytest.approx(0.9)
    assert prune.sparsity(m)["2"] == pytest.approx(round(0.9 * 1024) / 1024)
    # mask only changes at pruning steps
    for (_, a), (t1, b) in zip(seen, seen[1:]):
        if t1 % 4 != 0 or t1 > 20:
            assert torch.equal(a, b), t1
    assert (m[2].weight_orig[m[2].weight_mask == 0] == 0).all()
    assert all("loss" in h for h in hist)


def test_gradual_prune_no_finetune_reaches_target():
    m, step = _setup()
    hist = prune.gradual_prune(m, step, 0.5, n_prune_steps=3, steps_between=2, skip_first_last=True)
    assert hist[-1]["target"] == pytest.approx(0.5)
    assert prune.sparsity(m)["2"] == pytest.approx(0.5)


def test_one_shot():
    m, _ = _setup()
    prune.one_shot(m, 0.3, criterion=prune.BlockNorm((8, 1)), skip_first_last=True)
    assert prune.sparsity(m)["2"] == pytest.approx(38 / 128)  # 4x32 blocks, round(.3*128)=38
