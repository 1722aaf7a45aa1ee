"""Importing torch before or after sparsegemm: results and thread settings hold.

torch ships its own libgomp while sparsegemm links the system one; each check
runs in a fresh interpreter so the import order is really the one tested.
"""

from __future__ import annotations

import pytest

pytest.importorskip("torch")

CHECK = """
import numpy as np
rng = np.random.default_rng(1)
dense = np.where(rng.random((300, 200)) < 0.3, rng.uniform(-1, 1, (300, 200)), 0.0)
a = sparsegemm.CSRMatrix.from_dense(dense)
for n in (1, 4, 33):
    b = rng.uniform(-1, 1, (200, n))
    got = sparsegemm.sparse_mm(a, b)
    assert np.allclose(got, dense @ b, rtol=1e-12, atol=1e-12), n
    x = torch.from_numpy(np.ascontiguousarray(b.T))
    y = sparsegemm.linear(x.numpy(), a)
    ref = torch.nn.functional.linear(x, torch.from_numpy(dense)).numpy()
    assert np.allclose(y, ref, rtol=1e-10, atol=1e-10), n
    torch.mm(torch.randn(200, 200), torch.randn(200, 200))  # torch's own pool runs too
assert torch.get_num_threads() == 1, torch.get_num_threads()
assert sparsegemm.get_num_threads() == 2, sparsegemm.get_num_threads()
print("ok", sparsegemm.show_config(print_out=False)["openmp_runtime"])
"""

ORDERS = {
    "torch_first": "import torch\nimport sparsegemm\n",
    "sparsegemm_first": "import sparsegemm\nimport torch\n",
}


@pytest.mark.parametrize("order", sorted(ORDERS))
def test_import_order(order, python_subprocess):
    code = ORDERS[order] + "torch.set_num_threads(1)\nsparsegemm.set_num_threads(2)\n" + CHECK
    result = python_subprocess(code, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.startswith("ok")


@pytest.mark.parametrize("order", sorted(ORDERS))
def test_environment_thread_settings_survive(order, python_subprocess):
    # OMP_NUM_THREADS sets both defaults; neither library may change the other's.
    code = ORDERS[order] + """
assert torch.get_num_threads() == 1, torch.get_num_threads()
assert sparsegemm.get_num_threads() == 1, sparsegemm.get_num_threads()
import numpy as np
a = sparsegemm.CSRMatrix.from_dense(np.eye(50))
sparsegemm.sparse_mm(a, np.ones((50, 8)), num_threads=2)
torch.mm(torch.ones(64, 64), torch.ones(64, 64))
assert torch.get_num_threads() == 1, torch.get_num_threads()
assert sparsegemm.get_num_threads() == 1
print("ok")
"""
    result = python_subprocess(code, env={"OMP_NUM_THREADS": "1", "SPARSEGEMM_NUM_THREADS": ""},
                               timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip() == "ok"
