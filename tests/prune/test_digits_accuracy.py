"""Reduced run of benchmarks/prune_digits.py: accuracy drops after AGP pruning stay within floors.

Fixed seeds, single thread; the floors have margin (measured drops are at
or below zero with these settings), so this is not expected to be flaky.
"""

import pytest

import torch

pytest.importorskip("sklearn")


@pytest.fixture(scope="module")
def bench(benchmark_script):
    return benchmark_script("prune_digits")


@pytest.fixture(scope="module")
def single_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _check(rows, bench):
    dense = rows[0]
    assert dense["config"] == "dense" and dense["acc"] > 95.0
    for r in rows[1:]:
        if r["floor"] is not None:
            assert r["drop"] <= r["floor"], bench.format_rows(rows)


def test_mlp_floors(bench, single_thread):
    rows = bench.run(("mlp",), quick=True, seed=0, verbose=False)
    assert [r["config"] for r in rows] == ["dense", *bench.CONFIGS]
    _check(rows, bench)
    by = {r["config"]: r for r in rows}
    assert by["unstructured-90"]["sparsity"] == pytest.approx(0.90, abs=1e-3)
    assert by["unstructured-95"]["sparsity"] == pytest.approx(0.95, abs=1e-3)
    assert by["block4x1-80"]["sparsity"] == pytest.approx(0.80, abs=1e-3)
    # thinned: half the hidden neurons of the inner layers removed, output equality checked inside
    assert by["channels-50"]["params"] < 0.6 * by["dense"]["params"]
    assert by["channels-50"]["drop"] <= 2.0


def test_cnn_block_floor(bench, single_thread):
    rows = bench.run(("cnn",), ("block4x1-80",), quick=True, seed=0, verbose=False)
    _check(rows, bench)
    assert rows[1]["sparsity"] == pytest.approx(0.80, abs=1e-3)
