from hypothesis import given, settings
from hypothesis import strategies as st

import torch
from sparsegemm import prune
from torch import nn


def _randomise_bn(model):
    for m in model.modules():
        if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            with torch.no_grad():
                m.running_mean.normal_()
                m.running_var.uniform_(0.5, 2.0)
                m.weight.normal_()
                m.bias.normal_()
    return model


def _check_equal(model, x, atol=1e-5):
    model.eval()
    with torch.no_grad():
        y = model(x)
    thin = prune.thin(model)
    thin.eval()
    with torch.no_grad():
        torch.testing.assert_close(thin(x), y, atol=atol, rtol=1e-5)
    return thin


def test_linear_relu_linear_folds_bias_of_removed_neurons():
    m = nn.Sequential(nn.Linear(6, 10), nn.ReLU(), nn.Linear(10, 8), nn.ReLU(), nn.Linear(8, 3))
    with torch.no_grad():
        for lin in (m[0], m[2]):
            lin.bias.uniform_(0.5, 1.0)  # removed neurons output relu(b) > 0: must be folded
    prune.prune_model(m, 0.5, prune.ChannelNorm(), scope="layer", skip_first_last=False)
    x = torch.randn(7, 6)
    t = _check_equal(m, x)
    assert [t[0].out_features, t[2].in_features, t[2].out_features, t[4].in_features] == [
        5,
        5,
        4,
        4,
    ]
    assert t[4].out_features == 3  # last layer's outputs cannot be removed


def test_folding_is_needed():
    """Dropping a neuron with non-zero constant output without folding changes the result."""
    m = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 2))
    with torch.no_grad():
        m[0].bias.fill_(1.0)
    prune.prune_model(m, 3, prune.ChannelNorm(), overrides={"0": 3})
    t = prune.thin(m)
    x = torch.randn(5, 4)
    naive = nn.Linear(3, 2)
    keep = ~prune.dead_channels(m[0])
    with torch.no_grad():
        naive.weight.copy_(m[2].weight[:, keep])
        naive.bias.copy_(m[2].bias)
        ref = m(x)
        assert not torch.allclose(naive(torch.relu(t[0](x))), ref)
        torch.testing.assert_close(t(x), ref)


def test_conv_bn_relu_conv_unpadded():
    m = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.Conv2d(8, 12, 3),
        nn.BatchNorm2d(12),
        nn.ReLU(),
        nn.Conv2d(12, 4, 1),
    )
    _randomise_bn(m)
    prune.prune_model(m, 0.5, prune.ChannelNorm(), scope="layer", skip_first_last=False)
    t = _check_equal(m, torch.randn(2, 3, 9, 9))
    assert t[0].out_channels == 4 and t[1].num_features == 4 and t[3].in_channels == 4
    assert t[3].out_channels == 6 and t[4].num_features == 6 and t[6].in_channels == 6


def test_conv_relu_conv_padded_keeps_nonzero_constant_channels():
    m = nn.Sequential(nn.Conv2d(2, 6, 3, padding=1), nn.ReLU(), nn.Conv2d(6, 4, 3, padding=1))
    with torch.no_grad():
        m[0].bias.copy_(torch.tensor([1.0, -1.0, 1.0, -1.0, 1.0, -1.0]))
        m[0].weight.copy_(
            torch.tensor([1.0, 1.0, 2.0, 2.0, 3.0, 3.0]).reshape(6, 1, 1, 1).expand(6, 2, 3, 3)
        )
    prune.prune_model(m, 4, prune.ChannelNorm(), overrides={"0": 4})
    # channels 0-3 pruned; 1 and 3 output relu(-1) = 0 -> removed; 0 and 2 output 1 -> kept,
    # because a zero-padded conv sees a constant map differently at the borders
    t = _check_equal(m, torch.randn(2, 2, 6, 6))
    assert t[0].out_channels == 4 and t[2].in_channels == 4


def test_conv_pool_flatten_linear():
    m = nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(8 * 4 * 4, 16),
        nn.ReLU(),
        nn.Dropout(0.5),
        nn.Linear(16, 3),
    )
    _randomise_bn(m)
    prune.prune_model(m, 0.5, prune.ChannelNorm(), scope="layer", skip_first_last=False)
    t = _check_equal(m, torch.randn(3, 1, 8, 8))
    assert t[0].out_channels == 4 and t[5].in_features == 4 * 16 and t[5].out_features == 8


def test_unpruned_and_unsupported_unchanged():
    m = nn.Sequential(nn.Linear(4, 4), nn.Tanh(), nn.Linear(4, 2))
    t = _check_equal(m, torch.randn(2, 4))
    assert t[0].out_features == 4

    class Odd(nn.Module):
        def forward(self, x):
            return x * 2

    m = nn.Sequential(nn.Linear(4, 4), Odd(), nn.Linear(4, 2))
    prune.prune_model(m, 2, prune.ChannelNorm(), overrides={"0": 2})
    t = _check_equal(m, torch.randn(2, 4))
    assert t[0].out_features == 4  # unknown module in between: left alone


def test_input_model_untouched_and_nested():
    inner = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 4))

    class Wrap(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = inner
            self.head = nn.Linear(4, 2)

        def forward(self, x):
            return self.head(self.body(x))

    w = Wrap()
    prune.prune_model(w, 0.5, prune.ChannelNorm(), overrides={"body.0": 0.5})
    t = _check_equal(w, torch.randn(3, 4))
    assert t.body[0].out_features == 4
    assert hasattr(w.body[0], "weight_mask")  # original still masked


@settings(max_examples=15, deadline=None)
@given(
    widths=st.lists(st.integers(2, 9), min_size=2, max_size=4),
    frac=st.floats(0, 1),
    act=st.sampled_from([nn.ReLU, nn.Tanh, nn.GELU]),
    bn=st.booleans(),
)
def test_mlp_thinning_property(widths, frac, act, bn):
    torch.manual_seed(1)
    layers, d = [], 5
    for w in widths:
        layers += [nn.Linear(d, w)] + ([nn.BatchNorm1d(w)] if bn else []) + [act()]
        d = w
    layers.append(nn.Linear(d, 2))
    m = _randomise_bn(nn.Sequential(*layers))
    prune.prune_model(m, frac, prune.ChannelNorm(), scope="layer", skip_first_last=False)
    _check_equal(m, torch.randn(4, 5))


def test_all_channels_pruned_keeps_one():
    m = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    prune.prune_model(m, 1.0, prune.ChannelNorm(), overrides={"0": 1.0})
    t = _check_equal(m, torch.randn(2, 3))
    assert t[0].out_features == 1


def test_thinned_model_is_plain():
    m = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2))
    prune.prune_model(m, 0.5, prune.ChannelNorm(), skip_first_last=True)
    t = prune.thin(m)
    assert not torch.nn.utils.prune.is_pruned(t)
    assert not hasattr(t[2], "weight_mask") and not hasattr(t[2], "weight_orig")
