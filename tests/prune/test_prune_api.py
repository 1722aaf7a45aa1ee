import pytest
from torch.nn.utils import prune as tprune

import torch
from sparsegemm import prune
from torch import nn


def mlp():
    return nn.Sequential(
        nn.Linear(8, 16),
        nn.ReLU(),
        nn.Linear(16, 32),
        nn.ReLU(),
        nn.Linear(32, 8),
        nn.ReLU(),
        nn.Linear(8, 4),
    )


def zeros(m):
    w = m.weight_orig * m.weight_mask if hasattr(m, "weight_mask") else m.weight
    return int((w == 0).sum())


def test_first_last_skipped_by_default_and_flag():
    m = mlp()
    with pytest.warns(UserWarning, match=r"asked for 50.0% .* \['0', '6'\] stayed dense"):
        pruned = prune.prune_model(m, 0.5)
    assert list(pruned) == ["2", "4"]
    assert not hasattr(m[0], "weight_mask") and not hasattr(m[6], "weight_mask")
    m2 = mlp()
    assert list(prune.prune_model(m2, 0.5, skip_first_last=False)) == ["0", "2", "4", "6"]


def test_a_two_layer_model_pruned_with_the_defaults_warns_that_nothing_was_pruned():
    m = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 2))
    with pytest.warns(UserWarning, match=r"pruned nothing.*\['0', '2'\]"):
        assert prune.prune_model(m, 0.9) == {}
    with pytest.warns(UserWarning, match="pruned nothing"):  # an explicit skip warns too here
        prune.prune_model(m, 0.9, skip_first_last=True)


def test_no_warning_when_every_layer_is_pruned_or_the_skip_is_chosen():
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        prune.prune_model(mlp(), 0.9, skip_first_last=False)
        prune.prune_model(mlp(), 0.9, skip_first_last=True)


def test_global_vs_layer():
    m = mlp()
    with torch.no_grad():
        m[2].weight.mul_(100.0)  # layer 2 much larger: global pruning takes from layer 4
    prune.prune_model(m, 0.5, scope="global", skip_first_last=True)
    n2, n4 = m[2].weight.numel(), m[4].weight.numel()
    assert zeros(m[2]) + zeros(m[4]) == round(0.5 * (n2 + n4))
    assert zeros(m[4]) == n4 and zeros(m[2]) < n2 // 2

    m = mlp()
    with torch.no_grad():
        m[2].weight.mul_(100.0)
    prune.prune_model(m, 0.5, scope="layer", skip_first_last=True)
    assert zeros(m[2]) == n2 // 2 and zeros(m[4]) == n4 // 2


def test_global_count():
    m = mlp()
    prune.prune_model(m, 100)
    assert zeros(m[2]) + zeros(m[4]) == 100


def test_overrides():
    m = mlp()
    prune.prune_model(m, 0.5, scope="layer", overrides={"4": 0.25, "0": 0.75, "2": None})
    assert zeros(m[4]) == m[4].weight.numel() // 4
    assert zeros(m[0]) == round(0.75 * m[0].weight.numel())
    assert not hasattr(m[2], "weight_mask")
    with pytest.raises(KeyError):
        prune.prune_model(mlp(), 0.5, overrides={"nope": 0.1})


def test_global_with_overrides_leaves_pool():
    m = mlp()
    prune.prune_model(m, 0.5, overrides={"2": 0.1})
    assert zeros(m[2]) == round(0.1 * m[2].weight.numel())
    assert zeros(m[4]) == m[4].weight.numel() // 2


def test_filter_fn():
    m = mlp()
    pruned = prune.prune_model(
        m, 0.5, filter_fn=lambda mod, n: n in ("2", "4", "6"), skip_first_last=False
    )
    assert list(pruned) == ["2", "4", "6"]


def test_uses_torch_machinery_and_torch_remove():
    m = mlp()
    prune.prune_model(m, 0.5, skip_first_last=True)
    assert tprune.is_pruned(m)
    assert isinstance(m[2].weight_orig, nn.Parameter)
    assert "weight_mask" in dict(m[2].named_buffers())
    z = zeros(m[2])
    assert z > 0
    tprune.remove(m[2], "weight")
    assert isinstance(m[2].weight, nn.Parameter)
    assert zeros(m[2]) == z


