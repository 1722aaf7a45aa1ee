"""Shared fixtures for the sparsegemm.torch tests (each test module skips itself without torch)."""

import pytest

import sparsegemm

torch = pytest.importorskip("torch")


def _prune(module, sparsity: float, seed: int = 0):
    """Zero a random ``sparsity`` fraction of ``module.weight`` in place; returns module."""
    generator = torch.Generator().manual_seed(seed)
    keep = torch.rand(module.weight.shape, generator=generator) >= sparsity
    with torch.no_grad():
        module.weight.mul_(keep)
    return module


def _tolerance(dtype):
    if dtype == torch.float32:
        return {"rtol": 1e-5, "atol": 1e-5}
    return {"rtol": 1e-10, "atol": 1e-10}


@pytest.fixture
def prune():
    return _prune


@pytest.fixture
def tolerance():
    return _tolerance


class FakePlannerTimer:
    """Stands in for ``sparsegemm.planner._time_candidates``: fixed median seconds per
    contender, so ``format='auto'`` decisions do not depend on this machine's load."""

    def __init__(self, dense: float = 1.0, **sparse: float):
        self.times = {"dense_numpy": dense, "dense_torch": dense}
        self.times.update({"csr": 0.5, "bitmap": 2.0, "bsr4x1": 1.0, "bsr8x1": 1.0, "bsr16x1": 1.0,
                           "bsr4x4": 1.0})
        self.times.update(sparse)
        self.timed: list[list[str]] = []

    def __call__(self, runners, repeats, rounds, drop_slower_than=float("inf")):
        self.timed.append(sorted(runners))
        return {name: self.times[name] for name in runners}


@pytest.fixture(autouse=True)
def planner_times(monkeypatch):
    """Injects planner timings (default: CSR 2x faster than dense, BSR no faster, the bitmap
    2x slower).

    Call ``planner_times(dense=..., csr=..., bsr4x1=...)`` in a test for other
    timings; returns the fake timer, whose ``timed`` lists each call's contenders.
    """
    from sparsegemm import planner

    monkeypatch.delenv("SPARSEGEMM_PLAN_CACHE", raising=False)
    planner.clear_cache()

    def install(dense: float = 1.0, **sparse: float) -> FakePlannerTimer:
        planner.clear_cache()
        timer = FakePlannerTimer(dense, **sparse)
        monkeypatch.setattr(planner, "_time_candidates", timer)
        return timer

    install()
    yield install
    planner.clear_cache()


def _pruned_tiny_bert(seed: int = 0, **config):
    """A two-layer BertModel (hidden 32, 2 heads, FFN 96) in eval mode, with 80% of
    each encoder Linear's weights zeroed at random."""
    transformers = pytest.importorskip("transformers")
    settings = dict(vocab_size=64, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                    intermediate_size=96)
    torch.manual_seed(seed)
    model = transformers.BertModel(transformers.BertConfig(**{**settings, **config})).eval()
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.encoder.modules():
            if isinstance(module, torch.nn.Linear):
                module.weight.mul_(torch.rand(module.weight.shape, generator=generator) >= 0.8)
    return model


@pytest.fixture
def pruned_tiny_bert():
    return _pruned_tiny_bert


@pytest.fixture
def count_calls(monkeypatch):
    """``count_calls(module, name)``: a list that records the first argument's shape of
    every call of ``module.name`` while the test runs (the function still runs)."""

    def install(module, name):
        calls = []
        real = getattr(module, name)

        def counting(*args):
            calls.append(args[0].shape)
            return real(*args)

        monkeypatch.setattr(module, name, counting)
        return calls

    return install


@pytest.fixture
def fused_calls(monkeypatch):
    """Calls of the one-call self-attention kernel (it still runs) and of the plain
    attention kernel, while the test runs."""
    calls = {"fused": 0, "attention": 0}
    core = sparsegemm._core
    for key, name in (("fused", "csr_self_attention"), ("attention", "attention")):
        real = getattr(core, name)

        def counting(*args, _real=real, _key=key, **kwargs):
            calls[_key] += 1
            return _real(*args, **kwargs)

        monkeypatch.setattr(core, name, counting)
    return calls
