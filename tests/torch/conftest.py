"""Shared fixtures for the sparsegemm.torch tests (each test module skips itself without torch)."""

import pytest

torch = pytest.importorskip("torch")


def _prune(module, sparsity: float, seed: int = 0):
    """Zero a random ``sparsity`` fraction of ``module.weight`` in place; returns module."""
    generator = torch.Generator().manual_seed(seed)
    keep = torch.rand(module.weight.shape, generator=generator) >= sparsity
    with torch.no_grad():
        module.weight.mul_(keep)
    return module


def _tolerance(dtype):
    return {"rtol": 1e-5, "atol": 1e-5} if dtype == torch.float32 else {"rtol": 1e-10, "atol": 1e-10}


@pytest.fixture
def prune():
    return _prune


@pytest.fixture
def tolerance():
    return _tolerance
