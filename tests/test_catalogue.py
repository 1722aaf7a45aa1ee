"""The kernel catalogue: the one list that dispatch, the planner, tests and benchmarks read."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import sparsegemm
from sparsegemm import BSRMatrix, planner
from sparsegemm.formats import MAX_BLOCK_EDGE

CATALOGUE = sparsegemm.kernel_catalogue()
CSRC = Path(__file__).resolve().parents[1] / "csrc"


def test_catalogue_lists_families_isas_shapes_and_limits():
    assert set(CATALOGUE["families"]) >= {"csr", "bsr", "conv"}
    assert CATALOGUE["isas"] == ["scalar", "avx2", "avx512"]
    assert set(sparsegemm.available_isas()) <= set(CATALOGUE["isas"])
    shapes = CATALOGUE["bsr_block_shapes"]
    assert len(shapes) == len(set(shapes)) and (4, 1) in shapes and (4, 4) in shapes
    limits = CATALOGUE["limits"]
    assert all(1 <= r <= limits["max_block_edge"] and 1 <= c <= limits["max_block_edge"]
               for r, c in shapes)
    assert limits["max_compact_cols"] == 65536
    assert limits["gather_max_vectors"] >= 1


@pytest.mark.skipif(not CSRC.is_dir(), reason="needs the source tree")
def test_every_family_has_one_file_per_isa_and_a_driver():
    for family in CATALOGUE["families"]:
        for isa in CATALOGUE["isas"]:
            assert (CSRC / "kernels" / family / f"{family}_{isa}.cpp").is_file(), (family, isa)
        assert (CSRC / "drivers" / f"{family}_driver.cpp").is_file(), family


def test_block_edge_limit_is_the_cores():
    assert MAX_BLOCK_EDGE == CATALOGUE["limits"]["max_block_edge"]
    W = np.ones((MAX_BLOCK_EDGE + 1, 2), np.float32)
    assert BSRMatrix.from_dense(W, (MAX_BLOCK_EDGE, 1)).blocksize == (MAX_BLOCK_EDGE, 1)
    with pytest.raises(ValueError, match=f"blocksize must be in \\[1, {MAX_BLOCK_EDGE}\\]"):
        BSRMatrix.from_dense(W, (MAX_BLOCK_EDGE + 1, 1))


def test_planner_candidates_come_from_the_catalogue():
    planned = {b for b in planner.CANDIDATES.values() if b is not None}
    expected = {tuple(s) for s in CATALOGUE["bsr_block_shapes"]
                if s[0] * s[1] >= planner.MIN_PLANNED_BLOCK_ENTRIES}
    assert planned == expected and planner.CANDIDATES["csr"] is None
