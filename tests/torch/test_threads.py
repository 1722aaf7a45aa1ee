import os
import subprocess
import sys
import textwrap

import pytest

torch = pytest.importorskip("torch")
import sparsegemm
from sparsegemm.torch import SparseConv2d, SparseLinear
from torch import nn


@pytest.fixture
def restore_torch_threads():
    previous = torch.get_num_threads()
    yield
    torch.set_num_threads(previous)


@pytest.mark.parametrize("threads", [1, 2])
def test_kernels_get_torch_thread_count(threads, monkeypatch, prune, restore_torch_threads):
    seen = []
    for name in ("csr_linear", "csr_matmul", "csr_sampled_dot", "bsr_linear"):
        original = getattr(sparsegemm._core, name)

        def recording(*args, _original=original):
            seen.append(args[4])  # (handle, a, b or out, out or bias, num_threads, ...)
            return _original(*args)

        monkeypatch.setattr(sparsegemm._core, name, recording)
    linear = SparseLinear.from_dense(prune(nn.Linear(16, 8), 0.8))
    conv = SparseConv2d.from_dense(prune(nn.Conv2d(4, 4, 1), 0.5))
    torch.set_num_threads(threads)
    linear(torch.randn(3, 16, requires_grad=True)).sum().backward()
    conv(torch.randn(1, 4, 3, 3, requires_grad=True)).sum().backward()
    blocked = SparseLinear.from_dense(prune(nn.Linear(16, 8), 0.8), format="bsr")
    blocked(torch.randn(3, 16, requires_grad=True)).sum().backward()
    assert len(seen) >= 8 and set(seen) == {threads}


SCRIPT = """
import {first}, {second}
import torch
from torch import nn
import sparsegemm.torch as st
torch.manual_seed(0)
torch.set_num_threads(2)
dense = nn.Linear(256, 128)
with torch.no_grad():
    dense.weight.mul_(torch.rand_like(dense.weight) > 0.9)
sparse = st.SparseLinear.from_dense(dense)
x = torch.randn(64, 256)
for _ in range(3):
    torch.testing.assert_close(sparse(x), dense(x), rtol=1e-5, atol=1e-5)
    sparse(x).sum().backward()
print("ok", torch.get_num_threads())
"""


@pytest.mark.parametrize("first, second", [("torch", "sparsegemm"), ("sparsegemm", "torch")])
def test_import_orders(first, second):
    env = dict(os.environ)
    source = os.path.dirname(os.path.dirname(sparsegemm.__file__))
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [source, env.get("PYTHONPATH")]))
    result = subprocess.run([sys.executable, "-c",
                             textwrap.dedent(SCRIPT).format(first=first, second=second)],
                            capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["ok", "2"]


@pytest.mark.parametrize("calls", [pytest.param(1000, marks=pytest.mark.slow), 40])
@pytest.mark.parametrize("fmt", ["csr", "bsr"])
def test_many_python_threads_calling_one_module_match_serial(calls, fmt):
    import concurrent.futures

    torch.manual_seed(0)
    dense = nn.Linear(96, 64)
    with torch.no_grad():
        dense.weight[torch.rand_like(dense.weight) < 0.8] = 0
    module = SparseLinear.from_dense(dense, format=fmt).eval()
    inputs = [torch.randn(1 + i % 5, 96) for i in range(16)]
    with torch.no_grad():
        serial = [module(x) for x in inputs]

        def worker(index):
            return all(torch.equal(module(inputs[index]), serial[index]) for _ in range(calls))

        with concurrent.futures.ThreadPoolExecutor(max_workers=16) as pool:
            results = list(pool.map(worker, range(16), timeout=300))
    assert all(results)