def test_remove_hands_over_dense_with_zeros():
    m = mlp()
    prune.prune_model(m, 0.7, prune.BlockNorm((4, 1)), skip_first_last=True)
    x = torch.randn(5, 8)
    y = m(x)
    before = prune.sparsity(m)
    prune.remove(m)
    assert not tprune.is_pruned(m)
    assert {n for n, _ in m.named_parameters()} == {
        f"{i}.{p}" for i in (0, 2, 4, 6) for p in ("weight", "bias")
    }
    assert len(list(m.buffers())) == 0
    assert prune.sparsity(m) == before
    torch.testing.assert_close(m(x), y)


def test_torch_pruned_model_treated_identically():
    """A mask made by torch's own API is respected, updated in place, no extra hooks."""
    m = mlp()
    tprune.l1_unstructured(m[2], "weight", amount=0.3)
    torch_mask = m[2].weight_mask.clone()
    prune.prune_model(m, 0.6, scope="layer", skip_first_last=True)
    hooks = [h for h in m[2]._forward_pre_hooks.values() if isinstance(h, tprune.BasePruningMethod)]
    assert len(hooks) == 1
    assert zeros(m[2]) == round(0.6 * m[2].weight.numel())
    assert (m[2].weight_mask <= torch_mask).all()  # never revives
    tprune.remove(m[2], "weight")


def test_same_result_as_torch_global_unstructured():
    m1, m2 = mlp(), mlp()
    m2.load_state_dict(m1.state_dict())
    prune.prune_model(m1, 0.6, skip_first_last=True)
    tprune.global_unstructured(
        [(m2[2], "weight"), (m2[4], "weight")], tprune.L1Unstructured, amount=0.6
    )
    for i in (2, 4):
        assert torch.equal(m1[i].weight_mask, m2[i].weight_mask)


def test_total_not_incremental_and_monotone():
    m = mlp()
    prune.prune_model(m, 0.5, scope="layer", skip_first_last=True)
    first = m[2].weight_mask.clone()
    prune.prune_model(m, 0.75, scope="layer", skip_first_last=True)
    assert zeros(m[2]) == round(0.75 * m[2].weight.numel())
    assert (m[2].weight_mask <= first).all()
    prune.prune_model(m, 0.25, scope="layer", skip_first_last=True)  # lower target: nothing revived
    assert zeros(m[2]) == round(0.75 * m[2].weight.numel())


@pytest.mark.parametrize("opt_name", ["sgd", "adamw"])
def test_masks_stay_fixed_through_training(opt_name):
    m = mlp()
    prune.prune_model(m, 0.8, skip_first_last=True)
    masks = {i: m[i].weight_mask.clone() for i in (2, 4)}
    if opt_name == "sgd":
        opt = torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-2)
    else:
        opt = torch.optim.AdamW(m.parameters(), lr=1e-2, weight_decay=1e-2)
    handle = prune.keep_masks(opt, m)
    for _ in range(5):
        opt.zero_grad()
        m(torch.randn(16, 8)).pow(2).mean().backward()
        opt.step()
        for i in (2, 4):
            assert torch.equal(m[i].weight_mask, masks[i])
            assert (m[i].weight_orig[masks[i] == 0] == 0).all()
            assert (m[i].weight[masks[i] == 0] == 0).all()
    handle.remove()


def test_clone_after_forward():
    m = mlp()
    prune.prune_model(m, 0.5, skip_first_last=True)
    m(torch.randn(2, 8)).sum().backward()
    c = prune.clone_model(m)
    x = torch.randn(3, 8)
    torch.testing.assert_close(c(x), m(x))


def test_bad_args():
    with pytest.raises(ValueError):
        prune.prune_model(mlp(), 0.5, scope="everywhere")
    with pytest.raises(ValueError):
        prune.prune_model(mlp(), 0.5, criterion="l3")


def test_torch_structured_model_thins_and_removes():
    m = mlp()
    tprune.ln_structured(m[2], "weight", amount=0.5, n=2, dim=0)
    x = torch.randn(3, 8)
    with torch.no_grad():
        y = m(x)
    t = prune.thin(m)
    assert t[2].out_features == 16 and t[4].in_features == 16
    with torch.no_grad():
        torch.testing.assert_close(t(x), y)
    prune.remove(m)
    assert not tprune.is_pruned(m)


def test_taylor_second_round_on_masked_model():
    m = mlp()
    prune.prune_model(m, 0.5, skip_first_last=True)
    x = torch.randn(16, 8)
    crit = prune.Taylor(lambda mod, b: mod(b).pow(2).mean(), [x])
    prune.prune_model(m, 0.75, crit, skip_first_last=True)
    assert prune.sparsity(m)["2"] + prune.sparsity(m)["4"] > 1.0
    n = m[2].weight.numel() + m[4].weight.numel()
    assert zeros(m[2]) + zeros(m[4]) == round(0.75 * n)
