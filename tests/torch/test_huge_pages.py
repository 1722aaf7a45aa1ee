"""Module values the kernels stream sit on memory advised onto huge pages."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
from sparsegemm import _core
from sparsegemm.torch import SparseLinear
from sparsegemm.torch._cache import on_huge_pages
from torch import nn

HUGE_PAGE = 2 << 20


def huge_page_aligned(tensor) -> bool:
    return tensor.data_ptr() % HUGE_PAGE == 0


def pruned_linear(out_features: int, in_features: int, seed: int = 0) -> nn.Linear:
    torch.manual_seed(seed)
    linear = nn.Linear(in_features, out_features)
    with torch.no_grad():
        linear.weight.mul_(torch.rand_like(linear.weight) >= 0.5)
    return linear


needs_huge_pages = pytest.mark.skipif(not _core.huge_pages_enabled(),
                                      reason="SPARSEGEMM_HUGE_PAGES=off")


@needs_huge_pages
@pytest.mark.parametrize("format", ["csr", "bsr", "bitmap"])
def test_large_values_start_on_a_huge_page_and_give_the_same_output(format):
    linear = pruned_linear(1024, 4096)  # 2M kept weights: 8 MiB of float32 values
    module = SparseLinear.from_dense(linear, format=format,
                                     blocksize=(1, 4) if format == "bsr" else None)
    assert module.values.nbytes >= HUGE_PAGE and huge_page_aligned(module.values)
    assert module.values.is_leaf and module.values.requires_grad
    x = torch.randn(3, 4096)
    with torch.no_grad():
        expected = linear(x)
        torch.testing.assert_close(module(x), expected, rtol=1e-4, atol=1e-4)
    # Fine-tuning writes the same memory in place.
    module(x).sum().backward()
    with torch.no_grad():
        module.values -= 0.1 * module.values.grad
    assert huge_page_aligned(module.values)


@needs_huge_pages
def test_bfloat16_values_and_loaded_state_land_on_huge_pages():
    linear = pruned_linear(1024, 4096)
    module = SparseLinear.from_dense(linear, format="bitmap", weight_dtype=torch.bfloat16)
    assert module.values.dtype == torch.bfloat16 and huge_page_aligned(module.values)
    # A state with another pattern replaces the values' storage: it lands there too.
    other = SparseLinear.from_dense(pruned_linear(1024, 4096, seed=1), format="csr")
    target = SparseLinear.from_dense(pruned_linear(1024, 4096, seed=2), format="csr")
    assert other.values.shape != target.values.shape
    target.load_state_dict(other.state_dict())
    assert huge_page_aligned(target.values)
    torch.testing.assert_close(target.values, other.values)


def test_only_large_cpu_tensors_are_moved():
    small = torch.randn(1000)
    assert on_huge_pages(small) is small
    large = torch.randn(HUGE_PAGE // 4, dtype=torch.float32).reshape(512, -1)
    placed = on_huge_pages(large)
    if _core.huge_pages_enabled():
        assert placed is not large and huge_page_aligned(placed)
        assert placed.shape == large.shape and torch.equal(placed, large)
    else:
        assert placed is large
